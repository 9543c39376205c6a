"""Every query of the service desk (and nothing else)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, bindparam, func, select, update

from memberwise.kit.db import insert_ignore
from memberwise.service.tables import (
    service_after_sales,
    service_agents,
    service_budgets,
    service_clocks,
    service_compensations,
    service_events,
    service_messages,
    service_tickets,
)

T = service_tickets
C = service_clocks
A = service_agents

# -- tickets --------------------------------------------------------------------------------------


def insert_ticket(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(T.insert(), values)


def get_ticket(conn: Connection, ticket_id: str, *, lock: bool = False) -> RowMapping | None:
    stmt = select(T).where(T.c.ticket_id == ticket_id)
    if lock:
        # One writer per ticket at a time (PostgreSQL row lock; SQLite serializes writers).
        stmt = stmt.with_for_update()
    return conn.execute(stmt).mappings().first()


def ticket_by_key(conn: Connection, member_id: str, key: str) -> RowMapping | None:
    stmt = select(T).where(T.c.member_id == member_id, T.c.open_key == key)
    return conn.execute(stmt).mappings().first()


def update_ticket(conn: Connection, ticket_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(T).where(T.c.ticket_id == ticket_id).values(**values))


def member_tickets(conn: Connection, member_id: str, limit: int) -> Sequence[RowMapping]:
    stmt = (
        select(T)
        .where(T.c.member_id == member_id)
        .order_by(T.c.opened_at.desc(), T.c.ticket_id.desc())
        .limit(limit)
    )
    return conn.execute(stmt).mappings().all()


_SUMMARY = [
    T.c.ticket_id,
    T.c.member_id,
    T.c.channel,
    T.c.kind,
    T.c.priority,
    T.c.tier,
    T.c.state,
    T.c.subject,
    T.c.assignee,
    T.c.escalated_to,
    T.c.due_at,
    T.c.opened_at,
]


def queue(conn: Connection, states: Sequence[str], limit: int) -> Sequence[RowMapping]:
    """Unassigned live tickets: highest tier first, then nearest deadline (the index's order
    for each state; at most ``limit`` of each, merged by the caller)."""
    stmt = (
        select(*_SUMMARY)
        .where(T.c.state.in_(states), T.c.assignee.is_(None))
        .order_by(T.c.tier_rank.desc(), T.c.due_at, T.c.ticket_id)
        .limit(limit)
    )
    return conn.execute(stmt).mappings().all()


def agent_tickets(
    conn: Connection, staff_id: str, states: Sequence[str], limit: int
) -> Sequence[RowMapping]:
    stmt = (
        select(*_SUMMARY)
        .where(T.c.assignee == staff_id, T.c.state.in_(states))
        .order_by(T.c.tier_rank.desc(), T.c.due_at, T.c.ticket_id)
        .limit(limit)
    )
    return conn.execute(stmt).mappings().all()


def live_ticket_ids_of(conn: Connection, staff_id: str, states: Sequence[str]) -> list[str]:
    stmt = select(T.c.ticket_id).where(T.c.assignee == staff_id, T.c.state.in_(states))
    return list(conn.execute(stmt.order_by(T.c.ticket_id)).scalars())


def queued_for(
    conn: Connection, skills: Sequence[str], states: Sequence[str], limit: int
) -> list[str]:
    """Queued tickets an agent with ``skills`` may take, in queue order."""
    stmt = (
        select(T.c.ticket_id)
        .where(
            T.c.state.in_(states),
            T.c.assignee.is_(None),
            (T.c.skill.is_(None)) | (T.c.skill.in_(list(skills) or [""])),
        )
        .order_by(T.c.tier_rank.desc(), T.c.due_at, T.c.ticket_id)
        .limit(limit)
    )
    return list(conn.execute(stmt).scalars())


def tickets_in_window(conn: Connection, since: datetime, until: datetime) -> Sequence[RowMapping]:
    stmt = select(T).where(T.c.opened_at >= since, T.c.opened_at < until)
    return conn.execute(stmt).mappings().all()


def live_backlog(conn: Connection, states: Sequence[str]) -> Sequence[RowMapping]:
    stmt = select(T.c.assignee, T.c.tier, func.count().label("n")).where(T.c.state.in_(states))
    return conn.execute(stmt.group_by(T.c.assignee, T.c.tier)).mappings().all()


# -- messages and events --------------------------------------------------------------------------


def insert_message(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(service_messages.insert(), values)


def messages_of(conn: Connection, ticket_id: str) -> Sequence[RowMapping]:
    m = service_messages
    stmt = select(m).where(m.c.ticket_id == ticket_id).order_by(m.c.created_at, m.c.message_id)
    return conn.execute(stmt).mappings().all()


def insert_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(service_events.insert(), rows)


def events_of(conn: Connection, ticket_id: str) -> Sequence[RowMapping]:
    e = service_events
    stmt = select(e).where(e.c.ticket_id == ticket_id).order_by(e.c.at, e.c.event_id)
    return conn.execute(stmt).mappings().all()


# -- clocks ---------------------------------------------------------------------------------------


def clocks_of(conn: Connection, ticket_id: str, *, lock: bool = False) -> Sequence[RowMapping]:
    stmt = select(C).where(C.c.ticket_id == ticket_id).order_by(C.c.metric)
    if lock:
        # A change of the ticket must not overwrite what a concurrent sweep just recorded.
        stmt = stmt.with_for_update()
    return conn.execute(stmt).mappings().all()


def upsert_clocks(conn: Connection, ticket_id: str, rows: list[dict[str, Any]]) -> None:
    """Replace the ticket's clock rows by ``rows`` (delete + insert: a ticket has at most 3)."""
    existing = {r["metric"] for r in clocks_of(conn, ticket_id)}
    for row in rows:
        if row["metric"] in existing:
            values = {k: v for k, v in row.items() if k not in ("ticket_id", "metric")}
            conn.execute(
                update(C)
                .where(C.c.ticket_id == ticket_id, C.c.metric == row["metric"])
                .values(**values)
            )
        else:
            conn.execute(C.insert().values(ticket_id=ticket_id, **row))


