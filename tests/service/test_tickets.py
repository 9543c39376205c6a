"""Tickets end to end on the real stores: opening and routing, the thread and the clocks,
pauses, resolution and reopening, merging, the sweep's warnings, breaches and escalations,
the queue, balanced assignment and hand-overs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Connection, select

from memberwise.ledger.service import MemberUnknown
from memberwise.privacy.schemas import SYSTEM
from memberwise.privacy.tables import audit_log
from memberwise.program.desk import Priority, TicketKind
from memberwise.program.schemas import Program
from memberwise.service import agents, service, sweeps
from memberwise.service.schemas import MessageIn, TicketChange, TicketOut, TicketState
from memberwise.service.service import (
    InvalidTransition,
    NotSameMember,
    OrderNotOfMember,
    ReopenWindowClosed,
    TicketKeyReused,
)
from memberwise.service.tables import service_agents
from tests.service.factories import (
    PLATFORM,
    PROGRAM,
    T0,
    add_agent,
    add_manager,
    add_members,
    make_program,
    open_ticket,
    place_order,
    staff_principal,
)


@pytest.fixture(scope="module")
def program() -> Program:
    return make_program()


def _clock(ticket: TicketOut, metric: str) -> tuple[int, int, bool, bool]:
    c = next(c for c in ticket.clocks if c.metric == metric)
    return c.target_seconds, c.elapsed_seconds, c.running, c.breached


def _load(conn: Connection, staff_id: str) -> int:
    return int(
        conn.execute(
            select(service_agents.c.load).where(service_agents.c.staff_id == staff_id)
        ).scalar_one()
    )


def test_a_ticket_without_agents_waits_in_the_queue(conn: Connection, program: Program) -> None:
    add_members(conn, program, m1="member")
    ticket = open_ticket(conn, program, "m1")
    assert (ticket.state, ticket.assignee, ticket.tier, ticket.policy) == (
        TicketState.new,
        None,
        "member",
        "standard",
    )
    assert [c.metric for c in ticket.clocks] == ["first_response", "resolution"]
    # 10:00 Monday in Shanghai; the first response is due after 60 business minutes (+1 s).
    assert ticket.due_at == T0 + timedelta(minutes=60, seconds=1)
    assert [t.ticket_id for t in service.queue(conn, limit=10).items] == [ticket.ticket_id]
    assert [e.kind for e in ticket.events] == ["opened", "queued"]
    audited = conn.execute(
        select(audit_log.c.action).where(audit_log.c.subject_id == ticket.ticket_id)
    ).scalars()
    assert list(audited) == ["ticket.opened"]


def test_opening_refuses_unknown_members_and_other_members_orders(
    conn: Connection, program: Program
) -> None:
    add_members(conn, program, m1="member", m2="member")
    with pytest.raises(MemberUnknown):
        open_ticket(conn, program, "nobody")
    place_order(conn, program, "o2", "m2")
    with pytest.raises(OrderNotOfMember):
        open_ticket(conn, program, "m1", order_id="o2")


def test_a_retried_opening_returns_the_first_ticket(conn: Connection, program: Program) -> None:
    add_members(conn, program, m1="member")
    first = open_ticket(conn, program, "m1", key="k1")
    again = open_ticket(conn, program, "m1", key="k1")
    assert again.ticket_id == first.ticket_id
    assert len(service.member_tickets(conn, "m1", limit=10)) == 1
    with pytest.raises(TicketKeyReused):
        open_ticket(conn, program, "m1", key="k1", kind=TicketKind.complaint)


def test_black_card_tickets_go_to_the_account_manager_with_a_3_minute_callback(
    conn: Connection, program: Program
) -> None:
    add_manager(conn, program, "mgr1")
    add_agent(conn, program, "a1")
    add_members(conn, program, b1="black")
    ticket = open_ticket(conn, program, "b1", kind=TicketKind.callback)
    assert (ticket.assignee, ticket.state, ticket.policy) == (
        "mgr1",
        TicketState.open,
        "black_callback",
    )
    assert _clock(ticket, "first_response")[:1] == (180,)
    assert next(c for c in ticket.clocks if c.metric == "first_response").hours == "24x7"
    assert ticket.due_at == T0 + timedelta(seconds=181)
    assert _load(conn, "a1") == 0 and _load(conn, "mgr1") == 1


def test_priority_service_benefit_caps_the_first_response(
    conn: Connection, program: Program
) -> None:
    add_members(conn, program, g1="gold")
    ticket = open_ticket(conn, program, "g1")
    assert _clock(ticket, "first_response")[0] == 20 * 60  # standard 60, the benefit says 20
    assert _clock(ticket, "resolution")[0] == 480 * 60


def test_balanced_by_load_relative_to_capacity_then_queued(
    conn: Connection, program: Program
) -> None:
    add_agent(conn, program, "a1", capacity=1)
    add_agent(conn, program, "a2", capacity=3)
    add_members(conn, program, m1="member")
    got = [open_ticket(conn, program, "m1", key=str(i)).assignee for i in range(5)]
    # a1 0/1 vs a2 0/3 (tie: staff id) -> a1; then a2 0/3, a2 1/3, a2 2/3; then all full.
    assert got == ["a1", "a2", "a2", "a2", None]
    assert (_load(conn, "a1"), _load(conn, "a2")) == (1, 3)


def test_the_queue_orders_by_tier_then_deadline_and_feeds_freed_agents(
    conn: Connection, program: Program
) -> None:
    add_members(conn, program, m1="member", g1="gold")
    late = open_ticket(conn, program, "m1", at=T0)
    early = open_ticket(conn, program, "m1", at=T0 - timedelta(minutes=30))
    gold = open_ticket(conn, program, "g1", at=T0 + timedelta(minutes=5))
    queued = [t.ticket_id for t in service.queue(conn, limit=10).items]
    assert queued == [gold.ticket_id, early.ticket_id, late.ticket_id]
    add_agent(conn, program, "a1", capacity=1)  # joins and takes the head of the queue
    assert service.get_ticket(conn, program, gold.ticket_id).assignee == "a1"
    service.set_state(
        conn,
        program,
        gold.ticket_id,
        TicketState.resolved,
        actor=staff_principal("a1"),
        at=T0 + timedelta(minutes=20),
    )
    assert service.get_ticket(conn, program, early.ticket_id).assignee == "a1"
    assert _load(conn, "a1") == 1


def test_thread_pauses_resolution_and_reopening(conn: Connection, program: Program) -> None:
    add_agent(conn, program, "a1")
    add_members(conn, program, m1="member")
    agent = staff_principal("a1")
    t = open_ticket(conn, program, "m1").ticket_id
    tk = service.add_message(
        conn,
        program,
        t,
        MessageIn(body="内部", internal=True),
        actor=agent,
        at=T0 + timedelta(minutes=5),
    )
    assert _clock(tk, "first_response")[2] is True  # a note stops no clock
    tk = service.add_message(
        conn, program, t, MessageIn(body="您好"), actor=agent, at=T0 + timedelta(minutes=10)
    )
    assert tk.first_response_at == T0 + timedelta(minutes=10)
    first = next(c for c in tk.clocks if c.metric == "first_response")
    assert (first.stopped, first.met, first.elapsed_seconds) == (True, True, 600)
    tk = service.set_state(
        conn,
        program,
        t,
        TicketState.pending_member,
        reason="photos",
        actor=agent,
        at=T0 + timedelta(minutes=20),
    )
    assert tk.pending_reason == "photos"
    # Two days later the member answers: the resolution clock kept its 20 minutes.
    tk = service.add_message(
        conn, program, t, MessageIn(body="照片"), actor=PLATFORM, at=T0 + timedelta(days=2)
    )
    assert tk.state is TicketState.open
    resolution = next(c for c in tk.clocks if c.metric == "resolution")
    assert (resolution.running, resolution.elapsed_seconds) == (True, 1200)
    nxt = next(c for c in tk.clocks if c.metric == "next_response")
    assert (nxt.target_seconds, nxt.running) == (7200, True)
    resolved_at = T0 + timedelta(days=2, minutes=30)
    tk = service.set_state(conn, program, t, TicketState.resolved, actor=agent, at=resolved_at)
    assert all(c.stopped and not c.running for c in tk.clocks)
    elapsed = {c.metric: c.elapsed_seconds for c in tk.clocks}
    assert elapsed["resolution"] == 1200 + 1800
    # Reopened the next day: it counts on from 50 minutes, and goes back to a1.
    tk = service.reopen(
        conn, program, t, reason="still broken", actor=PLATFORM, at=resolved_at + timedelta(days=1)
    )
    assert (tk.state, tk.assignee, tk.reopened) == (TicketState.open, "a1", 1)
    resolution = next(c for c in tk.clocks if c.metric == "resolution")
    assert (resolution.running, resolution.stopped) == (True, False)
    service.set_state(
        conn,
        program,
        t,
        TicketState.resolved,
        actor=agent,
        at=resolved_at + timedelta(days=1, minutes=10),
    )
    with pytest.raises(ReopenWindowClosed):
        service.reopen(
            conn, program, t, reason="again", actor=PLATFORM, at=resolved_at + timedelta(days=30)
        )
    with pytest.raises(InvalidTransition):
        service.set_state(conn, program, t, TicketState.open, actor=agent)


def test_sweep_warns_breaches_once_and_escalates_to_the_supervisor(
    conn: Connection, program: Program
) -> None:
    add_agent(conn, program, "a1", supervisor="boss")
    add_members(conn, program, m1="member")
    open_ticket(conn, program, "m1", key="first")
    t = open_ticket(conn, program, "m1", key="second")
    assert t.assignee == "a1"
    add_agent(conn, program, "boss", capacity=1, authority="supervisor")
    out = sweeps.sweep(conn, program, at=T0 + timedelta(minutes=30))
    assert (out.warnings, out.breaches) == (2, 0)  # half of 60 minutes, for both tickets
    out = sweeps.sweep(conn, program, at=T0 + timedelta(minutes=61))
    assert (out.warnings, out.breaches, out.escalations) == (0, 2, 2)
    again = sweeps.sweep(conn, program, at=T0 + timedelta(minutes=90))
    assert (again.warnings, again.breaches) == (0, 0)
    tk = service.get_ticket(conn, program, t.ticket_id)
    assert (tk.escalated_to, tk.priority) == ("boss", Priority.urgent.value)
    breach = next(e for e in tk.events if e.kind == "sla.breach")
    assert (breach.metric, breach.late_seconds) == ("first_response", 60)
    # A late reply is recorded as not met; no second breach event.
    tk = service.add_message(
        conn,
        program,
        t.ticket_id,
        MessageIn(body="抱歉"),
        actor=staff_principal("a1"),
        at=T0 + timedelta(minutes=95),
    )
    first = next(c for c in tk.clocks if c.metric == "first_response")
    assert (first.met, first.breached) == (False, True)
    assert sum(1 for e in tk.events if e.kind == "sla.breach") == 1


def test_a_response_after_the_target_is_a_breach_without_a_sweep(
    conn: Connection, program: Program
) -> None:
    add_agent(conn, program, "a1")
    add_members(conn, program, m1="member")
    t = open_ticket(conn, program, "m1").ticket_id
    # 10:00 + 61 business minutes; the night does not count.
    tk = service.add_message(
        conn,
        program,
        t,
        MessageIn(body="hi"),
        actor=staff_principal("a1"),
        at=T0 + timedelta(minutes=62),
    )
    breach = next(e for e in tk.events if e.kind == "sla.breach")
    assert breach.late_seconds == 120


def test_reclassifying_keeps_elapsed_time_under_the_new_policy(
    conn: Connection, program: Program
) -> None:
    add_agent(conn, program, "a1")
    add_members(conn, program, m1="member")
    agent = staff_principal("a1")
    t = open_ticket(conn, program, "m1").ticket_id
    service.set_state(
        conn,
        program,
        t,
        TicketState.pending_member,
        reason="wait",
        actor=agent,
        at=T0 + timedelta(minutes=40),
    )
    tk = service.change(
        conn,
        program,
        t,
        TicketChange(kind=TicketKind.complaint),
        actor=agent,
        at=T0 + timedelta(hours=3),
    )
    resolution = next(c for c in tk.clocks if c.metric == "resolution")
    assert (resolution.elapsed_seconds, resolution.running) == (2400, False)
    assert tk.kind == "complaint"


def test_merging_a_duplicate(conn: Connection, program: Program) -> None:
    add_agent(conn, program, "a1")
    add_members(conn, program, m1="member", m2="member")
    a = open_ticket(conn, program, "m1", key="a").ticket_id
    b = open_ticket(conn, program, "m1", key="b").ticket_id
    other = open_ticket(conn, program, "m2").ticket_id
    assert _load(conn, "a1") == 3
    with pytest.raises(NotSameMember):
        service.merge(conn, program, b, other, actor=SYSTEM)
    kept = service.merge(conn, program, b, a, actor=SYSTEM, at=T0 + timedelta(minutes=5))
    assert kept.ticket_id == a and any(e.kind == "merged_from" for e in kept.events)
    dup = service.get_ticket(conn, program, b)
    assert (dup.state, dup.merged_into) == (TicketState.merged, a)
    assert all(not c.running for c in dup.clocks)
    assert _load(conn, "a1") == 2


def test_a_leaving_manager_hands_over_members_and_tickets(
    conn: Connection, program: Program
) -> None:
    add_manager(conn, program, "mgr1")
    add_members(conn, program, b1="black")
    t = open_ticket(conn, program, "b1").ticket_id
    assert service.get_ticket(conn, program, t).assignee == "mgr1"
    add_manager(conn, program, "mgr2")
    out = agents.agent_leaves(conn, program, "mgr1", actor=SYSTEM, at=T0 + timedelta(hours=1))
    assert (out.tickets, out.reassigned, out.queued) == (1, 1, 0)
    tk = service.get_ticket(conn, program, t)
    assert tk.assignee == "mgr2"
    assert any(e.kind == "handover" for e in tk.events)


def test_a_program_change_keeps_paused_time_on_live_tickets(
    conn: Connection, program: Program
) -> None:  # GLPI lost paused time on an SLA change
    add_agent(conn, program, "a1")
    add_members(conn, program, m1="member")
    agent = staff_principal("a1")
    t = open_ticket(conn, program, "m1").ticket_id
    service.set_state(
        conn,
        program,
        t,
        TicketState.pending_member,
        reason="wait",
        actor=agent,
        at=T0 + timedelta(minutes=45),
    )
    longer = make_program(
        PROGRAM.replace(
            "{name: standard, first_response: 60, next_response: 120, resolution: 480}",
            "{name: standard, first_response: 60, next_response: 120, resolution: 960, "
            "hours: '24x7'}",
        )
    )
    assert sweeps.reapply_policies(conn, longer, at=T0 + timedelta(days=3)) == 1
    tk = service.get_ticket(conn, longer, t, at=T0 + timedelta(days=4))
    resolution = next(c for c in tk.clocks if c.metric == "resolution")
    assert (resolution.target_seconds, resolution.hours) == (960 * 60, "24x7")
    assert (resolution.elapsed_seconds, resolution.running) == (45 * 60, False)
    assert any(e.kind == "policy" and e.metric == "resolution" for e in tk.events)
    tk = service.set_state(
        conn, longer, t, TicketState.open, actor=agent, at=T0 + timedelta(days=4)
    )
    tk = service.get_ticket(conn, longer, t, at=T0 + timedelta(days=4, minutes=15))
    resolution = next(c for c in tk.clocks if c.metric == "resolution")
    assert resolution.elapsed_seconds == 60 * 60
