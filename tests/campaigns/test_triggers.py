"""The journeys' tier, notice and cart triggers on the real stores, from a real tiers stage and
publish and a real event lake: each occurrence enrolls once, a replay changes nothing, and the
enrollment exits when the cause resolves (the tier reached, requalified, the item bought)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Connection, func, insert, select

from memberwise.builds import BuildContext, BuildResult
from memberwise.campaigns import carts, journeys
from memberwise.campaigns.schemas import JourneyCreate
from memberwise.events.schemas import LAKE_SCHEMA
from memberwise.kit.db import transaction
from memberwise.kit.lake import EventLake
from memberwise.kit.outbox import outbox
from memberwise.kit.warehouse import open_backend
from memberwise.membership import notices, stage
from memberwise.membership.tables import member_tiers, tier_notices
from memberwise.privacy.schemas import SYSTEM
from memberwise.program.schemas import Program
from memberwise.program.service import parse_program
from memberwise.runtime import Runtime
from memberwise.service import auto
from memberwise.service.tables import service_tickets
from tests.ledger.factories import add_members

AS_OF = datetime(2026, 5, 1, tzinfo=UTC)
PROGRAM = """name: t
display_timezone: Asia/Shanghai
score:
  parts: [{name: spend, field: spend_365d, weight: 0.01, max: 100000}]
coupons:
  ten_off: {kind: amount_off, amount: 1000, valid_days: 30}
tiers:
  - {name: member}
  - {name: gold, qualify: [{score: 1000}]}
  - {name: platinum, qualify: [{score: 5000}]}
service:
  auto:
    - {name: keep_platinum, event: downgrade_notice, rule: "tier = 'platinum'",
       kind: callback, priority: high}
"""


def program() -> Program:
    return parse_program(PROGRAM)


def build(runtime: Runtime, root: Path, name: str, as_of: datetime, spend: dict[str, int]) -> Path:
    """A build directory with these members' spend_365d (fen), run through the tiers stage
    and its publish step, with the desk's notice hook as the build installs it."""
    directory = root / name
    directory.mkdir()
    pq.write_table(
        pa.table(
            {
                "member_id": list(spend),
                "spend_365d": pa.array(list(spend.values()), pa.int64()),
                "orders_365d": pa.array([1] * len(spend), pa.int64()),
            }
        ),
        directory / "profiles.parquet",
    )
    (directory / "build.json").write_text(
        json.dumps({"build_id": name, "as_of": as_of.isoformat()})
    )
    publish(runtime, directory, as_of)
    return directory


def publish(runtime: Runtime, directory: Path, as_of: datetime) -> None:
    result = BuildResult(build_id=directory.name, directory=directory, as_of=as_of, engine="duckdb")
    with open_backend("duckdb", temp_dir=directory / "tmp") as con:
        stage.run_stage(
            BuildContext(runtime, program(), con, directory, result, lambda *a: None, {})
        )
    notices.NOTICE_HOOKS.append(auto.downgrade_notice_tickets)
    try:
        with transaction(runtime.engine) as conn:
            stage.publish(conn, directory)
    finally:
        notices.NOTICE_HOOKS.remove(auto.downgrade_notice_tickets)


def journey(trigger: dict[str, Any], message: str = "hello") -> JourneyCreate:
    return JourneyCreate.model_validate(
        {
            "name": f"on {trigger['kind']}",
            "trigger": trigger,
            "channels": ["app"],
            "exit_on_order": False,
            "steps": [
                {"offer": {"kind": "message", "message": message}},
                {"wait_hours": 24, "offer": {"kind": "coupon", "coupon_template": "ten_off"}},
            ],
        }
    )


def state(conn: Connection, journey_id: str) -> dict[str, tuple[str, str, int, str | None]]:
    page = journeys.enrollments(conn, journey_id, after=None, limit=100, status=None)
    return {e.member_id: (e.trigger_key, e.status, e.step, e.exit_reason) for e in page.items}


def count(conn: Connection, event_type: str) -> int:
    query = select(func.count()).select_from(outbox).where(outbox.c.event_type == event_type)
    return int(conn.execute(query).scalar_one())


