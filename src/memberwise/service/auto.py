"""Automatic tickets: events (a complaint, a negative review, a downgrade notice, a failed
subscription payment) that match one of the program's ``service.auto`` rules open a ticket.

A rule is the program's rule language over :data:`memberwise.program.desk.AUTO_FIELDS` -- the
event's type, rating, price and channel and the member's tier, tier rank, CLV and churn risk at
that moment -- evaluated for a batch of events at once on DuckDB (the rule language's one
engine), so a thousand complaints cost one query per rule. Each (rule, event) opens at most one
ticket: the ticket's idempotency key is ``auto:<rule>:<event id>``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import ibis
import pyarrow as pa
from sqlalchemy import Connection

from memberwise.kit.errors import MemberwiseError
from memberwise.kit.lake import EventLake
from memberwise.kit.time import as_utc
from memberwise.membership import service as membership
from memberwise.membership.notices import GivenNotice
from memberwise.merchants.service import Complaint
from memberwise.predict import service as predict
from memberwise.privacy.schemas import SYSTEM, Principal
from memberwise.profiles.rules import FieldType, compile_rule, parse_rule
from memberwise.program.desk import AUTO_FIELDS, AutoRule, Channel, Priority, TicketKind
from memberwise.program.schemas import Program
from memberwise.service import service
from memberwise.service.schemas import TicketOpen

_ARROW = {FieldType.string: pa.string(), FieldType.number: pa.float64()}


def _facts(conn: Connection, program: Program, member_id: str) -> dict[str, Any]:
    tier = membership.tier_of(conn, member_id)
    names = [t.name for t in program.tiers]
    facts: dict[str, Any] = {
        "tier": tier,
        "tier_rank": float(names.index(tier)) if tier in names else 0.0,
        "clv_12m": None,
        "churn_risk": None,
    }
    try:
        found = predict.get_member_predictions(conn, member_id)
    except MemberwiseError:
        return facts
    if found.clv_12m_fen is not None:
        facts["clv_12m"] = found.clv_12m_fen / 100  # CNY, as the profile field
    facts["churn_risk"] = found.churn_risk
    return facts


def matching(rule: AutoRule, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Positions of ``rows`` (dicts of AUTO_FIELDS) the rule matches (unknown counts as no)."""
    if not rows:
        return []
    parsed = parse_rule(rule.name, rule.rule, AUTO_FIELDS)
    columns = {
        name: pa.array([row.get(name) for row in rows], type=_ARROW[kind])
        for name, kind in AUTO_FIELDS.items()
    }
    columns["_row"] = pa.array(range(len(rows)), type=pa.int64())
    con = ibis.duckdb.connect()
    try:
        table = ibis.memtable(pa.table(columns))
        expr = table.filter(compile_rule(parsed, table)).select("_row")
        return sorted(int(x) for x in con.to_pyarrow(expr)["_row"].to_pylist())
    finally:
        con.disconnect()


def open_for_events(
    conn: Connection,
    program: Program,
    events: Sequence[dict[str, Any]],
    *,
    actor: Principal = SYSTEM,
    at: datetime | None = None,
) -> list[str]:
    """Open the tickets the program's rules ask for; returns the ticket ids (a replayed event
    returns its first ticket). Events: ``event_id``, ``member_id``, ``type``, ``ts`` and any of
    ``rating``, ``price``, ``channel``, ``text``, ``order_id``. Events of unknown members are
    skipped."""
    opened: list[str] = []
    facts: dict[str, dict[str, Any]] = {}
    for rule in program.service.auto:
        batch = [e for e in events if e.get("type") == rule.event]
        rows = []
        for event in batch:
            member = str(event["member_id"])
            if member not in facts:
                facts[member] = _facts(conn, program, member)
            rows.append(
                {
                    **facts[member],
                    **{k: event.get(k) for k in ("type", "rating", "price", "channel")},
                }
            )
        for i in matching(rule, rows):
            event = batch[i]
            text = str(event.get("text") or "")
            subject = f"{rule.name}: {text[:80]}" if text else f"{rule.name}: {event['type']}"
            data = TicketOpen(
                member_id=str(event["member_id"]),
                channel=Channel.app,
                kind=rule.kind,
                priority=rule.priority,
                subject=subject,
                body=text[:20_000],
            )
            stamp: datetime | None = event.get("ts") or at
            when = as_utc(stamp) if stamp is not None else None
            try:
                ticket = service.open_ticket(
                    conn,
                    program,
                    data,
                    actor=actor,
                    at=when,
                    key=f"auto:{rule.name}:{event['event_id']}",
                    source="auto",
                )
            except MemberwiseError:
                continue  # an unknown member: nothing to open
            opened.append(ticket.ticket_id)
    return opened


