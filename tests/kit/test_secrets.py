from __future__ import annotations

import stat
from pathlib import Path

from memberwise.config import Settings
from memberwise.kit.secrets import write_secret_file


def test_a_secret_file_is_owner_only_and_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "k.key"
    write_secret_file(path, "first\n")
    write_secret_file(path, "second\n")
    assert path.read_text() == "second\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["k.key"]


def test_the_pii_key_is_created_once(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, pii_key=None)
    assert settings.ensure_pii_key() is True
    key = settings.pii_key_bytes
    assert len(key) == 32
    assert Settings(home=tmp_path, pii_key=None).ensure_pii_key() is False
    assert Settings(home=tmp_path, pii_key=None).pii_key_bytes == key
