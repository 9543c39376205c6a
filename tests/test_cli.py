"""The command line: every command is listed, and `run` sets up a working platform end to end."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from memberwise.cli import app
from memberwise.config import Settings
from memberwise.kit.db import make_engine, transaction
from memberwise.members.tables import members
from memberwise.privacy.schemas import Role
from memberwise.privacy.service import KeyVerifier
from tests.conftest import TEST_PII_KEY

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MEMBERWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEMBERWISE_DATABASE_URL", db_url)
    monkeypatch.setenv("MEMBERWISE_PII_KEY", TEST_PII_KEY)
    return Settings()


def test_help_lists_every_command_with_a_description() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in (
        "init",
        "migrate",
        "serve",
        "run",
        "ingest",
        "keys",
        "staff",
        "members",
        "demo",
        "lake",
    ):
        assert command in result.output


def test_keys_create_json_prints_a_working_key(env: Settings) -> None:
    assert runner.invoke(app, ["init"]).exit_code == 0
    result = runner.invoke(app, ["keys", "create", "--role", "operator", "--json"])
    assert result.exit_code == 0, result.output
    printed = orjson.loads(result.output)
    assert printed["role"] == "operator"
    engine = make_engine(env.db_url)
    assert KeyVerifier(engine, ttl=0).verify(printed["key"]).role is Role.operator
    engine.dispose()


def test_init_twice_keeps_one_admin_key(env: Settings) -> None:
    first = runner.invoke(app, ["init"])
    second = runner.invoke(app, ["init"])
    assert first.exit_code == second.exit_code == 0
    key = (env.home / "secrets" / "admin.key").read_text().strip()
    assert key in first.output and key in second.output


@pytest.mark.slow
def test_run_builds_the_demo_platform_and_a_second_run_reuses_it(env: Settings) -> None:
    args = ["run", "--members", "400", "--days", "30", "--no-serve"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "memberwise is ready" in first.output
    assert "service desk:" in first.output
    engine = make_engine(env.db_url)
    with transaction(engine) as conn:
        count = conn.execute(select(func.count()).select_from(members)).scalar_one()
        registered = conn.execute(
            select(func.count()).select_from(members).where(members.c.source == "registered")
        ).scalar_one()
    engine.dispose()
    assert count == registered == 400
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "reusing" in second.output
    assert "0 created, 0 registered, 400 unchanged" in second.output
