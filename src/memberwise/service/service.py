"""The service desk's tickets: opening, the thread, states, reopening, merging, reclassifying,
SLA clocks and their sweep, the queue, agents and hand-overs, CSAT.

States run new -> open -> pending_member | pending_third_party -> open ... -> resolved ->
closed; a resolved (or closed) ticket may be reopened within the program's ``reopen_days``; a
duplicate is merged into another ticket. Every change writes a ticket event (the timeline and
the reports' source) and an audit row (who, what, when, why). Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping

from memberwise.kit.errors import Conflict, InvalidRequest, NotFound
from memberwise.kit.ids import new_id
from memberwise.kit.time import as_utc, utcnow
from memberwise.ledger import orders
from memberwise.ledger import service as ledger
from memberwise.membership import service as membership
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, Principal, Role
from memberwise.program.benefits import AccountManager, PriorityService
from memberwise.program.desk import Hours, Metric, SlaPolicy, TicketKind
from memberwise.program.schemas import Program
from memberwise.service import repository, routing, sla
from memberwise.service.calendar import Calendar
from memberwise.service.schemas import (
    LIVE_STATES,
    ClockOut,
    CsatIn,
    EventOut,
    MessageIn,
    MessageOut,
    QueueOut,
    TicketChange,
    TicketOpen,
    TicketOut,
    TicketState,
    TicketSummary,
)

# -- refusals ------------------------------------------------------------------------------------


class TicketNotFound(NotFound):
    code = "ticket_not_found"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class ReopenWindowClosed(Conflict):
    code = "reopen_window_closed"


class NotSameMember(InvalidRequest):
    code = "not_same_member"


class OrderNotOfMember(InvalidRequest):
    code = "order_not_of_member"


class TicketKeyReused(Conflict):
    code = "idempotency_key_reused"


#: Far in the future: the deadline of a ticket without running clocks (sorts last in the queue).
NO_DEADLINE = datetime(2999, 1, 1, tzinfo=UTC)
LIVE = [s.value for s in LIVE_STATES]
_QUEUE_STATES = [TicketState.new.value, TicketState.open.value]

# -- calendars and clocks ------------------------------------------------------------------------

_calendars: dict[tuple[Hours, str, int], tuple[object, Calendar]] = {}


def calendar(program: Program, hours: Hours) -> Calendar:
    """The program's calendar for ``hours`` (built once per program version)."""
    settings = program.service.calendar
    key = (hours, program.display_timezone, id(settings))
    hit = _calendars.get(key)
    if hit is not None and hit[0] is settings:
        return hit[1]
    if len(_calendars) > 64:
        _calendars.clear()
    made = Calendar(hours, settings, program.display_timezone)
    _calendars[key] = (settings, made)
    return made


def _clock(row: RowMapping | dict[str, Any]) -> sla.Clock:
    return sla.Clock(
        metric=row["metric"],
        target=int(row["target_seconds"]),
        hours=Hours(row["hours"]),
        elapsed=int(row["elapsed_seconds"]),
        running=bool(row["running"]),
        since=row["since"],
        stopped=bool(row["stopped"]),
        warned=int(row["warned"]),
        breached=bool(row["breached"]),
    )


def _clock_row(program: Program, clock: sla.Clock, at: datetime) -> dict[str, Any]:
    cal = calendar(program, clock.hours)
    return {
        "metric": clock.metric,
        "target_seconds": clock.target,
        "hours": clock.hours.value,
        "elapsed_seconds": clock.elapsed,
        "running": clock.running,
        "since": clock.since,
        "stopped": clock.stopped,
        "warned": clock.warned,
        "breached": clock.breached,
        "alert_at": sla.alert_at(clock, cal, program.service.warn_at),
        "stopped_at": at if clock.stopped else None,
        "met": sla.met(clock) if clock.stopped else None,
    }


