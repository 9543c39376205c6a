"""Compensation under the authority matrix: paid once through the ledgers within a role's
limits, queued for approval above them, and never past a budget under concurrent approvals."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import Connection, Engine, func, select

from memberwise.kit.db import transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.ledger import points
from memberwise.ledger import service as ledger
from memberwise.ledger.tables import coupons
from memberwise.program.schemas import Program
from memberwise.service import compensation
from memberwise.service.compensation import (
    AlreadyDecided,
    AuthorityTooLow,
    BudgetExceeded,
    CompensationKeyReused,
)
from memberwise.service.schemas import CompensationIn, CompensationKind, DecisionIn
from memberwise.service.tables import service_budgets, service_compensations
from tests.service.factories import (
    T0,
    add_agent,
    add_members,
    make_program,
    open_ticket,
    staff_principal,
)


@pytest.fixture(scope="module")
def program() -> Program:
    return make_program()


def _money(fen: int, reason: str = "late delivery") -> CompensationIn:
    return CompensationIn(kind=CompensationKind.money, amount=fen, reason=reason)


def _used(conn: Connection, staff_id: str) -> int:
    b = service_budgets
    found = conn.execute(select(b.c.used).where(b.c.staff_id == staff_id)).scalar()
    return int(found or 0)


def test_points_within_the_agents_limit_are_paid_once(conn: Connection, program: Program) -> None:
    add_agent(conn, program, "a1")
    add_members(conn, program, m1="member")
    t = open_ticket(conn, program, "m1").ticket_id
    data = CompensationIn(kind=CompensationKind.points, amount=3000, reason="sorry")
    agent = staff_principal("a1")
    first = compensation.compensate(conn, program, t, data, key="k1", actor=agent, at=T0)
    again = compensation.compensate(conn, program, t, data, key="k1", actor=agent, at=T0)
    assert (first.status, first.value, first.decided_by) == ("paid", 3000, "a1")
    assert again == first
    assert points.balance_of(conn, "m1").available == 3000
    assert _used(conn, "a1") == 3000
    with pytest.raises(CompensationKeyReused):
        compensation.compensate(conn, program, t, _money(100), key="k1", actor=agent, at=T0)


def test_a_coupon_through_the_coupon_ledger(conn: Connection, program: Program) -> None:
    add_agent(conn, program, "a1")
    add_members(conn, program, m1="member")
    t = open_ticket(conn, program, "m1").ticket_id
    data = CompensationIn(kind=CompensationKind.coupon, coupon_template="sorry_20", reason="x" * 3)
    out = compensation.compensate(
        conn, program, t, data, key="c", actor=staff_principal("a1"), at=T0
    )
    assert (out.status, out.value) == ("paid", 2000)
    issued = conn.execute(select(coupons.c.coupon_id, coupons.c.member_id)).all()
    assert [(r[0], r[1]) for r in issued] == [(out.reference, "m1")]


def test_over_the_case_limit_waits_for_the_role_that_covers_it(
    conn: Connection, program: Program
) -> None:
    add_agent(conn, program, "a1")
    add_agent(conn, program, "mgr", authority="manager")
    add_agent(conn, program, "sup", authority="supervisor")
    add_members(conn, program, m1="member")
    t = open_ticket(conn, program, "m1").ticket_id
    agent = staff_principal("a1")
    # 2,000 CNY: above the agent's 50 CNY a case, within a manager's 2,000 CNY.
    pending = compensation.compensate(
        conn, program, t, _money(200_000), key="big", actor=agent, at=T0
    )
    assert (pending.status, pending.required_role) == ("pending_approval", "manager")
    assert [c.compensation_id for c in compensation.approvals(conn, limit=10)] == [
        pending.compensation_id
    ]
    with pytest.raises(AuthorityTooLow):
        compensation.decide(
            conn, program, pending.compensation_id, DecisionIn(approve=True), actor=agent, at=T0
        )
    paid = compensation.decide(
        conn,
        program,
        pending.compensation_id,
        DecisionIn(approve=True),
        actor=staff_principal("mgr"),
        at=T0,
    )
    assert (paid.status, paid.decided_by) == ("paid", "mgr")
    assert _used(conn, "mgr") == 200_000 and _used(conn, "a1") == 0
    with pytest.raises(AlreadyDecided):
        compensation.decide(
            conn,
            program,
            pending.compensation_id,
            DecisionIn(approve=False),
            actor=staff_principal("sup"),
            at=T0,
        )
    # Beyond the manager's budget of the day (3,000 CNY): the next 1,500 CNY is refused and
    # nothing changes; a supervisor approves it.
    second = compensation.compensate(
        conn, program, t, _money(150_000), key="b2", actor=agent, at=T0
    )
    with pytest.raises(BudgetExceeded):
        compensation.decide(
            conn,
            program,
            second.compensation_id,
            DecisionIn(approve=True),
            actor=staff_principal("mgr"),
            at=T0,
        )


def test_an_exhausted_daily_budget_sends_even_a_small_case_upwards(
    conn: Connection, program: Program
) -> None:
    add_agent(conn, program, "a1")
    add_members(conn, program, m1="member")
    t = open_ticket(conn, program, "m1").ticket_id
    agent = staff_principal("a1")
    for i in range(2):  # 2 x 50 CNY = the agent's 100 CNY a day
        assert (
            compensation.compensate(
                conn, program, t, _money(5000), key=f"s{i}", actor=agent, at=T0
            ).status
            == "paid"
        )
    third = compensation.compensate(conn, program, t, _money(100), key="s3", actor=agent, at=T0)
    assert (third.status, third.required_role) == ("pending_approval", "manager")
    # The next day the budget is whole again.
    fourth = compensation.compensate(
        conn, program, t, _money(100), key="s4", actor=agent, at=T0 + timedelta(days=1)
    )
    assert fourth.status == "paid"


def _pending(engine: Engine, program: Program, n: int, fen: int) -> list[str]:
    with transaction(engine) as conn:
        add_agent(conn, program, "a1")
        add_agent(conn, program, "sup", authority="supervisor")
        add_members(conn, program, m1="member")
        t = open_ticket(conn, program, "m1").ticket_id
        return [
            compensation.compensate(
                conn, program, t, _money(fen), key=f"r{i}", actor=staff_principal("a1"), at=T0
            ).compensation_id
            for i in range(n)
        ]


def _approve(engine: Engine, program: Program, compensation_id: str) -> str:
    try:
        ledger.write(
            engine,
            lambda conn: compensation.decide(
                conn,
                program,
                compensation_id,
                DecisionIn(approve=True),
                actor=staff_principal("sup"),
                at=T0,
            ),
        )
    except MemberwiseError as exc:
        return exc.code
    return "paid"


def test_concurrent_approvals_never_pass_the_budget(engine: Engine, program: Program) -> None:
    # The supervisor may approve 10,000 CNY a case and 20,000 CNY a day: of three 9,000 CNY
    # approvals made at once, exactly two are paid.
    ids = _pending(engine, program, 3, 900_000)
    with ThreadPoolExecutor(3) as pool:
        results = sorted(pool.map(lambda c: _approve(engine, program, c), ids))
    assert results == ["budget_exceeded", "paid", "paid"]
    with transaction(engine) as conn:
        assert _used(conn, "sup") == 1_800_000
        s = service_compensations
        paid = conn.execute(
            select(func.count(), func.sum(s.c.value)).where(s.c.status == "paid")
        ).one()
        assert (paid[0], int(paid[1])) == (2, 1_800_000)


def test_one_approval_decided_twice_at_once_pays_once(engine: Engine, program: Program) -> None:
    (only,) = _pending(engine, program, 1, 300_000)
    with ThreadPoolExecutor(2) as pool:
        results = sorted(pool.map(lambda c: _approve(engine, program, c), [only, only]))
    assert results == ["compensation_already_decided", "paid"]
    with transaction(engine) as conn:
        assert _used(conn, "sup") == 300_000
