"""The tiers stage on the real stores: preview equals what applying does, invitations with
quota and ties, account managers with capacity, stability and reassignment."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from memberwise.builds import BuildContext, BuildResult
from memberwise.kit.db import transaction
from memberwise.kit.outbox import outbox
from memberwise.kit.warehouse import open_backend
from memberwise.ledger import orders
from memberwise.ledger.schemas import RefundIn
from memberwise.membership import grants as membership_grants
from memberwise.membership import managers as membership_managers
from memberwise.membership import member_view as membership_view
from memberwise.membership import service, stage
from memberwise.membership.tables import member_tiers
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, Role, StaffCreate
from memberwise.program.schemas import Program
from memberwise.program.service import parse_program
from memberwise.runtime import Runtime
from tests.ledger.factories import add_members, order

AS_OF = datetime(2026, 5, 1, tzinfo=UTC)
PROGRAM = """name: s
score:
  parts: [{name: spend, field: spend_365d, weight: 0.01, max: 100000}]
tiers:
  - {name: member}
  - {name: gold, qualify: [{score: GOLD}]}
  - {name: platinum, qualify: [{score: PLAT}]}
  - {name: black, invitation: true, benefits: [manager]}
black_card:
  tier: black
  criteria: "spend_365d >= 500000"
  ranking:
    - {field: spend_365d, weight: 3}
    - {field: orders_365d, weight: 1}
  quota: {count: QUOTA}
benefits:
  manager: {kind: account_manager}