def _deadline(program: Program, clocks: Sequence[sla.Clock]) -> datetime:
    """The nearest instant a running clock passes its target (the queue's order)."""
    due = [
        calendar(program, c.hours).add(c.since, max(0, c.target + 1 - c.elapsed))
        for c in clocks
        if c.running and c.since is not None
    ]
    return min(due, default=NO_DEADLINE)


class _Ticket:
    """A ticket being changed in one unit of work: its row, clocks, events and audit rows."""

    def __init__(
        self,
        conn: Connection,
        program: Program,
        row: RowMapping | dict[str, Any],
        actor: Principal,
        clocks: dict[str, sla.Clock] | None = None,
    ):
        self.conn = conn
        self.program = program
        self.row = dict(row)
        self.actor = actor
        self.clocks: dict[str, sla.Clock] = (
            clocks
            if clocks is not None
            else {
                r["metric"]: _clock(r)
                for r in repository.clocks_of(conn, row["ticket_id"], lock=True)
            }
        )
        self.changes: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.audits: list[dict[str, Any]] = []
        self.clocks_changed = False

    @property
    def id(self) -> str:
        return str(self.row["ticket_id"])

    def set(self, **values: Any) -> None:
        self.row.update(values)
        self.changes.update(values)

    def event(
        self,
        kind: str,
        at: datetime,
        *,
        metric: str | None = None,
        late: int | None = None,
        details: dict[str, Any] | None = None,
        reason: str | None = None,
        audit: bool = True,
    ) -> None:
        self.events.append(
            {
                "event_id": new_id(),
                "ticket_id": self.id,
                "member_id": self.row["member_id"],
                "kind": kind,
                "metric": metric,
                "late_seconds": late,
                "actor": self.actor.staff_id or self.actor.key_id,
                "details": details,
                "at": at,
            }
        )
        if audit:
            row = privacy.audit_row(
                self.actor,
                f"ticket.{kind}",
                "ticket",
                self.id,
                member_id=self.row["member_id"],
                reason=reason,
                details=details,
            )
            self.audits.append(row)

    def cal(self, clock: sla.Clock) -> Calendar:
        return calendar(self.program, clock.hours)

    def update_clock(self, clock: sla.Clock, at: datetime) -> None:
        """Store a changed clock, recording a breach that happened before the change (a response
        after the target, a target lowered below the elapsed time)."""
        checked, alerts = sla.check(clock, at, self.cal(clock), self.program.service.warn_at)
        for alert in alerts:
            if alert.kind == "breach":
                self.event("sla.breach", at, metric=alert.metric, late=alert.late)
        self.clocks[clock.metric] = checked
        self.clocks_changed = True

    def pause_all(self, at: datetime) -> None:
        for clock in list(self.clocks.values()):
            if clock.running:
                self.update_clock(sla.pause(clock, at, self.cal(clock)), at)

    def resume_all(self, at: datetime) -> None:
        for clock in list(self.clocks.values()):
            if not clock.running and not clock.stopped:
                self.update_clock(sla.resume(clock, at), at)

    def stop(self, metric: str, at: datetime) -> None:
        clock = self.clocks.get(metric)
        if clock is not None and not clock.stopped:
            self.update_clock(sla.stop(clock, at, self.cal(clock)), at)

    def save(self, at: datetime) -> None:
        if self.clocks_changed:
            rows = [_clock_row(self.program, c, at) for c in self.clocks.values()]
            repository.upsert_clocks(self.conn, self.id, rows)
            self.set(due_at=_deadline(self.program, list(self.clocks.values())))
        if self.changes:
            self.set(updated_at=at)
            repository.update_ticket(self.conn, self.id, self.changes)
            self.changes = {}
        repository.insert_events(self.conn, self.events)
        privacy.audit_many(self.conn, self.audits)
        self.events, self.audits, self.clocks_changed = [], [], False


def _load(conn: Connection, program: Program, ticket_id: str, actor: Principal) -> _Ticket:
    row = repository.get_ticket(conn, ticket_id, lock=True)
    if row is None:
        raise TicketNotFound(f"no ticket {ticket_id!r}")
    return _Ticket(conn, program, row, actor)


