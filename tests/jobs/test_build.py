"""The build end to end on the real stores: Taobao events in, profiles, tags and segments
published; stages run alone reuse the latest build's inputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Connection, func, select
from typer.testing import CliRunner

from memberwise.builds import builds_root, previous_builds
from memberwise.cli import app
from memberwise.config import Settings
from memberwise.events.bulk import ingest_paths
from memberwise.jobs import build
from memberwise.jobs.build import BuildError, run_build
from memberwise.kit.db import transaction
from memberwise.kit.diffpublish import Commit
from memberwise.profiles import service as profiles
from memberwise.profiles.tables import member_profiles
from memberwise.program.service import parse_program
from memberwise.runtime import Runtime
from tests.profiles.test_features import TAOBAO

PROGRAM = parse_program(
    """
name: test
tags:
  browser_only: "views_30d >= 50 and purchases_30d = 0"
  buyer: "orders_365d >= 1"
"""
)
AS_OF = datetime(2017, 12, 4, tzinfo=UTC)


@pytest.fixture
def taobao(runtime: Runtime, tmp_path: Path) -> Runtime:
    ingest_paths([TAOBAO], runtime.lake, fmt="taobao", deadletter_dir=tmp_path / "dead")
    return runtime


def test_a_build_publishes_every_member_with_tags_and_a_segment(taobao: Runtime) -> None:
    result = run_build(taobao, PROGRAM, as_of=AS_OF)

    assert [s.name for s in result.stages] == [
        "profiles",
        "predictions",
        "tags",
        "segments",
        "tiers",
        "recommendations",
        "feedback",
        "merchants",
        "publish",
    ]
    assert (result.members, result.events_read) == (43, 4321)
    manifest = json.loads((result.directory / "build.json").read_text())
    assert manifest["status"] == "published" and manifest["as_of"] == AS_OF.isoformat()
    tags = pq.read_table(result.directory / "tags.parquet").to_pylist()
    with transaction(taobao.engine) as conn:
        user = profiles.get_profile(conn, "1")
        counts = {t.name: t.members for t in profiles.list_tags(conn).tags}
        personas = profiles.list_segments(conn).personas
    assert user.fields["views_30d"] == 55 and user.fields["purchases_30d"] == 0
    assert "browser_only" in user.tags
    assert user.segment == "new"  # first seen 9 days before the build's clock
    assert counts == {
        name: sum(1 for t in tags if t["tag"] == name) for name in ("browser_only", "buyer")
    }
    # The program names no persona, so each is shown by its group name.
    assert personas and all(p.label == p.name == f"persona-{p.id}" for p in personas)
    assert sum(p.members for p in personas) == 43
    assert counts["buyer"] == len({r["member_id"] for r in tags if r["tag"] == "buyer"}) > 0


def test_a_stage_run_alone_reuses_the_latest_inputs_and_their_clock(taobao: Runtime) -> None:
    first = run_build(taobao, PROGRAM, as_of=AS_OF)
    again = run_build(taobao, PROGRAM, only=["tags", "publish"])

    assert [s.name for s in again.stages] == ["tags", "publish"]
    assert again.as_of == AS_OF and again.build_id != first.build_id
    assert (again.directory / "profiles.parquet").samefile(first.directory / "profiles.parquet")
    assert pq.read_table(again.directory / "tags.parquet").equals(
        pq.read_table(first.directory / "tags.parquet")
    )


def test_unknown_stages_and_missing_inputs_are_refused_and_leave_nothing(
    runtime: Runtime,
) -> None:
    with pytest.raises(BuildError, match="unknown stage tier_s"):
        run_build(runtime, PROGRAM, only=["tier_s"])
    with pytest.raises(BuildError, match=r"no earlier build has profiles\.parquet") as caught:
        run_build(runtime, PROGRAM, only=["tags"])
    assert caught.value.details["stage"] == "profiles"
    root = runtime.settings.home / "warehouse" / "builds"
    assert not root.exists() or list(root.iterdir()) == []


def test_the_build_command_prints_a_json_summary(
    taobao: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMBERWISE_HOME", str(settings.home))
    monkeypatch.setenv("MEMBERWISE_DATABASE_URL", settings.db_url)
    monkeypatch.setenv("MEMBERWISE_PII_KEY", settings.pii_key.get_secret_value())  # type: ignore[union-attr]

    result = CliRunner().invoke(app, ["build", "--as-of", "latest", "--json"])
    refused = CliRunner().invoke(app, ["build", "--only", "nope"])

    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.output)
    assert summary["members"] == 43 and summary["as_of"] == "2017-12-03T15:59:13+00:00"
    # What orders the recommendation lists, and why, is part of the summary.
    assert summary["recommendations"].startswith("recommendations: ")
    assert refused.exit_code == 2 and "unknown stage nope" in refused.output


class Killed(Exception):
    """A publisher failing mid-publish (the store going away, say)."""


def test_a_publish_cut_short_keeps_its_build_and_a_publish_alone_converges(
    taobao: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_build(taobao, PROGRAM, as_of=AS_OF)

    def fail(conn: Connection, build_dir: Path, commit: Commit) -> int:
        raise Killed("after the profiles were committed")

    publishers = dict(build.PUBLISHERS)
    monkeypatch.setattr(
        build, "PUBLISHERS", (("profiles", publishers["profiles"]), ("predictions", fail))
    )
    later = datetime(2017, 12, 5, tzinfo=UTC)
    with pytest.raises(Killed):
        run_build(taobao, PROGRAM, as_of=later)
    monkeypatch.undo()

    cut = [b for b in previous_builds(builds_root(taobao)) if b != first.directory]
    assert len(cut) == 1  # kept, with the artifacts its committed batches came from
    with transaction(taobao.engine) as conn:
        assert profiles.list_segments(conn).build_id == cut[0].name
        by_cut = conn.execute(
            select(func.count()).where(member_profiles.c.build_id == cut[0].name)
        ).scalar_one()
    assert by_cut > 0

    again = run_build(taobao, PROGRAM, only=["publish"])

    assert (again.directory / "profiles.parquet").samefile(cut[0] / "profiles.parquet")
    assert again.as_of == later
    with transaction(taobao.engine) as conn:
        assert profiles.list_segments(conn).build_id == again.build_id
        # Nothing left to write: every profile is still the row the cut publish wrote.
        assert (
            conn.execute(
                select(func.count()).where(member_profiles.c.build_id == again.build_id)
            ).scalar_one()
            == 0
        )
        assert profiles.get_profile(conn, "1").build_id == again.build_id
