"""Settings: the home keeps the program it was set up with; the environment still wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from memberwise.config import Settings


def test_a_remembered_program_is_used_by_every_later_settings_object(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Settings(home=home).remember(program_file=tmp_path / "p.yaml")

    again = Settings(home=home)

    assert again.program_file == tmp_path / "p.yaml"
    assert again.home_settings() == {"program_file": str(tmp_path / "p.yaml")}


def test_the_environment_and_the_caller_win_over_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    Settings(home=home).remember(program_file=tmp_path / "kept.yaml")
    monkeypatch.setenv("MEMBERWISE_HOME", str(home))
    monkeypatch.setenv("MEMBERWISE_PROGRAM_FILE", str(tmp_path / "env.yaml"))

    assert Settings().program_file == tmp_path / "env.yaml"
    assert Settings(program_file=tmp_path / "arg.yaml").program_file == tmp_path / "arg.yaml"
    monkeypatch.delenv("MEMBERWISE_PROGRAM_FILE")
    assert Settings().program_file == tmp_path / "kept.yaml"


def test_forgetting_and_a_damaged_file_fall_back_to_no_program(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home)
    settings.remember(program_file=tmp_path / "p.yaml")
    settings.remember(program_file=None)
    assert Settings(home=home).program_file is None
    (home / "settings.json").write_text("{not json")
    assert Settings(home=home).program_file is None


def test_only_settings_a_home_keeps_can_be_remembered(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="database_url"):
        Settings(home=tmp_path).remember(database_url=tmp_path)  # type: ignore[arg-type]