# -- reading -------------------------------------------------------------------------------------


def _clock_out(row: RowMapping | dict[str, Any], at: datetime, program: Program) -> ClockOut:
    clock = _clock(row)
    return ClockOut(
        metric=clock.metric,
        target_seconds=clock.target,
        hours=clock.hours.value,
        elapsed_seconds=clock.elapsed_at(sla.second(at), calendar(program, clock.hours)),
        running=clock.running,
        stopped=clock.stopped,
        breached=clock.breached,
        met=row["met"],
        alert_at=row["alert_at"],
    )


def _summary(row: RowMapping | dict[str, Any]) -> TicketSummary:
    values = {k: row[k] for k in TicketSummary.model_fields}
    if values["due_at"] is not None and values["due_at"].year >= 2999:
        values["due_at"] = None
    return TicketSummary.model_validate(values)


def _ticket_out(
    program: Program,
    row: RowMapping | dict[str, Any],
    clocks: Sequence[RowMapping | dict[str, Any]],
    messages: Sequence[RowMapping | dict[str, Any]],
    events: Sequence[RowMapping | dict[str, Any]],
    *,
    at: datetime,
    staff: bool,
) -> TicketOut:
    return TicketOut(
        **_summary(row).model_dump(),
        order_id=row["order_id"],
        item_ids=list(row["item_ids"] or []),
        source=row["source"],
        skill=row["skill"],
        policy=row["policy"],
        pending_reason=row["pending_reason"],
        merged_into=row["merged_into"],
        agent_replies=row["agent_replies"],
        reopened=row["reopened"],
        csat=row["csat"],
        first_response_at=row["first_response_at"],
        resolved_at=row["resolved_at"],
        closed_at=row["closed_at"],
        clocks=[_clock_out(c, at, program) for c in clocks],
        messages=[
            MessageOut.model_validate(dict(m)) for m in messages if staff or not m["internal"]
        ],
        events=[EventOut.model_validate(dict(e)) for e in events],
    )


def get_ticket(
    conn: Connection,
    program: Program,
    ticket_id: str,
    *,
    staff: bool = True,
    at: datetime | None = None,
) -> TicketOut:
    """A ticket with its clocks, thread and timeline (internal notes for staff only).

    Raises TicketNotFound.
    """
    row = repository.get_ticket(conn, ticket_id)
    if row is None:
        raise TicketNotFound(f"no ticket {ticket_id!r}")
    return _ticket_out(
        program,
        row,
        repository.clocks_of(conn, ticket_id),
        repository.messages_of(conn, ticket_id),
        repository.events_of(conn, ticket_id),
        at=as_utc(at or utcnow()),
        staff=staff,
    )


def member_tickets(conn: Connection, member_id: str, *, limit: int) -> list[TicketSummary]:
    return [_summary(r) for r in repository.member_tickets(conn, member_id, limit)]


def queue(conn: Connection, *, limit: int) -> QueueOut:
    """The unassigned live tickets, highest tier first, then nearest deadline."""
    return QueueOut(items=[_summary(r) for r in repository.queue(conn, _QUEUE_STATES, limit)])


def agent_queue(conn: Connection, staff_id: str, *, limit: int) -> QueueOut:
    """An agent's live tickets, highest tier first, then nearest deadline."""
    rows = repository.agent_tickets(conn, staff_id, LIVE, limit)
    return QueueOut(items=[_summary(r) for r in rows])


# -- opening -------------------------------------------------------------------------------------


def _tier_rank(program: Program, tier: str | None) -> int:
    names = [t.name for t in program.tiers]
    return names.index(tier) if tier in names else 0