def test_a_downgrade_notice_is_given_once_tickets_and_journeys_follow_it_and_it_resolves(
    runtime: Runtime, tmp_path: Path
) -> None:
    p = program()
    with transaction(runtime.engine) as conn:
        add_members(conn, "low", "mid", "top")
    spend = {"low": 50_000, "mid": 300_000, "top": 600_000}  # scores 500, 3000, 6000
    build(runtime, tmp_path, "b1", AS_OF, spend)
    # 340 days on (within the 30 notice days of the period's end), "top" spends like gold.
    later = AS_OF + timedelta(days=340)
    b2 = build(runtime, tmp_path, "b2", later, {**spend, "top": 300_000})
    end = AS_OF + timedelta(days=365)
    with transaction(runtime.engine) as conn:
        rows = conn.execute(select(tier_notices)).mappings().all()
        assert [
            (r["member_id"], r["tier"], r["to_tier"], r["downgrade_on"], r["build_id"])
            for r in rows
        ] == [("top", "platinum", "gold", end, "b2")]
        assert count(conn, "member.downgrade_notice") == 1
        [payload] = conn.execute(
            select(outbox.c.payload).where(outbox.c.event_type == "member.downgrade_notice")
        ).scalars()
        assert json.loads(payload)["text"] == f"will be downgraded to gold on {end.date()}"
        shown = notices.notices_of(conn, "top")
        assert [(n.tier, n.to_tier, n.downgrade_on) for n in shown] == [("platinum", "gold", end)]
        tickets = conn.execute(
            select(service_tickets.c.member_id, service_tickets.c.kind, service_tickets.c.priority)
        ).all()
        assert tickets == [("top", "callback", "high")]

    # Publishing the same build again, or a rebuild with the same notice: nothing twice.
    with transaction(runtime.engine) as conn:
        stage.publish(conn, b2)
    build(runtime, tmp_path, "b3", later + timedelta(days=1), {**spend, "top": 300_000})
    with transaction(runtime.engine) as conn:
        assert conn.execute(select(func.count()).select_from(tier_notices)).scalar_one() == 1
        assert count(conn, "member.downgrade_notice") == 1
        assert conn.execute(select(func.count()).select_from(service_tickets)).scalar_one() == 1

    # The journey: "top" enters once, and leaves once a build finds them requalified.
    key = f"notice:platinum:{end.date()}"
    with transaction(runtime.engine) as conn:
        made = journeys.create(conn, p, journey({"kind": "downgrade_notice"}), actor=SYSTEM)
        first = journeys.run(conn, p, now=later + timedelta(days=1))
        assert (first.enrolled, first.stepped) == (1, 1)
        assert journeys.run(conn, p, now=later + timedelta(days=1)) == type(first)()
        assert state(conn, made.journey_id) == {"top": (key, "active", 1, None)}
    build(runtime, tmp_path, "b4", later + timedelta(days=2), spend)  # back to 6000: kept
    with transaction(runtime.engine) as conn:
        again = journeys.run(conn, p, now=later + timedelta(days=3))
        assert (again.enrolled, again.stepped, again.exited) == (0, 0, 1)
        assert state(conn, made.journey_id) == {"top": (key, "exited", 1, "trigger_resolved")}


def test_tier_nearly_reached_from_the_published_score_exits_when_the_tier_is_reached(
    runtime: Runtime, tmp_path: Path
) -> None:
    p = program()
    with transaction(runtime.engine) as conn:
        add_members(conn, "a", "b", "c", "d")
    # a: 900 of gold's 1000; b: 4,200 of platinum's 5,000; c: 2,000 (far); d: platinum (top).
    spend = {"a": 90_000, "b": 420_000, "c": 200_000, "d": 700_000}
    build(runtime, tmp_path, "b1", AS_OF, spend)
    trigger = {"kind": "tier_near", "within_fen": 0, "within_points": 1000}
    with transaction(runtime.engine) as conn:
        near = notices.near_next_tier(conn, p, within_fen=0, within_points=1000)
        assert [(n.member_id, n.key, n.text) for n in near] == [
            ("a", f"near:gold:{AS_OF.date()}", "100 more score for gold"),
            ("b", f"near:platinum:{AS_OF.date()}", "800 more score for platinum"),
        ]
        made = journeys.create(conn, p, journey(trigger, "Only {detail}"), actor=SYSTEM)
        now = AS_OF + timedelta(hours=1)
        report = journeys.run(conn, p, now=now)
        assert (report.enrolled, report.stepped) == (2, 2)
        assert journeys.run(conn, p, now=now) == type(report)()
        sent = conn.execute(
            select(outbox.c.member_id, outbox.c.payload).where(
                outbox.c.event_type == "journey.step"
            )
        ).all()
        told = {m: (json.loads(x)["message"], json.loads(x)["detail"]) for m, x in sent}
        assert told == {
            "a": ("Only 100 more score for gold", "100 more score for gold"),
            "b": ("Only 800 more score for platinum", "800 more score for platinum"),
        }
    # b reaches platinum in the next build; a does not move.
    build(runtime, tmp_path, "b2", AS_OF + timedelta(days=1), {**spend, "b": 520_000})
    with transaction(runtime.engine) as conn:
        report = journeys.run(conn, p, now=AS_OF + timedelta(days=2))
        assert (report.enrolled, report.stepped, report.completed, report.exited) == (0, 1, 1, 1)
        assert state(conn, made.journey_id) == {
            "a": (f"near:gold:{AS_OF.date()}", "completed", 2, None),
            "b": (f"near:platinum:{AS_OF.date()}", "exited", 1, "trigger_resolved"),
        }


