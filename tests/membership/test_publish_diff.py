"""Publishing tiers by difference, on both stores: only changed members are written, with
their history, audit and outbox rows once per real change, and a publish cut short between
batches converges when run again."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from memberwise.builds import BuildContext, BuildResult
from memberwise.config import Engine
from memberwise.kit import diffpublish
from memberwise.kit.db import transaction
from memberwise.kit.outbox import outbox
from memberwise.kit.warehouse import open_backend
from memberwise.membership import stage
from memberwise.membership.tables import member_tiers, tier_history
from memberwise.privacy.tables import audit_log
from memberwise.program.schemas import Program
from memberwise.runtime import Runtime
from tests.membership.test_stage import MEMBERS, profiles, program

AS_OF = datetime(2026, 5, 1, tzinfo=UTC)


def write_build(root: Path, name: str, rows: list[tuple[str, int, int]]) -> Path:
    directory = root / name
    directory.mkdir()
    pq.write_table(profiles(rows), directory / "profiles.parquet")
    (directory / "build.json").write_text(
        json.dumps({"build_id": name, "as_of": AS_OF.isoformat()})
    )
    return directory


def evaluate(runtime: Runtime, p: Program, directory: Path) -> None:
    """The build's tiers stage (against the tiers stored now)."""
    result = BuildResult(
        build_id=directory.name, directory=directory, as_of=AS_OF, engine=Engine.duckdb
    )
    with open_backend("duckdb", temp_dir=directory / "tmp") as con:
        stage.run_stage(BuildContext(runtime, p, con, directory, result, lambda *a: None, {}))


def publish(runtime: Runtime, directory: Path) -> int:
    with transaction(runtime.engine) as conn:
        return stage.publish(conn, directory)


def tier_rows(runtime: Runtime) -> list[tuple[Any, ...]]:
    with runtime.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(member_tiers).order_by("member_id"))]


def side_effects(runtime: Runtime) -> dict[str, Any]:
    """History rows per member, tier_changed messages per member, and tier audit actions."""
    with runtime.engine.connect() as conn:
        history = Counter(conn.execute(select(tier_history.c.member_id)).scalars())
        messages = Counter(
            conn.execute(
                select(outbox.c.member_id).where(outbox.c.event_type == "member.tier_changed")
            ).scalars()
        )
        audits = Counter(
            conn.execute(
                select(audit_log.c.action).where(audit_log.c.action.like("tier.%"))
            ).scalars()
        )
    return {"history": dict(history), "messages": dict(messages), "audits": dict(audits)}


def test_an_unchanged_republish_writes_nothing(runtime: Runtime, tmp_path: Path) -> None:
    build = write_build(tmp_path, "b1", MEMBERS)
    evaluate(runtime, program(), build)
    assert publish(runtime, build) == 12
    rows, effects = tier_rows(runtime), side_effects(runtime)

    assert publish(runtime, build) == 0

    assert tier_rows(runtime) == rows  # updated_at and build_id included
    assert side_effects(runtime) == effects
    assert effects["audits"] == {"tier.initial": 1}
    assert effects["messages"] == {}  # first placements are not announced


def test_a_later_build_writes_only_the_members_it_changes(runtime: Runtime, tmp_path: Path) -> None:
    evaluate(runtime, program(), first := write_build(tmp_path, "b1", MEMBERS))
    publish(runtime, first)
    before = {r[0]: r for r in tier_rows(runtime)}
    # m02 spends more (gold -> platinum); m11 is absent from the later build.
    later_rows = [("m02", 600_000, 2) if m == "m02" else (m, s, o) for m, s, o in MEMBERS[:11]]
    later = write_build(tmp_path, "b2", later_rows)
    evaluate(runtime, program(), later)

    assert publish(runtime, later) == 1

    after = {r[0]: r for r in tier_rows(runtime)}
    assert {m for m in after if after[m] != before[m]} == {"m02"}
    assert (after["m02"][1], after["m02"][7]) == ("platinum", "b2")  # tier, build_id
    assert after["m11"] == before["m11"]  # a member absent from a build keeps their tier
    effects = side_effects(runtime)
    assert effects["messages"] == {"m02": 1}
    assert effects["audits"] == {"tier.initial": 1, "tier.upgrade": 1}
    assert effects["history"] == {**{m: 1 for m, _, _ in MEMBERS}, "m02": 2}


class Killed(BaseException):
    """The process dying mid-publish (not an error any code would catch)."""


def crash_after(commits: int, commit: Callable[[], None]) -> Callable[[], None]:
    """A commit that works ``commits`` times, then dies before committing."""
    done = 0

    def crashing() -> None:
        nonlocal done
        if done == commits:
            raise Killed("killed between batches")
        commit()
        done += 1

    return crashing


def test_a_publish_killed_between_batches_converges_when_run_again(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diffpublish, "BATCH_ROWS", 5)
    evaluate(runtime, program(), first := write_build(tmp_path, "b1", MEMBERS))
    publish(runtime, first)
    # Everyone spends 3,000 CNY more (every score changes: 13 rows, batches of 5, 5 and 3):
    # m00 goes member -> gold, m02..m04 gold -> platinum; m12 is new (a first placement).
    richer = [(m, s + 300_000, o) for m, s, o in MEMBERS] + [("m12", 0, 0)]
    later = write_build(tmp_path, "b2", richer)
    evaluate(runtime, program(), later)
    made = pq.read_table(later / "tiers.parquet").to_pylist()
    assert {r["member_id"]: r["change"] for r in made if r["change"] != "kept"} == {
        "m00": "upgrade",
        "m02": "upgrade",
        "m03": "upgrade",
        "m04": "upgrade",
        "m12": "initial",
    }

    with runtime.engine.connect() as conn, pytest.raises(Killed):
        stage.publish(conn, later, crash_after(1, conn.commit))

    # The first batch (m00..m04) is in; the second died before its commit.
    with runtime.engine.connect() as conn:
        by_b2 = set(
            conn.execute(
                select(member_tiers.c.member_id).where(member_tiers.c.build_id == "b2")
            ).scalars()
        )
    assert by_b2 == {"m00", "m01", "m02", "m03", "m04"}
    assert side_effects(runtime)["messages"] == {"m00": 1, "m02": 1, "m03": 1, "m04": 1}

    assert publish(runtime, later) == 8  # m05..m12: what the crash left unwritten
    assert publish(runtime, later) == 0

    effects = side_effects(runtime)
    assert effects["messages"] == {"m00": 1, "m02": 1, "m03": 1, "m04": 1}
    # One placement audit per committed batch of first tiers: 3 for b1 (5 + 5 + 2), m12's.
    assert effects["audits"] == {"tier.initial": 4, "tier.upgrade": 4}
    assert effects["history"] == {
        **{m: 1 for m, _, _ in MEMBERS},
        **dict.fromkeys(("m00", "m02", "m03", "m04"), 2),
        "m12": 1,
    }
    tiers = {r[0]: (r[1], r[7]) for r in tier_rows(runtime)}  # tier, build_id
    assert Counter(t for t, _ in tiers.values()) == {"member": 1, "gold": 2, "platinum": 10}
    assert {b for _, b in tiers.values()} == {"b2"}