def lake_events(
    lake: EventLake, types: Sequence[str], *, days: int, limit: int
) -> list[dict[str, Any]]:
    """The lake's events of ``types`` in the ``days`` before its latest such event (newest
    first, at most ``limit``), with the fields the rules read."""
    wanted = ", ".join("'" + t.replace("'", "''") + "'" for t in types) or "''"
    con = lake.connect()  # (a lake on an object store is registered on it)
    try:
        con.execute("SET TimeZone = 'UTC'")
        found = con.execute(
            f"""
            WITH e AS (SELECT * FROM ({lake.events_sql()}) WHERE type IN ({wanted}))
            SELECT event_id, member_id, type, ts, rating, price, channel, text FROM e
            WHERE ts >= (SELECT max(ts) FROM e) - INTERVAL {int(days)} DAY
            ORDER BY ts DESC, event_id LIMIT {int(limit)}
            """
        )
        names = [d[0] for d in found.description or []]
        return [dict(zip(names, r, strict=True)) for r in found.fetchall()]
    finally:
        con.close()


def since(events: Sequence[dict[str, Any]], at: datetime, hours: float) -> list[dict[str, Any]]:
    """The events of the last ``hours`` before ``at``, oldest first."""
    start = at - timedelta(hours=hours)
    return sorted(
        (e for e in events if as_utc(e["ts"]) >= start), key=lambda e: (e["ts"], e["event_id"])
    )


def complaint_ticket(program: Program) -> Callable[[Connection, Complaint], None]:
    """The desk's answer to a complaint of a ticket-tier member (black card first) about a
    kept-away merchant, for :data:`memberwise.merchants.service.COMPLAINT_HOOKS`: a high-priority
    complaint ticket, once per complaint event (a rebuild opens nothing twice)."""

    def open_for(conn: Connection, complaint: Complaint) -> None:
        text = complaint.text or ""
        data = TicketOpen(
            member_id=complaint.member_id,
            channel=Channel.app,
            kind=TicketKind.complaint,
            priority=Priority.high,
            subject=f"complaint about merchant {complaint.merchant_id}: {text[:60]}".strip(),
            body=text[:20_000],
            item_ids=[complaint.item_id] if complaint.item_id else [],
        )
        savepoint = conn.begin_nested()
        try:
            service.open_ticket(
                conn,
                program,
                data,
                actor=SYSTEM,
                at=as_utc(complaint.ts),
                key=f"merchant-complaint:{complaint.event_id}",
                source="auto",
            )
        except MemberwiseError:
            savepoint.rollback()  # a member unknown to the store: nothing to open
            return
        savepoint.commit()

    return open_for


def downgrade_notice_tickets(
    conn: Connection, program: Program, notices: Sequence[GivenNotice]
) -> None:
    """The desk's answer to downgrade notices, for
    :data:`memberwise.membership.notices.NOTICE_HOOKS`: each new notice is a
    ``downgrade_notice`` event for the program's ``service.auto`` rules (e.g. call a platinum
    member before they drop), once per notice (the event id names it)."""
    if not any(rule.event == "downgrade_notice" for rule in program.service.auto):
        return
    events = [
        {
            "event_id": f"{n.member_id}:{n.key}",
            "member_id": n.member_id,
            "type": "downgrade_notice",
            "ts": n.noticed_at,
            "text": f"{n.tier} will be downgraded to {n.to_tier} on {n.downgrade_on.date()}",
        }
        for n in notices
    ]
    open_for_events(conn, program, events)
