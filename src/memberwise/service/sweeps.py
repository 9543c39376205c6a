"""The SLA sweep and re-applying policies: what runs periodically over every live ticket (each
warning and breach recorded once, breaches escalated, late after-sales steps counted), apart from
the work on one ticket in :mod:`memberwise.service.service`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from memberwise.kit.ids import new_id
from memberwise.kit.time import as_utc, utcnow
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, Principal
from memberwise.program.desk import Priority
from memberwise.program.schemas import Program
from memberwise.service import repository, sla
from memberwise.service.schemas import (
    SweepOut,
)

# -- refusals ------------------------------------------------------------------------------------
from memberwise.service.service import LIVE, _clock, _load, apply_policy, calendar


def sweep(
    conn: Connection, program: Program, *, at: datetime | None = None, batch: int = 5000
) -> SweepOut:
    """Record the warnings and breaches that have come by ``at`` (each once), escalate breached
    tickets to the assignee's supervisor, and mark late after-sales steps. Reads only the clocks
    whose ``alert_at`` has come (an index range), so its cost follows what is due, not how many
    tickets are open."""
    at = sla.second(as_utc(at or utcnow()))
    warn_at = program.service.warn_at
    warnings = breaches = escalations = 0
    supervisors = {r["staff_id"]: r["supervisor_id"] for r in repository.list_agents(conn)}
    while True:
        rows = repository.due_clocks(conn, at, batch)
        if not rows:
            break
        saved: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        audits: list[dict[str, Any]] = []
        escalated: list[dict[str, Any]] = []
        for row in rows:
            clock = _clock(row)
            cal = calendar(program, clock.hours)
            checked, alerts = sla.check(clock, at, cal, warn_at)
            saved.append(
                {
                    "k_ticket": row["ticket_id"],
                    "k_metric": row["metric"],
                    "warned": checked.warned,
                    "breached": checked.breached,
                    "alert_at": sla.alert_at(checked, cal, warn_at),
                }
            )
            for alert in alerts:
                kind = f"sla.{alert.kind}"
                events.append(
                    {
                        "event_id": new_id(),
                        "ticket_id": row["ticket_id"],
                        "member_id": row["member_id"],
                        "kind": kind,
                        "metric": alert.metric,
                        "late_seconds": alert.late if alert.kind == "breach" else None,
                        "actor": SYSTEM.key_id,
                        "details": {"fraction": alert.fraction} if alert.fraction else None,
                        "at": at,
                    }
                )
                if alert.kind == "warning":
                    warnings += 1
                    continue
                breaches += 1
                audits.append(
                    privacy.audit_row(
                        SYSTEM,
                        "ticket.sla_breach",
                        "ticket",
                        row["ticket_id"],
                        member_id=row["member_id"],
                        details={"metric": alert.metric, "late_seconds": alert.late},
                    )
                )
                if row["escalated_to"] is None:
                    to = supervisors.get(row["assignee"]) if row["assignee"] else None
                    escalated.append(
                        {
                            "k_ticket": row["ticket_id"],
                            "escalated_to": to or "supervisors",
                            "priority": Priority.urgent.value,
                            "updated_at": at,
                        }
                    )
                    events.append(
                        {
                            **events[-1],
                            "event_id": new_id(),
                            "kind": "escalated",
                            "late_seconds": None,
                            "details": {"to": to or "supervisors"},
                        }
                    )
                    escalations += 1
        repository.save_swept(conn, saved)
        repository.escalate(conn, list({e["k_ticket"]: e for e in escalated}.values()))
        repository.insert_events(conn, events)
        privacy.audit_many(conn, audits)
        if len(rows) < batch:
            break
    late = _late_steps(conn, at)
    return SweepOut(warnings=warnings, breaches=breaches, escalations=escalations, late_steps=late)


def _late_steps(conn: Connection, at: datetime) -> int:
    rows = repository.late_steps(conn, at)
    events = []
    for row in rows:
        events.append(
            {
                "event_id": new_id(),
                "ticket_id": row["ticket_id"],
                "member_id": row["member_id"],
                "kind": "after_sales.late",
                "metric": row["step"],
                "late_seconds": int((at - row["step_due_at"]).total_seconds()),
                "actor": SYSTEM.key_id,
                "details": {"request_id": row["request_id"]},
                "at": at,
            }
        )
        repository.update_after_sales(conn, row["request_id"], {"step_due_at": None})
    repository.insert_events(conn, events)
    return len(rows)


def reapply_policies(
    conn: Connection, program: Program, *, actor: Principal = SYSTEM, at: datetime | None = None
) -> int:
    """Move every live ticket's clocks to the policies of ``program`` (after an operator
    changed the program's SLAs): each clock keeps its elapsed time, running or paused, under
    the new target and calendar. Returns how many tickets changed."""
    at = sla.second(as_utc(at or utcnow()))
    changed = 0
    for ticket_id in repository.live_ticket_ids(conn, LIVE):
        ticket = _load(conn, program, ticket_id, actor)
        apply_policy(ticket, at)
        if ticket.clocks_changed:
            changed += 1
        ticket.save(at)
    return changed
