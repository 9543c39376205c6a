"""Reports per agent, team and tier: SLA attainment, FCR, handle time, backlog, CSAT and
compensation against budget, from real tickets."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection

from memberwise.service import compensation, reports, service
from memberwise.service.schemas import (
    CompensationIn,
    CompensationKind,
    CsatIn,
    MessageIn,
    TicketState,
)
from tests.service.factories import (
    PLATFORM,
    T0,
    add_agent,
    add_members,
    make_program,
    open_ticket,
    staff_principal,
)


def test_figures_by_agent_team_and_tier(conn: Connection) -> None:
    program = make_program()
    add_agent(conn, program, "a1", team="north")
    add_agent(conn, program, "a2", team="north")
    add_members(conn, program, m1="member", g1="gold")
    a1, a2 = staff_principal("a1"), staff_principal("a2")
    t1 = open_ticket(conn, program, "m1", key="1").ticket_id  # -> a1
    t2 = open_ticket(conn, program, "g1", key="2").ticket_id  # -> a2
    open_ticket(conn, program, "m1", key="3")  # -> a1, left open (backlog)
    # t1: answered in 10 minutes, resolved after 90, rated 4, one staff reply: FCR.
    service.add_message(
        conn, program, t1, MessageIn(body="ok"), actor=a1, at=T0 + timedelta(minutes=10)
    )
    service.set_state(
        conn, program, t1, TicketState.resolved, actor=a1, at=T0 + timedelta(minutes=90)
    )
    service.rate(conn, program, t1, CsatIn(score=4), actor=PLATFORM, at=T0 + timedelta(hours=2))
    # t2: the gold member's 20-minute first response is missed; resolved after 3 hours.
    service.add_message(
        conn, program, t2, MessageIn(body="sorry"), actor=a2, at=T0 + timedelta(minutes=30)
    )
    service.set_state(conn, program, t2, TicketState.resolved, actor=a2, at=T0 + timedelta(hours=3))
    compensation.compensate(
        conn,
        program,
        t2,
        CompensationIn(kind=CompensationKind.money, amount=3000, reason="late answer"),
        key="c",
        actor=a2,
        at=T0 + timedelta(hours=3),
    )
    window = {"since": T0 - timedelta(days=1), "until": T0 + timedelta(days=1)}
    by_agent = {r.key: r for r in reports.report(conn, program, by="agent", **window).rows}
    r1, r2 = by_agent["a1"], by_agent["a2"]
    assert (r1.tickets, r1.resolved, r1.backlog, r1.csat) == (2, 1, 1, 4.0)
    assert (r1.sla_met, r1.sla_breached, r1.first_contact_resolution) == (2, 0, 1.0)
    assert r1.mean_handle_minutes == 90.0
    assert (r2.sla_met, r2.sla_breached, r2.sla_attainment) == (1, 1, 0.5)
    assert (r2.compensation_paid, r2.compensation_budget) == (3000, 20_000)  # 2 days x 100 CNY
    (north,) = reports.report(conn, program, by="team", **window).rows
    assert (north.key, north.tickets, north.compensation_budget) == ("north", 3, 40_000)
    by_tier = {r.key: r for r in reports.report(conn, program, by="tier", **window).rows}
    assert (by_tier["gold"].tickets, by_tier["gold"].compensation_paid) == (1, 3000)
    assert (by_tier["member"].tickets, by_tier["member"].backlog) == (2, 1)