def _targets(
    conn: Connection,
    program: Program,
    policy: SlaPolicy | None,
    member_id: str,
    at: datetime,
    held: Sequence[str] | None = None,
) -> dict[str, tuple[int, Hours]]:
    """Metric -> (target seconds, hours) for a new ticket: the policy's targets, with the first
    response capped by a ``priority_service`` benefit the member holds (its ``sla_minutes``)."""
    hours = policy.hours if policy is not None else Hours.business
    targets: dict[str, tuple[int, Hours]] = {}
    if policy is not None:
        for metric in Metric:
            minutes = policy.target(metric)
            if minutes is not None:
                targets[metric.value] = (minutes * 60, hours)
    if held is None:
        held = membership.entitlements(conn, program, member_id, at).benefits
    caps = [
        b.sla_minutes * 60
        for name in held
        if isinstance(b := program.benefits.get(name), PriorityService)
    ]
    if caps:
        current = targets.get(Metric.first_response.value, (10**12, hours))[0]
        targets[Metric.first_response.value] = (min(current, min(caps)), hours)
    return targets


def _check_order(conn: Connection, order_id: str, member_id: str) -> None:
    order = orders.get(conn, order_id)
    if order.member_id != member_id:
        raise OrderNotOfMember(f"order {order_id!r} is not an order of member {member_id!r}")


def open_ticket(
    conn: Connection,
    program: Program,
    data: TicketOpen,
    *,
    actor: Principal,
    at: datetime | None = None,
    key: str | None = None,
    source: str | None = None,
) -> TicketOut:
    """Open a ticket, start its clocks and route it. With ``key``, a retry returns the first
    ticket. Raises MemberUnknown, OrderNotFound, OrderNotOfMember, TicketKeyReused."""
    at = sla.second(as_utc(at or utcnow()))
    if key is not None:
        found = repository.ticket_by_key(conn, data.member_id, key)
        if found is not None:
            if (found["subject"], found["kind"]) != (data.subject, data.kind.value):
                raise TicketKeyReused("this Idempotency-Key opened another ticket; use a new key")
            return get_ticket(conn, program, found["ticket_id"], at=at)
    ledger.member_exists(conn, data.member_id)
    if data.order_id is not None:
        _check_order(conn, data.order_id, data.member_id)
    # A member without a tier row yet (before their first build) is on the ladder's floor.
    floor = program.tiers[0].name if program.tiers else None
    held = membership.entitlements(conn, program, data.member_id, at)
    tier = held.tier or floor
    policy = program.service.policy_for(tier, data.kind)
    targets = _targets(conn, program, policy, data.member_id, at, held.benefits)
    clocks = [
        sla.start(metric, target, hours, at)
        for metric, (target, hours) in targets.items()
        if metric != Metric.next_response.value
    ]
    ticket_id = new_id()
    source = source or ("member" if actor.role is Role.platform else "staff")
    row = {
        "ticket_id": ticket_id,
        "member_id": data.member_id,
        "channel": data.channel.value,
        "kind": data.kind.value,
        "priority": data.priority.value,
        "tier": tier,
        "tier_rank": _tier_rank(program, tier),
        "state": TicketState.new.value,
        "pending_reason": None,
        "subject": data.subject,
        "order_id": data.order_id,
        "item_ids": list(data.item_ids),
        "source": source,
        "skill": program.service.skills.get(data.kind),
        "assignee": None,
        "escalated_to": None,
        "policy": policy.name if policy is not None else None,
        "due_at": _deadline(program, clocks),
        "merged_into": None,
        "agent_replies": 0,
        "reopened": 0,
        "csat": None,
        "csat_comment": None,
        "open_key": key,
        "opened_by": actor.staff_id or actor.key_id,
        "opened_at": at,
        "first_response_at": None,
        "resolved_at": None,
        "closed_at": None,
        "updated_at": at,
    }
    clock_rows = [_clock_row(program, c, at) for c in clocks]
    message = {
        "message_id": new_id(),
        "ticket_id": ticket_id,
        "author_kind": "member",
        "author": data.member_id,
        "internal": False,
        "body": data.body,
        "created_at": at,
    }
    ticket = _Ticket(conn, program, row, actor, clocks={c.metric: c for c in clocks})
    details = {
        "kind": data.kind.value,
        "channel": data.channel.value,
        "tier": tier,
        "policy": row["policy"],
        "targets": {m: t for m, (t, _) in targets.items()},
    }
    ticket.event("opened", at, details=details)
    managed = any(isinstance(program.benefits.get(b), AccountManager) for b in held.benefits) or (
        program.black_card is not None and tier == program.black_card.tier
    )
    _route(ticket, at, managed=managed)
    # The routed row is inserted as it stands (one INSERT, no UPDATE after it).
    repository.insert_ticket(conn, ticket.row)
    ticket.changes = {}
    repository.insert_clocks(conn, ticket_id, clock_rows)
    if data.body:
        repository.insert_message(conn, message)
    events = list(ticket.events)
    ticket.save(at)
    return _ticket_out(
        program,
        ticket.row,
        clock_rows,
        [message] if data.body else [],
        events,
        at=at,
        staff=True,
    )


