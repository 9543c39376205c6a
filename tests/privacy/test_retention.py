"""Retention jobs on the real stores: old days dropped with anonymous daily counts kept;
members inactive for the period erased; both through the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from memberwise.cli import app
from memberwise.jobs import holders
from memberwise.kit.db import transaction
from memberwise.members.tables import members
from memberwise.privacy import retention
from memberwise.runtime import Runtime
from tests.conftest import TEST_PII_KEY
from tests.members.factories import create_member

NOW = datetime.now(UTC).replace(microsecond=0)


def _event(i: int, member: str, days_ago: int, kind: str = "view") -> dict[str, object]:
    return {
        "event_id": f"e{i}",
        "member_id": member,
        "type": kind,
        "ts": NOW - timedelta(days=days_ago),
        "item_id": "i1",
        "category_id": "c1",
        "price": 1000,
        "quantity": 2,
        "ingested_at": NOW,
    }


def _fill(runtime: Runtime, rows: list[dict[str, object]]) -> None:
    from memberwise.events.schemas import LAKE_SCHEMA

    table = pa.Table.from_pylist(
        [{name: r.get(name) for name in LAKE_SCHEMA.names} for r in rows], schema=LAKE_SCHEMA
    )
    runtime.lake.append(table, prefix="api")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, runtime: Runtime, db_url: str) -> Runtime:
    monkeypatch.setenv("MEMBERWISE_HOME", str(runtime.settings.home))
    monkeypatch.setenv("MEMBERWISE_DATABASE_URL", db_url)
    monkeypatch.setenv("MEMBERWISE_PII_KEY", TEST_PII_KEY)
    return runtime


def test_old_days_are_dropped_and_only_daily_counts_stay(env: Runtime) -> None:
    _fill(
        env,
        [
            _event(1, "m1", 400, "purchase"),
            _event(2, "m2", 400),
            _event(3, "m2", 400),
            _event(4, "m1", 10),
        ],
    )

    result = CliRunner().invoke(app, ["privacy", "retention-events", "--days", "365"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"days": 1, "files": 1, "rows": 3, "aggregated_rows": 2}
    assert len(env.lake.partitions()) == 1
    day = (NOW - timedelta(days=400)).date()
    counts = pq.read_table(env.lake.root / retention.AGGREGATES_DIR / f"{day}.parquet")
    assert counts.drop(["day"]).to_pylist() == [
        {"type": "purchase", "category_id": "c1", "events": 1, "purchase_amount": 2000},
        {"type": "view", "category_id": "c1", "events": 2, "purchase_amount": 0},
    ]
    assert "member_id" not in counts.column_names


def test_members_inactive_for_the_period_are_erased(env: Runtime) -> None:
    holders.install()
    with transaction(env.engine) as conn:
        for member in ("old", "busy", "fresh"):
            create_member(conn, env.cipher, member)
        # "old" and "busy" registered two years ago; "busy" bought last week.
        conn.execute(
            members.update()
            .where(members.c.member_id.in_(["old", "busy"]))
            .values(updated_at=NOW - timedelta(days=800))
        )
    _fill(env, [_event(1, "old", 700), _event(2, "busy", 7)])
    dry = CliRunner().invoke(app, ["privacy", "retention-members", "--days", "365", "--dry-run"])
    assert json.loads(dry.output) == {"inactive": 1, "erased": 0}

    result = CliRunner().invoke(app, ["privacy", "retention-members", "--days", "365"])

    assert json.loads(result.output) == {"inactive": 1, "erased": 1}, result.output
    with transaction(env.engine) as conn:
        left = sorted(conn.execute(select(members.c.member_id)).scalars())
    assert left == ["busy", "fresh"]
    assert retention.last_seen(env.lake).keys() == {"busy"}