"""


def program(gold: int = 1000, plat: int = 5000, quota: int = 3) -> Program:
    text = PROGRAM.replace("GOLD", str(gold)).replace("PLAT", str(plat))
    return parse_program(text.replace("QUOTA", str(quota)))


def profiles(rows: list[tuple[str, int, int]]) -> pa.Table:
    """(member_id, spend_365d in fen, orders_365d)."""
    return pa.table(
        {
            "member_id": [r[0] for r in rows],
            "spend_365d": pa.array([r[1] for r in rows], pa.int64()),
            "orders_365d": pa.array([r[2] for r in rows], pa.int64()),
        }
    )


# 12 members: spend 0 .. 1,100,000 fen (score 0 .. 11,000).
MEMBERS = [(f"m{i:02d}", i * 100_000, i) for i in range(12)]


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "build-1"
    directory.mkdir()
    pq.write_table(profiles(MEMBERS), directory / "profiles.parquet")
    (directory / "build.json").write_text(
        json.dumps({"build_id": "build-1", "as_of": AS_OF.isoformat()})
    )
    return directory


def apply(runtime: Runtime, p: Program, directory: Path) -> dict[str, Any]:
    """Run the tiers stage and its publish step, as the build does."""
    result = BuildResult(build_id=directory.name, directory=directory, as_of=AS_OF, engine="duckdb")
    with open_backend("duckdb", temp_dir=directory / "tmp") as con:
        ctx = BuildContext(runtime, p, con, directory, result, lambda *a: None, {})
        stage.run_stage(ctx)
    with transaction(runtime.engine) as conn:
        stage.publish(conn, directory)
    section: dict[str, Any] = ctx.meta["sections"]["tiers"]
    return section


def tiers_now(runtime: Runtime) -> dict[str, str]:
    with runtime.engine.connect() as conn:
        return dict(conn.execute(select(member_tiers.c.member_id, member_tiers.c.tier)).all())


def test_the_preview_matrix_is_what_applying_does(runtime: Runtime, build_dir: Path) -> None:
    apply(runtime, program(), build_dir)
    before = tiers_now(runtime)
    assert Counter(before.values()) == {"member": 1, "gold": 4, "platinum": 7}
    changed = program(gold=3000, plat=9000)
    preview = stage.preview(runtime, changed, build_dir)
    apply(runtime, changed, build_dir)
    after = tiers_now(runtime)
    moves: dict[str, Counter[str]] = {}
    for member, tier in before.items():
        moves.setdefault(tier, Counter())[after[member]] += 1
    assert preview["transitions"] == {k: dict(v) for k, v in moves.items()}
    # Upgrades happen at once; downgrades wait for the period's end (365 days by default).
    assert preview["transitions"] == {
        "member": {"member": 1},
        "gold": {"gold": 4},
        "platinum": {"platinum": 7},
    }
    assert preview["notices"] == 0


def test_invitations_respect_the_quota_and_break_ties_by_member_id(
    runtime: Runtime, tmp_path: Path
) -> None:
    directory = tmp_path / "b"
    directory.mkdir()
    # m05..m11 are eligible (spend >= 5,000 CNY); m09 and m10 tie exactly; m00 never ordered,
    # so it is not active.
    rows = [*MEMBERS[:9], ("m10", 900_000, 9), ("m09", 900_000, 9), MEMBERS[11]]
    pq.write_table(profiles(rows), directory / "profiles.parquet")
    (directory / "build.json").write_text(json.dumps({"build_id": "b", "as_of": AS_OF.isoformat()}))
    section = apply(runtime, program(quota=3), directory)
    assert section["invitations"] == {
        "active_members": 11,
        "eligible": 7,
        "quota": 3,
        "taken": 0,
        "slots": 3,
        "invited": 3,
    }
    with runtime.engine.connect() as conn:
        page = membership_grants.list_invitations(conn, status="pending", after=None, limit=10)
    ranked = sorted(page.items, key=lambda i: i.rank)
    assert [(i.member_id, i.rank) for i in ranked] == [("m11", 1), ("m09", 2), ("m10", 3)]
    with runtime.engine.connect() as conn:
        announced = conn.execute(
            select(outbox.c.member_id).where(outbox.c.event_type == "invitation.created")
        ).scalars()
        assert sorted(announced) == ["m09", "m10", "m11"]
    top = ranked[0].explanation
    assert top["criteria"] == "spend_365d >= 500000"
    assert [c["field"] for c in top["contributions"]] == ["spend_365d", "orders_365d"]
    assert top["contributions"][0] == {
        "field": "spend_365d",
        "description": "",
        "value": 1_100_000.0,
        "percentile": 1.0,
        "weight": 3.0,
        "contribution": 0.75,
    }
    assert top["composite"] == 1.0
    # A rebuild while they are pending invites nobody new: the quota is taken.
    again = apply(runtime, program(quota=3), directory)
    assert again["invitations"]["taken"] == 3 and again["invitations"]["invited"] == 0


@pytest.fixture
def managers(runtime: Runtime) -> None:
    with transaction(runtime.engine) as conn:
        for staff_id in ("s1", "s2"):
            privacy.create_staff(
                conn, StaffCreate(staff_id=staff_id, name=staff_id, role=Role.service)
            )
    return


def accept_all(runtime: Runtime, p: Program) -> list[str]:
    with transaction(runtime.engine) as conn:
        pending = membership_grants.list_invitations(
            conn, status="pending", after=None, limit=50
        ).items
        for inv in pending:
            membership_grants.decide(conn, p, inv.invitation_id, True, actor=SYSTEM)
    return sorted(i.member_id for i in pending)


def test_managers_balance_load_within_capacity_stay_stable_and_take_over(
    runtime: Runtime, build_dir: Path, managers: None
) -> None:
    p = program(quota=5)
    with transaction(runtime.engine) as conn:
        membership_managers.add_manager(conn, p, "s1", 2)
        membership_managers.add_manager(conn, p, "s2", 4)
    apply(runtime, p, build_dir)
    members = accept_all(runtime, p)
    assert len(members) == 5
    with runtime.engine.connect() as conn:
        first = {m: membership_view.membership(conn, p, m).manager for m in members}
        loads = Counter(m.staff_id for m in first.values() if m)
    # Lowest load relative to capacity first: s1 gets 2 (its capacity), s2 gets 3.
    assert loads == {"s1": 2, "s2": 3}
    apply(runtime, p, build_dir)  # a rebuild keeps every assignment
    with runtime.engine.connect() as conn:
        assert {m: membership_view.membership(conn, p, m).manager for m in members} == first
    with transaction(runtime.engine) as conn:
        result = membership_managers.remove_manager(conn, p, "s1")
    # s1's two members move to s2, which has room for one: one waits for a manager.
    assert result == {"assigned": 1, "released": 0, "unassigned": 1}
    with runtime.engine.connect() as conn:
        page = membership_managers.managed_members(conn, "s2", after=None, limit=10)
    assert len(page.members) == 4 and page.capacity == 4


def test_invitation_decisions_are_final_and_retries_answer_the_same(
    runtime: Runtime, build_dir: Path
) -> None:
    p = program(quota=1)
    apply(runtime, p, build_dir)
    with transaction(runtime.engine) as conn:
        [inv] = membership_grants.list_invitations(
            conn, status="pending", after=None, limit=5
        ).items
        declined = membership_grants.decide(conn, p, inv.invitation_id, False, actor=SYSTEM)
        assert membership_grants.decide(conn, p, inv.invitation_id, False, actor=SYSTEM) == declined
        with pytest.raises(service.InvitationClosed):
            membership_grants.decide(conn, p, inv.invitation_id, True, actor=SYSTEM)
    # A decliner is not invited again within the re-invite window; the next one is.
    section = apply(runtime, p, build_dir)
    assert section["invitations"]["invited"] == 1
    with runtime.engine.connect() as conn:
        pending = membership_grants.list_invitations(
            conn, status="pending", after=None, limit=5
        ).items
    assert [i.member_id for i in pending] != [inv.member_id]


def test_a_manual_grant_survives_rebuilds(runtime: Runtime, build_dir: Path) -> None:
    from memberwise.membership.schemas import TierGrant

    p = program()
    apply(runtime, p, build_dir)
    with transaction(runtime.engine) as conn:
        membership_grants.grant(
            conn, p, "m00", TierGrant(tier="platinum", reason="VIP partner"), actor=SYSTEM
        )
    apply(runtime, p, build_dir)
    assert tiers_now(runtime)["m00"] == "platinum"
    with runtime.engine.connect() as conn:
        out = membership_view.membership(conn, p, "m00")
    assert out.tier is not None and out.tier.source == "manual"
    assert out.history[0]["reason"] == "VIP partner"


def test_stored_periods_drive_a_later_downgrade(runtime: Runtime, tmp_path: Path) -> None:
    first = tmp_path / "first"
    first.mkdir()
    pq.write_table(profiles([("a", 600_000, 1), ("b", 200_000, 1)]), first / "profiles.parquet")
    (first / "build.json").write_text(json.dumps({"build_id": "first", "as_of": AS_OF.isoformat()}))
    apply(runtime, program(quota=1), first)
    assert tiers_now(runtime) == {"a": "platinum", "b": "gold"}
    # A year and a day later both have spent nothing: the 365-day periods (read back from the
    # store) have ended, so each goes down one tier.
    later = tmp_path / "later"
    later.mkdir()
    pq.write_table(profiles([("a", 0, 0), ("b", 0, 0)]), later / "profiles.parquet")
    as_of = AS_OF + timedelta(days=366)
    (later / "build.json").write_text(json.dumps({"build_id": "later", "as_of": as_of.isoformat()}))
    result = BuildResult(build_id="later", directory=later, as_of=as_of, engine="duckdb")
    with open_backend("duckdb", temp_dir=later / "tmp") as con:
        stage.run_stage(
            BuildContext(runtime, program(quota=1), con, later, result, lambda *a: None, {})
        )
    with transaction(runtime.engine) as conn:
        stage.publish(conn, later)
    assert tiers_now(runtime) == {"a": "gold", "b": "member"}
    with runtime.engine.connect() as conn:
        history = membership_view.membership(conn, program(quota=1), "b").history
    assert history[0]["reason"] == "did not requalify for gold: score 0 < 1000"
    # The moves (not the first placements) are in the outbox for the platform's webhooks.
    with runtime.engine.connect() as conn:
        moves = conn.execute(
            select(outbox.c.member_id, outbox.c.payload)
            .where(outbox.c.event_type == "member.tier_changed")
            .order_by(outbox.c.member_id)
        ).all()
    assert [(m, json.loads(p)["from_tier"], json.loads(p)["to_tier"]) for m, p in moves] == [
        ("a", "platinum", "gold"),
        ("b", "gold", "member"),
    ]


def test_points_earned_qualify_and_refunded_points_do_not(runtime: Runtime, tmp_path: Path) -> None:

    text = """name: pts
points: {unit: 100, per_unit: 1, pending_days: 7}
tiers:
  - {name: member}
  - {name: silver, qualify: [{points_earned: 150, window_days: 365}]}
"""
    p = parse_program(text)
    directory = tmp_path / "b"
    directory.mkdir()
    pq.write_table(profiles([("a", 0, 1), ("b", 0, 1)]), directory / "profiles.parquet")
    (directory / "build.json").write_text(json.dumps({"build_id": "b", "as_of": AS_OF.isoformat()}))
    placed = AS_OF - timedelta(days=3)
    with transaction(runtime.engine) as conn:
        add_members(conn, "a", "b")
        orders.place(conn, p, order("o-a", "a", price=20_000, at=placed))  # 200 points
        orders.place(conn, p, order("o-b", "b", price=20_000, at=placed))
        orders.refund(conn, p, "o-b", RefundIn(refund_id="r-b", full=True), at=placed)
    apply(runtime, p, directory)
    assert tiers_now(runtime) == {"a": "silver", "b": "member"}
