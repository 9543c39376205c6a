"""The membership CLI refuses what the API refuses, in one sentence and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from memberwise.cli import app
from tests.conftest import TEST_PII_KEY

runner = CliRunner()


@pytest.mark.parametrize("until", ["0001-01-01", "9999-12-31"])
def test_a_tier_grant_until_outside_the_window_is_refused(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, until: str
) -> None:
    monkeypatch.setenv("MEMBERWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEMBERWISE_DATABASE_URL", db_url)
    monkeypatch.setenv("MEMBERWISE_PII_KEY", TEST_PII_KEY)
    assert runner.invoke(app, ["init"]).exit_code == 0

    result = runner.invoke(
        app, ["tiers", "grant", "m1", "gold", "--reason", "vip", "--until", until]
    )

    assert result.exit_code == 2, result.output
    assert "invalid_request" in result.output and "until" in result.output
    assert "Traceback" not in result.output