def test_the_spend_missing_is_read_from_the_published_metrics(conn: Connection) -> None:
    p = parse_program(PROGRAM.replace("{score: 1000}", "{spend: 200000, window_days: 365}"))
    add_members(conn, "s1", "s2")
    details = {
        "s1": {"metrics": {"net_spend_365d": 177_000}, "notice": None},  # 230 CNY short
        "s2": {"metrics": {"net_spend_365d": 100_000}, "notice": None},  # 1,000 CNY short
    }
    conn.execute(
        insert(member_tiers),
        [
            {
                "member_id": m,
                "tier": "member",
                "source": "auto",
                "since": AS_OF,
                "until": None,
                "score": 0,
                "details": json.dumps(d),
                "build_id": "b",
                "updated_at": AS_OF,
            }
            for m, d in details.items()
        ],
    )
    near = notices.near_next_tier(conn, p, within_fen=50_000)
    assert [(n.member_id, n.target, n.text) for n in near] == [
        ("s1", "gold", "230.00 CNY more net spend for gold")
    ]


T0 = datetime(2026, 3, 10, 12, tzinfo=UTC)


def lake_events(rows: list[tuple[str, str, str, str, datetime]]) -> pa.Table:
    """(event_id, member, type, item, ts) as lake rows."""
    n = len(rows)
    data: dict[str, list[Any]] = {f.name: [None] * n for f in LAKE_SCHEMA}
    data["event_id"] = [r[0] for r in rows]
    data["member_id"] = [r[1] for r in rows]
    data["type"] = [r[2] for r in rows]
    data["item_id"] = [r[3] for r in rows]
    data["ts"] = [r[4] for r in rows]
    data["ingested_at"] = [r[4] for r in rows]
    return pa.Table.from_pydict(data, schema=LAKE_SCHEMA)


def test_carts_abandoned_enroll_once_each_and_exit_when_the_item_is_bought(
    conn: Connection, tmp_path: Path
) -> None:
    p = program()
    lake = EventLake(tmp_path / "lake")
    add_members(conn, "u1", "u2", "u3", "u4")
    hour = timedelta(hours=1)
    lake.append(
        lake_events(
            [
                ("c1", "u1", "cart", "shoes", T0),  # abandoned
                ("c2", "u2", "cart", "hat", T0),  # bought an hour later: not abandoned
                ("p2", "u2", "purchase", "hat", T0 + hour),
                ("c3", "u3", "cart", "bag", T0 - 2 * hour),  # re-added 20 h later: too recent
                ("c4", "u3", "cart", "bag", T0 + 20 * hour),
                ("c5", "u4", "cart", "old", T0 - timedelta(days=9)),  # older than the window
                ("c6", "u1", "view", "shoes", T0),
            ]
        ),
        prefix="api",
    )
    # A replayed batch (same event ids) changes nothing.
    lake.append(lake_events([("c1", "u1", "cart", "shoes", T0)]), prefix="api")
    now = T0 + 25 * hour
    assert carts.abandoned(lake, now, hours=24, days=7) == [("u1", "cart:shoes:c1")]

    made = journeys.create(
        conn, p, journey({"kind": "cart_abandoned", "hours": 24, "days": 7}), actor=SYSTEM
    )
    first = journeys.run(conn, p, now=now, lake=lake)
    assert (first.enrolled, first.stepped) == (1, 1)
    assert journeys.run(conn, p, now=now, lake=lake) == type(first)()
    # u3's bag is abandoned a day after its last cart; u1 buys the shoes.
    lake.append(lake_events([("p1", "u1", "purchase", "shoes", now + hour)]), prefix="api")
    later = T0 + 50 * hour
    second = journeys.run(conn, p, now=later, lake=lake)
    assert (second.enrolled, second.stepped, second.exited) == (1, 1, 1)
    assert state(conn, made.journey_id) == {
        "u1": ("cart:shoes:c1", "exited", 1, "trigger_resolved"),
        "u3": ("cart:bag:c4", "active", 1, None),
    }
    # Without a lake the trigger finds nothing (and leaves enrollments standing).
    assert journeys.run(conn, p, now=later).enrolled == 0


def test_a_cart_key_too_long_for_the_column_is_hashed() -> None:
    assert carts.cart_key("i", "e") == "cart:i:e"
    long = carts.cart_key("i" * 100, "e" * 100)
    assert long.startswith("cart:#") and len(long) == 46
    assert carts.cart_key("i" * 100, "e" * 100) == long


@pytest.mark.parametrize("kind", ["tier_near", "downgrade_notice", "cart_abandoned"])
def test_the_new_triggers_validate(kind: str) -> None:
    body = journey({"kind": kind})
    assert body.trigger.kind == kind
    with pytest.raises(ValueError, match="greater than 0"):
        journey({"kind": kind, "hours": 0})
