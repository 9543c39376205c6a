"""Service traffic for the demo platform (`memberwise run`): desk agents beside the demo's
account managers, tickets opened by the program's automatic rules from the demo's latest
complaints, bad reviews and large refunds (at the events' own times), part of them answered
and resolved, a few compensations (one waiting for approval), and a sweep -- so the queues are
live and some tickets have breached. A second run changes nothing (it finds the desk seeded)."""

from __future__ import annotations

import contextlib
import random
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from memberwise.kit.db import transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.kit.time import utcnow
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import Principal, Role, StaffCreate
from memberwise.program.schemas import Program
from memberwise.runtime import Runtime
from memberwise.service import agents, auto, compensation, repository, service, sweeps
from memberwise.service.schemas import (
    AgentIn,
    CompensationIn,
    CompensationKind,
    CsatIn,
    MessageIn,
    TicketState,
)
from memberwise.service.tables import service_tickets

DEMO_PLATFORM = Principal(key_id="demo", role=Role.platform, name="demo platform")
SUPERVISOR = ("cs-lead", "赵主管", "supervisor", ())
AGENTS = (
    ("cs-01", "陈客服", "agent", ("after_sales",)),
    ("cs-02", "刘客服", "agent", ("after_sales",)),
    ("cs-03", "杨客服", "agent", ()),
    ("cs-04", "黄客服", "agent", ("finance", "after_sales")),
    ("cs-fin", "周财务", "finance", ("finance",)),
)
#: The demo's account managers (membership's demo seeds them).
MANAGERS = ("am-01", "am-02", "am-03")
#: The latest days of events that may become tickets, and at most how many events.
DAYS, MOST = 14, 600


def _recent_events(runtime: Runtime, program: Program) -> list[dict[str, Any]]:
    """The lake's events the program's rules look at, of its last ``DAYS`` days."""
    types = sorted({rule.event for rule in program.service.auto})
    found = auto.lake_events(runtime.lake, types, days=DAYS, limit=MOST)
    return sorted(found, key=lambda e: (e["ts"], e["event_id"]))


def seed(runtime: Runtime, program: Program) -> dict[str, int]:
    """Seed the desk once; counts of tickets, breaches and what is queued afterwards."""
    now = utcnow()
    with transaction(runtime.engine) as conn:
        existing = conn.execute(select(func.count()).select_from(service_tickets)).scalar_one()
    if existing:
        return _counts(runtime, program, seeded=False)
    with transaction(runtime.engine) as conn:
        for staff_id, name, authority, skills in (SUPERVISOR, *AGENTS):
            privacy.create_staff(conn, StaffCreate(staff_id=staff_id, name=name, role=Role.service))
            data = AgentIn(
                team="finance" if authority == "finance" else "desk",
                skills=list(skills),
                capacity=6,
                authority=authority if authority in program.service.authority else "agent",
                supervisor_id=None if staff_id == SUPERVISOR[0] else SUPERVISOR[0],
            )
            agents.put_agent(conn, program, staff_id, data, actor=DEMO_PLATFORM, at=now)
        for staff_id in MANAGERS:
            if repository.get_agent(conn, staff_id) is None and any(
                s.staff_id == staff_id for s in privacy.list_staff(conn)
            ):
                manager = AgentIn(
                    team="account_managers",
                    capacity=50,
                    authority="manager" if "manager" in program.service.authority else "agent",
                    supervisor_id=SUPERVISOR[0],
                )
                agents.put_agent(conn, program, staff_id, manager, actor=DEMO_PLATFORM, at=now)
    events = _recent_events(runtime, program)
    with transaction(runtime.engine) as conn:
        opened = auto.open_for_events(conn, program, events, actor=DEMO_PLATFORM)
    _work(runtime, program, opened)
    return _counts(runtime, program, seeded=True)


def _work(runtime: Runtime, program: Program, opened: list[str]) -> None:
    """Agents answer most tickets (some late), resolve some, pay a few compensations."""
    rng = random.Random(14)
    now = utcnow()
    for n, ticket_id in enumerate(opened):
        with transaction(runtime.engine) as conn:
            ticket = service.get_ticket(conn, program, ticket_id)
            if ticket.assignee is None or rng.random() < 0.35:
                continue  # queued, or not answered yet: the sweep shows its breach
            staff = Principal(
                key_id=f"demo-{ticket.assignee}",
                role=Role.service,
                name=ticket.assignee,
                staff_id=ticket.assignee,
            )
            first = next((c for c in ticket.clocks if c.metric == "first_response"), None)
            target = first.target_seconds if first is not None else 3600
            reply_at = ticket.opened_at + timedelta(seconds=int(target * rng.uniform(0.2, 1.4)))
            if reply_at >= now:
                continue
            service.add_message(
                conn,
                program,
                ticket_id,
                MessageIn(body="您好，已收到，正在为您处理。"),
                actor=staff,
                at=reply_at,
            )
            if n % 7 == 0:
                with contextlib.suppress(MemberwiseError):  # e.g. a day's budget used up
                    compensation.compensate(
                        conn,
                        program,
                        ticket_id,
                        CompensationIn(
                            kind=CompensationKind.points if n % 2 else CompensationKind.money,
                            amount=2000 if n % 2 else 300_000,
                            reason="物流延误补偿",
                        ),
                        key=f"demo-{ticket_id}",
                        actor=staff,
                        at=reply_at,
                    )
            done_at = reply_at + timedelta(minutes=rng.randint(10, 600))
            if rng.random() < 0.5 and done_at < now:
                service.set_state(
                    conn, program, ticket_id, TicketState.resolved, actor=staff, at=done_at
                )
                if rng.random() < 0.7:
                    score = CsatIn(score=rng.choice([3, 4, 5, 5, 5, 2]))
                    service.rate(conn, program, ticket_id, score, actor=DEMO_PLATFORM, at=done_at)
    with transaction(runtime.engine) as conn:
        sweeps.sweep(conn, program, at=now)


def _counts(runtime: Runtime, program: Program, *, seeded: bool) -> dict[str, int]:
    with transaction(runtime.engine) as conn:
        tickets = conn.execute(select(func.count()).select_from(service_tickets)).scalar_one()
        queued = len(service.queue(conn, limit=500).items)
        breaches = conn.execute(
            select(func.count()).where(service_tickets.c.escalated_to.is_not(None))
        ).scalar_one()
        pending = len(compensation.approvals(conn, limit=500))
    return {
        "tickets": int(tickets),
        "queued": queued,
        "breached": int(breaches),
        "approvals": pending,
        "seeded": int(seeded),
    }