def _route(ticket: _Ticket, at: datetime, *, managed: bool = True) -> None:
    route = routing.choose(
        ticket.conn,
        ticket.program,
        ticket.row["member_id"],
        ticket.row["skill"],
        at,
        managed=managed,
    )
    if route.assignee is None:
        ticket.event("queued", at, details={"skill": ticket.row["skill"]}, audit=False)
        return
    ticket.set(assignee=route.assignee)
    if ticket.row["state"] == TicketState.new.value:
        ticket.set(state=TicketState.open.value)
    ticket.event("assigned", at, details={"to": route.assignee, "why": route.reason})


def _release(ticket: _Ticket, at: datetime) -> None:
    """The ticket no longer counts against its assignee; the agent takes the next queued one."""
    assignee = ticket.row["assignee"]
    if assignee is None:
        return
    repository.release_slot(ticket.conn, assignee)
    dispatch(ticket.conn, ticket.program, assignee, at=at, exclude=ticket.id)


def dispatch(
    conn: Connection,
    program: Program,
    staff_id: str,
    *,
    at: datetime,
    exclude: str | None = None,
) -> list[str]:
    """Give an agent queued tickets (queue order, their skills) while they have room."""
    taken: list[str] = []
    agent = repository.get_agent(conn, staff_id)
    if agent is None or not agent["active"]:
        return taken
    room = int(agent["capacity"]) - int(agent["load"])
    if room <= 0:
        return taken
    for ticket_id in repository.queued_for(conn, agent["skills"] or [], _QUEUE_STATES, room + 1):
        if ticket_id == exclude or len(taken) >= room:
            continue
        if not repository.take_slot(conn, staff_id, guarded=True):
            break
        ticket = _load(conn, program, ticket_id, SYSTEM)
        ticket.set(assignee=staff_id)
        if ticket.row["state"] == TicketState.new.value:
            ticket.set(state=TicketState.open.value)
        ticket.event("assigned", at, details={"to": staff_id, "why": "dispatched from queue"})
        ticket.save(at)
        taken.append(ticket_id)
    return taken


# -- the thread ----------------------------------------------------------------------------------


def add_message(
    conn: Connection,
    program: Program,
    ticket_id: str,
    data: MessageIn,
    *,
    actor: Principal,
    at: datetime | None = None,
) -> TicketOut:
    """A message in the thread: from the member (through the platform) or from staff; a staff
    note (``internal``) moves no clock. A staff reply stops the first/next response clocks; a
    member's message ends a pending-on-member pause and starts the next-response clock.

    Raises TicketNotFound, InvalidTransition (the ticket is closed or merged).
    """
    at = sla.second(as_utc(at or utcnow()))
    ticket = _load(conn, program, ticket_id, actor)
    state = TicketState(ticket.row["state"])
    if state in (TicketState.closed, TicketState.merged):
        raise InvalidTransition(f"ticket {ticket_id} is {state.value}; open a new one")
    from_member = actor.role is Role.platform
    if from_member and data.internal:
        raise InvalidRequest("members cannot write internal notes")
    repository.insert_message(
        conn,
        {
            "message_id": new_id(),
            "ticket_id": ticket_id,
            "author_kind": "member" if from_member else "agent",
            "author": ticket.row["member_id"] if from_member else (actor.staff_id or actor.key_id),
            "internal": data.internal,
            "body": data.body,
            "created_at": at,
        },
    )
    if data.internal:
        ticket.event("note", at, audit=False)
    elif from_member:
        _member_wrote(ticket, state, at)
    else:
        _staff_replied(ticket, state, at)
    ticket.save(at)
    return get_ticket(conn, program, ticket_id, staff=not from_member, at=at)


