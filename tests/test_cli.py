"""The command line: every command is listed, and `run` sets up a working platform end to end."""

from __future__ import annotations

import socket
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from memberwise.app import create_app
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


def test_help_paragraphs_join_the_docstrings_line_breaks() -> None:
    from memberwise.cli import _unwrapped

    assert _unwrapped(
        ["Creates the home, ingests it (a no-op\nwhen already ingested).", "- a\n- b"]
    ) == ("Creates the home, ingests it (a no-op when already ingested).\n\n- a\n- b")
    lines = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output.splitlines()
    assert any(
        line.strip().startswith(
            "Creates the home, key and schema, generates the demo platform once, "
            "ingests it (a no-op when already ingested), registers its members,"
        )
        for line in lines
    )


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
    assert "campaigns: campaign 'win back the at-risk' to segment" in first.output
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
    assert "build: reusing build" in second.output  # nothing changed: no second build
    assert "1 campaign(s) already there" in second.output


def test_the_program_a_home_was_set_up_with_is_the_servers(
    env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root cause of the demo serving the empty program: the server reads its settings
    afresh, so the program must live in the home, not on the CLI's Settings object."""
    program = Path(__file__).parents[1] / "programs" / "demo.yaml"
    assert runner.invoke(app, ["init", "--program", str(program)]).exit_code == 0
    monkeypatch.delenv("MEMBERWISE_PROGRAM_FILE", raising=False)

    assert Settings().program_file == program
    with TestClient(create_app()) as client:  # what `memberwise serve` builds
        assert client.get("/health").json()["program"] == "demo"


def test_init_refuses_a_program_that_does_not_load_and_keeps_none(env: Settings) -> None:
    result = runner.invoke(app, ["init", "--program", str(env.home / "missing.yaml")])
    assert result.exit_code == 2
    assert "the program file does not exist" in result.output
    assert Settings().program_file is None


@pytest.mark.parametrize(
    "args", [["ingest", "x.csv"], ["keys", "list"], ["tiers", "preview"], ["serve"]]
)
def test_a_home_never_set_up_gets_one_sentence_and_exit_2(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMBERWISE_HOME", str(tmp_path / "fresh"))
    monkeypatch.delenv("MEMBERWISE_DATABASE_URL", raising=False)

    result = runner.invoke(app, args)

    assert result.exit_code == 2
    assert "run `memberwise init` first" in result.output
    assert "Traceback" not in result.output and "sqlite3" not in result.output
    assert not (tmp_path / "fresh").exists()  # nothing was created on the way


def test_help_works_on_a_home_never_set_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMBERWISE_HOME", str(tmp_path / "fresh"))
    monkeypatch.delenv("MEMBERWISE_DATABASE_URL", raising=False)
    assert runner.invoke(app, ["ingest", "--help"]).exit_code == 0
    assert runner.invoke(app, ["keys", "list", "--help"]).exit_code == 0


def test_a_store_that_is_not_migrated_is_not_set_up(
    env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty.sqlite"
    make_engine(f"sqlite:///{empty}").connect().close()
    monkeypatch.setenv("MEMBERWISE_DATABASE_URL", f"sqlite:///{empty}")
    result = runner.invoke(app, ["members", "import", "x.csv"])
    assert result.exit_code == 2
    assert "run `memberwise init` first" in result.output


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (
            "postgres://u:secret@db.example/x",
            "MEMBERWISE_DATABASE_URL postgres://...@db.example/x is not a store memberwise can "
            "open (Can't load plugin: sqlalchemy.dialects:postgres): use sqlite:///PATH or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB",
        ),
        (
            "postgresql+asyncpg://u:secret@db.example/x",
            "the database driver of MEMBERWISE_DATABASE_URL is not installed (No module named "
            "'asyncpg'): use postgresql+psycopg://... (psycopg 3 is installed with memberwise) "
            "or sqlite:///PATH",
        ),
        (
            "postgresql+psycopg://postgres@127.0.0.1:1/x",
            "the operational store does not answer (OperationalError): check "
            "MEMBERWISE_DATABASE_URL and that the database is running",
        ),
    ],
)
@pytest.mark.parametrize(
    "command", [["migrate"], ["init"], ["run", "--no-serve"], ["keys", "list"]]
)
def test_a_wrong_database_url_gets_one_sentence_and_exit_2(
    url: str, said: str, command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMBERWISE_HOME", str(tmp_path / "fresh"))
    monkeypatch.setenv("MEMBERWISE_DATABASE_URL", url)
    result = runner.invoke(app, command)
    assert result.exit_code == 2
    assert result.output.strip() == said
    assert "secret" not in result.output
    assert not (tmp_path / "fresh").exists()


def test_a_taken_port_is_said_before_anything_is_set_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMBERWISE_HOME", str(tmp_path / "fresh"))
    monkeypatch.delenv("MEMBERWISE_DATABASE_URL", raising=False)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        monkeypatch.setenv("MEMBERWISE_PORT", str(port))
        result = runner.invoke(app, ["run"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"cannot listen on 127.0.0.1:{port} (Address already in use): another server holds "
        "the port; stop it, or choose another one with MEMBERWISE_PORT (or --port for "
        "`memberwise serve`)"
    )
    assert not (tmp_path / "fresh").exists()  # said before the minutes of setting up


def test_members_import_of_a_file_that_is_not_parquet_is_one_sentence(env: Settings) -> None:
    assert runner.invoke(app, ["init"]).exit_code == 0
    csv = env.home / "members.csv"
    csv.write_text("member_id,name\nm1,Ann\n")
    result = runner.invoke(app, ["members", "import", str(csv)])
    assert result.exit_code == 2
    assert result.output.startswith(f"{csv} is not a Parquet file (")
    assert "Traceback" not in result.output


def test_tiers_preview_without_tiers_says_so(env: Settings) -> None:
    """The built-in program has no tiers: a sentence, not an IndexError."""
    from memberwise.membership import stage
    from memberwise.membership.service import NoTiers
    from memberwise.program.service import default_program
    from memberwise.runtime import Runtime

    rt = Runtime.open(env)
    try:
        with pytest.raises(NoTiers, match="defines no tiers"):
            stage.preview(rt, default_program(), env.home)
    finally:
        rt.close()


def test_a_build_is_reused_only_while_its_inputs_are_unchanged(
    settings: Settings, tmp_path: Path
) -> None:
    from memberwise.cli import _remember_build, _reusable_build
    from memberwise.runtime import Runtime

    program = tmp_path / "p.yaml"
    program.write_text("name: one\n")
    settings.program_file = program
    (settings.home / "warehouse" / "builds" / "b1").mkdir(parents=True)
    (settings.home / "warehouse" / "builds" / "b1" / "build.json").write_text("{}")
    rt = Runtime.open(settings)
    try:
        assert _reusable_build(settings, rt) is None  # no run yet
        _remember_build(settings, rt, "b1")
        assert _reusable_build(settings, rt) == "b1"
        program.write_text("# a comment\nname:   one\n")  # an edit that changes nothing
        assert _reusable_build(settings, rt) == "b1"
        program.write_text("name: two\n")  # the program changed
        assert _reusable_build(settings, rt) is None
        _remember_build(settings, rt, "b1")
        day = settings.lake_root / "events" / "date=2026-11-01"
        day.mkdir(parents=True)
        (day / "part-1.parquet").write_bytes(b"x")  # the lake changed
        assert rt.lake.files() and _reusable_build(settings, rt) is None
        _remember_build(settings, rt, "b1")
        (settings.home / "warehouse" / "builds" / "b1" / "build.json").unlink()
        assert _reusable_build(settings, rt) is None  # the build is gone
    finally:
        rt.close()
