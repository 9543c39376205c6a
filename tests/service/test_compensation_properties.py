"""Property test of compensation under the authority matrix: for random sequences of requests
and decisions by staff of random roles, no budget is ever passed, what a budget used equals the
compensations its holder paid that day, each paid compensation is paid once in the ledgers, and
a refused decision changes nothing."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, func, select

from memberwise.kit.errors import MemberwiseError
from memberwise.ledger import points
from memberwise.ledger.tables import points_entries
from memberwise.program.schemas import Program
from memberwise.service import compensation
from memberwise.service.schemas import CompensationIn, CompensationKind, DecisionIn
from memberwise.service.tables import service_budgets, service_compensations
from tests.service.factories import T0, add_agent, add_members, make_program, open_ticket
from tests.service.factories import staff_principal as staff

PROGRAM: Program = make_program()
ROLES = ("agent", "manager", "supervisor")
_run = itertools.count()

_steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("ask"),
            st.sampled_from(ROLES),
            st.sampled_from(["points", "money"]),
            st.integers(min_value=1, max_value=400_000),
        ),
        st.tuples(st.just("decide"), st.sampled_from(ROLES), st.booleans(), st.integers(0, 20)),
    ),
    min_size=1,
    max_size=25,
)


def _state(conn: Connection) -> list[tuple[object, ...]]:
    budgets = conn.execute(select(service_budgets.c.staff_id, service_budgets.c.used)).all()
    c = service_compensations.c
    statuses = conn.execute(select(c.compensation_id, c.status)).all()
    return sorted(tuple(r) for r in budgets) + sorted(tuple(r) for r in statuses)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=_steps)
def test_budgets_are_never_passed_and_each_payment_is_made_once(
    conn: Connection, steps: list[tuple[str, str, object, int]]
) -> None:
    run = next(_run)
    people = {role: f"{role}{run}" for role in ROLES}
    for role, staff_id in people.items():
        add_agent(conn, PROGRAM, staff_id, authority=role)
    member = f"m{run}"
    add_members(conn, PROGRAM, **{member: "member"})
    ticket = open_ticket(conn, PROGRAM, member).ticket_id
    asked: list[str] = []
    for n, (step, role, what, number) in enumerate(steps):
        actor = staff(people[role])
        if step == "ask":
            data = CompensationIn(
                kind=CompensationKind(str(what)),
                amount=number if what == "money" else max(1, number // 100),
                reason="property",
            )
            out = compensation.compensate(
                conn, PROGRAM, ticket, data, key=f"k{n}", actor=actor, at=T0
            )
            asked.append(out.compensation_id)
        elif asked:
            target = asked[number % len(asked)]
            before = _state(conn)
            try:
                compensation.decide(
                    conn, PROGRAM, target, DecisionIn(approve=bool(what)), actor=actor, at=T0
                )
            except MemberwiseError:
                # a refused decision writes nothing: budgets and statuses are as they were
                assert _state(conn) == before
    c = service_compensations.c
    for role, staff_id in people.items():
        limit = PROGRAM.service.authority[role].daily
        used = conn.execute(
            select(service_budgets.c.used).where(service_budgets.c.staff_id == staff_id)
        ).scalar()
        paid = conn.execute(
            select(func.coalesce(func.sum(c.value), 0)).where(
                c.status == "paid", c.decided_by == staff_id
            )
        ).scalar_one()
        assert int(used or 0) == int(paid)
        assert limit is None or int(paid) <= limit
    paid_points = conn.execute(
        select(func.coalesce(func.sum(c.amount), 0)).where(
            c.status == "paid", c.kind == "points", c.member_id == member
        )
    ).scalar_one()
    assert points.balance_of(conn, member).available == int(paid_points)
    entries = conn.execute(
        select(func.count()).where(points_entries.c.member_id == member)
    ).scalar_one()
    assert (
        entries
        == conn.execute(
            select(func.count()).where(
                c.status == "paid", c.kind == "points", c.member_id == member
            )
        ).scalar_one()
    )