def _member_wrote(ticket: _Ticket, state: TicketState, at: datetime) -> None:
    ticket.event("member_message", at, audit=False)
    if state is TicketState.pending_member:
        ticket.set(state=TicketState.open.value, pending_reason=None)
        ticket.resume_all(at)
    first = ticket.clocks.get(Metric.first_response.value)
    answered = first is None or first.stopped
    policy = ticket.program.service.policy_for(ticket.row["tier"], TicketKind(ticket.row["kind"]))
    target = policy.target(Metric.next_response) if policy is not None else None
    if answered and target is not None and state not in (TicketState.resolved, TicketState.closed):
        current = ticket.clocks.get(Metric.next_response.value)
        if current is None or current.stopped:
            clock = sla.start(Metric.next_response.value, target * 60, policy.hours, at)  # type: ignore[union-attr]
            ticket.clocks[clock.metric] = clock
            ticket.clocks_changed = True


def _staff_replied(ticket: _Ticket, state: TicketState, at: datetime) -> None:
    replies = int(ticket.row["agent_replies"]) + 1
    ticket.set(agent_replies=replies)
    if ticket.row["first_response_at"] is None:
        ticket.set(first_response_at=at)
    ticket.stop(Metric.first_response.value, at)
    ticket.stop(Metric.next_response.value, at)
    if state is TicketState.new:
        ticket.set(state=TicketState.open.value)
    ticket.event("agent_reply", at, audit=False)


# -- states --------------------------------------------------------------------------------------

_ALLOWED: dict[TicketState, set[TicketState]] = {
    TicketState.new: {
        TicketState.open,
        TicketState.pending_member,
        TicketState.pending_third_party,
        TicketState.resolved,
    },
    TicketState.open: {
        TicketState.pending_member,
        TicketState.pending_third_party,
        TicketState.resolved,
    },
    TicketState.pending_member: {
        TicketState.open,
        TicketState.pending_third_party,
        TicketState.resolved,
    },
    TicketState.pending_third_party: {
        TicketState.open,
        TicketState.pending_member,
        TicketState.resolved,
    },
    TicketState.resolved: {TicketState.closed},
    TicketState.closed: set(),
    TicketState.merged: set(),
}


def set_state(
    conn: Connection,
    program: Program,
    ticket_id: str,
    target: TicketState,
    *,
    reason: str = "",
    actor: Principal,
    at: datetime | None = None,
) -> TicketOut:
    """Move a ticket to ``target``: pending states the program lists pause the clocks (the
    reason recorded), leaving them resumes them, resolving stops them for good.

    Raises TicketNotFound, InvalidTransition (use reopen / merge for those moves).
    """
    at = sla.second(as_utc(at or utcnow()))
    ticket = _load(conn, program, ticket_id, actor)
    _transition(ticket, target, reason, at)
    ticket.save(at)
    return get_ticket(conn, program, ticket_id, at=at)