def insert_clocks(conn: Connection, ticket_id: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(C.insert(), [{"ticket_id": ticket_id, **row} for row in rows])


def due_clocks(conn: Connection, at: datetime, limit: int) -> Sequence[RowMapping]:
    """Clocks whose next warning or breach has come, with their ticket's routing fields.

    The clock rows are locked (PostgreSQL; skipping rows another sweep holds), so two sweeps
    running at once never record the same alert twice; SQLite serializes the writers.
    """
    stmt = (
        select(C, T.c.member_id, T.c.assignee, T.c.state, T.c.escalated_to)
        .join(T, T.c.ticket_id == C.c.ticket_id)
        .where(C.c.alert_at <= at)
        .order_by(C.c.alert_at, C.c.ticket_id, C.c.metric)
        .limit(limit)
        .with_for_update(of=C, skip_locked=True)
    )
    return conn.execute(stmt).mappings().all()


def save_swept(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Write the sweep's clock changes (one executemany)."""
    if not rows:
        return
    stmt = (
        update(C)
        .where(C.c.ticket_id == bindparam("k_ticket"), C.c.metric == bindparam("k_metric"))
        .values(
            warned=bindparam("warned"),
            breached=bindparam("breached"),
            alert_at=bindparam("alert_at"),
        )
    )
    conn.execute(stmt, rows)


def escalate(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    stmt = (
        update(T)
        .where(T.c.ticket_id == bindparam("k_ticket"))
        .values(
            escalated_to=bindparam("escalated_to"),
            priority=bindparam("priority"),
            updated_at=bindparam("updated_at"),
        )
    )
    conn.execute(stmt, rows)


def stopped_clocks(conn: Connection, ticket_ids: Sequence[str]) -> Sequence[RowMapping]:
    stmt = select(C.c.ticket_id, C.c.metric, C.c.met, C.c.breached).where(
        C.c.ticket_id.in_(list(ticket_ids))
    )
    return conn.execute(stmt).mappings().all()


# -- agents ---------------------------------------------------------------------------------------


def get_agent(conn: Connection, staff_id: str) -> RowMapping | None:
    return conn.execute(select(A).where(A.c.staff_id == staff_id)).mappings().first()


def upsert_agent(conn: Connection, values: dict[str, Any]) -> None:
    if get_agent(conn, values["staff_id"]) is None:
        conn.execute(A.insert().values(load=0, **values))
    else:
        conn.execute(update(A).where(A.c.staff_id == values["staff_id"]).values(**values))


def list_agents(conn: Connection) -> Sequence[RowMapping]:
    return conn.execute(select(A).order_by(A.c.staff_id)).mappings().all()


def free_agents(conn: Connection, skill: str | None) -> list[RowMapping]:
    """Active agents with room, least loaded relative to capacity first (ties: staff id)."""
    rows = conn.execute(select(A).where(A.c.active, A.c.load < A.c.capacity)).mappings().all()
    fit = [r for r in rows if skill is None or skill in (r["skills"] or [])]
    return sorted(fit, key=lambda r: (r["load"] / r["capacity"], r["staff_id"]))


def take_slot(conn: Connection, staff_id: str, *, guarded: bool) -> bool:
    """``load + 1`` for the agent; guarded: only while under capacity (one statement, so two
    concurrent assignments never overload anyone)."""
    cond = [A.c.staff_id == staff_id, A.c.active]
    if guarded:
        cond.append(A.c.load < A.c.capacity)
    done = conn.execute(update(A).where(and_(*cond)).values(load=A.c.load + 1))
    return done.rowcount == 1


def release_slot(conn: Connection, staff_id: str) -> None:
    conn.execute(update(A).where(A.c.staff_id == staff_id, A.c.load > 0).values(load=A.c.load - 1))


def deactivate_agent(conn: Connection, staff_id: str, at: datetime) -> bool:
    done = conn.execute(
        update(A)
        .where(A.c.staff_id == staff_id, A.c.active)
        .values(active=False, load=0, updated_at=at)
    )
    return done.rowcount == 1


# -- budgets and compensations --------------------------------------------------------------------


def consume_budget(
    conn: Connection, staff_id: str, day: str, value: int, limit: int | None
) -> bool:
    """``used + value`` of the staff member's day, guarded by ``limit`` in the same statement:
    two concurrent approvals can never pass it together."""
    conn.execute(insert_ignore(conn, service_budgets).values(staff_id=staff_id, day=day, used=0))
    b = service_budgets
    cond = [b.c.staff_id == staff_id, b.c.day == day]
    if limit is not None:
        cond.append(b.c.used + value <= limit)
    done = conn.execute(update(b).where(and_(*cond)).values(used=b.c.used + value))
    return done.rowcount == 1


def budget_used(conn: Connection, day: str) -> dict[str, int]:
    b = service_budgets
    rows = conn.execute(select(b.c.staff_id, b.c.used).where(b.c.day == day)).all()
    return {r[0]: int(r[1]) for r in rows}


def insert_compensation(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(service_compensations.insert(), values)


def get_compensation(conn: Connection, compensation_id: str) -> RowMapping | None:
    s = service_compensations
    return conn.execute(select(s).where(s.c.compensation_id == compensation_id)).mappings().first()


def compensation_by_key(conn: Connection, ticket_id: str, key: str) -> RowMapping | None:
    s = service_compensations
    stmt = select(s).where(s.c.ticket_id == ticket_id, s.c.request_key == key)
    return conn.execute(stmt).mappings().first()


def decide_compensation(
    conn: Connection, compensation_id: str, status: str, values: dict[str, Any]
) -> bool:
    """Move a pending compensation to ``status`` (guarded: only one decision ever wins)."""
    s = service_compensations
    done = conn.execute(
        update(s)
        .where(s.c.compensation_id == compensation_id, s.c.status == "pending_approval")
        .values(status=status, **values)
    )
    return done.rowcount == 1


def set_compensation(conn: Connection, compensation_id: str, values: dict[str, Any]) -> None:
    s = service_compensations
    conn.execute(update(s).where(s.c.compensation_id == compensation_id).values(**values))


def pending_approvals(conn: Connection, limit: int) -> Sequence[RowMapping]:
    s = service_compensations
    stmt = (
        select(s)
        .where(s.c.status == "pending_approval")
        .order_by(s.c.created_at, s.c.compensation_id)
        .limit(limit)
    )
    return conn.execute(stmt).mappings().all()


def compensations_in_window(
    conn: Connection, since: datetime, until: datetime
) -> Sequence[RowMapping]:
    s = service_compensations
    stmt = select(s).where(s.c.status == "paid", s.c.created_at >= since, s.c.created_at < until)
    return conn.execute(stmt).mappings().all()


# -- after-sales ----------------------------------------------------------------------------------


def get_after_sales(conn: Connection, request_id: str, *, lock: bool = False) -> RowMapping | None:
    s = service_after_sales
    stmt = select(s).where(s.c.request_id == request_id)
    if lock:
        stmt = stmt.with_for_update()
    return conn.execute(stmt).mappings().first()


def insert_after_sales(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(service_after_sales.insert(), values)


def update_after_sales(conn: Connection, request_id: str, values: dict[str, Any]) -> None:
    s = service_after_sales
    conn.execute(update(s).where(s.c.request_id == request_id).values(**values))


def requested_of_order(conn: Connection, order_id: str) -> Sequence[RowMapping]:
    s = service_after_sales
    stmt = select(s.c.lines, s.c.status).where(s.c.order_id == order_id)
    return conn.execute(stmt).mappings().all()


def late_steps(conn: Connection, at: datetime) -> Sequence[RowMapping]:
    s = service_after_sales
    stmt = select(s).where(s.c.step_due_at <= at).order_by(s.c.step_due_at).limit(10_000)
    return conn.execute(stmt).mappings().all()


def live_ticket_ids(conn: Connection, states: Sequence[str]) -> list[str]:
    stmt = select(T.c.ticket_id).where(T.c.state.in_(states)).order_by(T.c.ticket_id)
    return list(conn.execute(stmt).scalars())


# -- data rights (registered with privacy's erasure registry by jobs/holders.py) ------------------


def member_ticket_rows(conn: Connection, member_id: str) -> dict[str, list[dict[str, Any]]]:
    """The member's tickets with their messages, events and clocks, as rows."""
    ids = select(service_tickets.c.ticket_id).where(service_tickets.c.member_id == member_id)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, table in (
        ("tickets", service_tickets),
        ("messages", service_messages),
        ("events", service_events),
        ("clocks", service_clocks),
    ):
        query = select(table).where(table.c.ticket_id.in_(ids))
        out[name] = [dict(r) for r in conn.execute(query).mappings()]
    return out


def delete_member_tickets(conn: Connection, member_id: str) -> int:
    """Delete the member's tickets and everything hanging off them; the tickets deleted."""
    ids = select(service_tickets.c.ticket_id).where(service_tickets.c.member_id == member_id)
    for table in (service_messages, service_events, service_clocks):
        conn.execute(table.delete().where(table.c.ticket_id.in_(ids)))
    return int(
        conn.execute(
            service_tickets.delete().where(service_tickets.c.member_id == member_id)
        ).rowcount
    )


def rekey_member_tickets(conn: Connection, source: str, target: str) -> int:
    """Move the tickets (and their events) of ``source`` to ``target`` (an identity merge)."""
    conn.execute(
        update(service_events).where(service_events.c.member_id == source).values(member_id=target)
    )
    query = update(service_tickets).where(service_tickets.c.member_id == source)
    return int(conn.execute(query.values(member_id=target)).rowcount)