def _transition(ticket: _Ticket, target: TicketState, reason: str, at: datetime) -> None:
    state = TicketState(ticket.row["state"])
    if target not in _ALLOWED[state]:
        hint = " (use reopen)" if state in (TicketState.resolved, TicketState.closed) else ""
        raise InvalidTransition(
            f"ticket {ticket.id} is {state.value}; cannot go to {target.value}{hint}"
        )
    if target.value.startswith("pending") and not reason:
        raise InvalidRequest("say what the ticket is waiting for (reason)")
    pauses = set(ticket.program.service.pause_on)
    ticket.set(state=target.value, pending_reason=reason or None)
    if target is TicketState.resolved:
        for metric in list(ticket.clocks):
            ticket.stop(metric, at)
        ticket.set(resolved_at=at, pending_reason=None)
        _release(ticket, at)
        # The platform asks the member for their satisfaction (POST .../csat) on resolution.
        ticket.event("csat_asked", at, audit=False)
    elif target is TicketState.closed:
        ticket.set(closed_at=at)
    elif target.value in pauses:
        ticket.pause_all(at)
    elif state.value in pauses:
        ticket.resume_all(at)
    ticket.event(
        "state", at, details={"from": state.value, "to": target.value}, reason=reason or None
    )


def reopen(
    conn: Connection,
    program: Program,
    ticket_id: str,
    *,
    reason: str,
    actor: Principal,
    at: datetime | None = None,
) -> TicketOut:
    """Reopen a resolved (or closed) ticket within the window: the resolution clock goes on
    from where it stopped, and the ticket goes back to its agent (or to routing).

    Raises TicketNotFound, InvalidTransition, ReopenWindowClosed.
    """
    at = sla.second(as_utc(at or utcnow()))
    ticket = _load(conn, program, ticket_id, actor)
    state = TicketState(ticket.row["state"])
    if state not in (TicketState.resolved, TicketState.closed):
        raise InvalidTransition(f"ticket {ticket_id} is {state.value}, not resolved")
    window = timedelta(days=program.service.reopen_days)
    if at > ticket.row["resolved_at"] + window:
        raise ReopenWindowClosed(
            f"ticket {ticket_id} was resolved more than {program.service.reopen_days} days ago; "
            "open a new ticket"
        )
    ticket.set(
        state=TicketState.open.value,
        reopened=int(ticket.row["reopened"]) + 1,
        resolved_at=None,
        closed_at=None,
    )
    resolution = ticket.clocks.get(Metric.resolution.value)
    if resolution is not None:
        ticket.update_clock(sla.reopen(resolution, at), at)
    assignee = ticket.row["assignee"]
    agent = repository.get_agent(conn, assignee) if assignee else None
    if agent is not None and agent["active"]:
        repository.take_slot(conn, assignee, guarded=False)
    else:
        ticket.set(assignee=None)
        _route(ticket, at)
    ticket.event("reopened", at, reason=reason)
    ticket.save(at)
    return get_ticket(conn, program, ticket_id, at=at)


def merge(
    conn: Connection,
    program: Program,
    ticket_id: str,
    into: str,
    *,
    actor: Principal,
    at: datetime | None = None,
) -> TicketOut:
    """Merge a duplicate into another live ticket of the same member: the duplicate's clocks
    stop, its assignee is freed, both timelines say so. Returns the surviving ticket.

    Raises TicketNotFound, NotSameMember, InvalidTransition.
    """
    at = sla.second(as_utc(at or utcnow()))
    if ticket_id == into:
        raise InvalidTransition("a ticket cannot be merged into itself")
    # Lock both in id order so two merges of the same pair cannot deadlock.
    first, second_ = sorted([ticket_id, into])
    loaded = {t: _load(conn, program, t, actor) for t in (first, second_)}
    duplicate, target = loaded[ticket_id], loaded[into]
    if duplicate.row["member_id"] != target.row["member_id"]:
        raise NotSameMember("only tickets of the same member can be merged")
    for t in (duplicate, target):
        if t.row["state"] not in LIVE:
            raise InvalidTransition(f"ticket {t.id} is {t.row['state']}; only live tickets merge")
    for metric in list(duplicate.clocks):
        duplicate.stop(metric, at)
    duplicate.set(state=TicketState.merged.value, merged_into=into)
    _release(duplicate, at)
    duplicate.event("merged", at, details={"into": into})
    target.event("merged_from", at, details={"from": ticket_id})
    duplicate.save(at)
    target.save(at)
    return get_ticket(conn, program, into, at=at)


def change(
    conn: Connection,
    program: Program,
    ticket_id: str,
    data: TicketChange,
    *,
    actor: Principal,
    at: datetime | None = None,
) -> TicketOut:
    """Reclassify a ticket (kind, priority): the SLA policy is looked up again and each clock
    keeps its elapsed time -- running or paused -- under the new target and calendar.

    Raises TicketNotFound, InvalidTransition (not live).
    """
    at = sla.second(as_utc(at or utcnow()))
    ticket = _load(conn, program, ticket_id, actor)
    if ticket.row["state"] not in LIVE:
        raise InvalidTransition(f"ticket {ticket_id} is {ticket.row['state']}")
    if data.priority is not None:
        ticket.set(priority=data.priority.value)
    if data.kind is not None and data.kind.value != ticket.row["kind"]:
        ticket.set(kind=data.kind.value, skill=program.service.skills.get(data.kind))
        apply_policy(ticket, at)
    ticket.event("changed", at, details=data.model_dump(mode="json", exclude_none=True))
    ticket.save(at)
    return get_ticket(conn, program, ticket_id, at=at)


def apply_policy(ticket: _Ticket, at: datetime) -> None:
    """Move the ticket's clocks to the policy the program gives it now (elapsed time kept)."""
    program = ticket.program
    policy = program.service.policy_for(ticket.row["tier"], TicketKind(ticket.row["kind"]))
    targets = _targets(ticket.conn, program, policy, ticket.row["member_id"], at)
    for metric, clock in list(ticket.clocks.items()):
        if metric not in targets or clock.stopped:
            continue
        target, hours = targets[metric]
        if (target, hours) == (clock.target, clock.hours):
            continue
        moved, undone = sla.change_policy(clock, at, ticket.cal(clock), target, hours)
        ticket.update_clock(moved, at)
        ticket.event(
            "policy",
            at,
            metric=metric,
            details={"target_seconds": target, "hours": hours.value, "breach_undone": undone},
        )
    name = policy.name if policy is not None else None
    if name != ticket.row["policy"]:
        ticket.set(policy=name)


def rate(
    conn: Connection,
    program: Program,
    ticket_id: str,
    data: CsatIn,
    *,
    actor: Principal,
    at: datetime | None = None,
) -> TicketOut:
    """The member's satisfaction with a resolved ticket (1-5), asked on resolution.

    Raises TicketNotFound, InvalidTransition (not resolved or closed).
    """
    at = sla.second(as_utc(at or utcnow()))
    ticket = _load(conn, program, ticket_id, actor)
    if ticket.row["state"] not in (TicketState.resolved.value, TicketState.closed.value):
        raise InvalidTransition("satisfaction is asked once the ticket is resolved")
    ticket.set(csat=data.score, csat_comment=data.comment or None)
    ticket.event("csat", at, details={"score": data.score})
    ticket.save(at)
    return get_ticket(conn, program, ticket_id, staff=False, at=at)


def export_member(conn: Connection, member_id: str) -> dict[str, list[dict[str, Any]]]:
    """Everything the desk holds about a member (tickets, their threads, events and clocks),
    for an access request."""
    return repository.member_ticket_rows(conn, member_id)


def forget_member(conn: Connection, member_id: str) -> int:
    """Erase the member's tickets with their threads (what they wrote and was written to them);
    compensations and after-sales requests are financial records, pseudonymised by privacy."""
    return repository.delete_member_tickets(conn, member_id)


def merge_member(conn: Connection, source: str, target: str) -> int:
    """Move ``source``'s tickets to ``target`` (an identity merge); the tickets moved."""
    return repository.rekey_member_tickets(conn, source, target)
