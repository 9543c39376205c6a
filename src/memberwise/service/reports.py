"""The desk's reports per agent, team or tier over a window: SLA attainment, first-contact
resolution, handle time, backlog, CSAT, and compensation paid against budget.

- SLA attainment: of the clocks of the window's tickets that have an outcome (stopped, or
  breached while running), the share met.
- First-contact resolution: of the resolved tickets, the share resolved with at most one staff
  reply and never reopened.
- Handle time: mean minutes from opening to resolution of the resolved tickets.
- Backlog: live tickets now (whenever opened).
- Compensation: fen paid in the window by the key's payers, against their daily budgets times
  the window's days (None when a role has no limit).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from memberwise.program.schemas import Program
from memberwise.service import repository
from memberwise.service.schemas import LIVE_STATES, ReportOut, ReportRow

QUEUE = "(queue)"


def _key_of(by: str, assignee: str | None, tier: str | None, teams: dict[str, str]) -> str:
    if by == "tier":
        return tier or "(none)"
    if assignee is None:
        return QUEUE
    return teams.get(assignee, assignee) if by == "team" else assignee


def report(
    conn: Connection, program: Program, *, by: str, since: datetime, until: datetime
) -> ReportOut:
    """The figures of every agent, team or tier (``by``) for tickets opened in the window."""
    agents = {r["staff_id"]: r for r in repository.list_agents(conn)}
    teams = {s: str(r["team"]) for s, r in agents.items()}
    tickets = repository.tickets_in_window(conn, since, until)
    acc: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "tickets": 0,
            "resolved": 0,
            "fcr": 0,
            "handle": 0.0,
            "met": 0,
            "breached": 0,
            "csat": [],
            "backlog": 0,
            "paid": 0,
        }
    )
    keys: dict[str, str] = {}
    for t in tickets:
        key = _key_of(by, t["assignee"], t["tier"], teams)
        keys[t["ticket_id"]] = key
        a = acc[key]
        a["tickets"] += 1
        if t["resolved_at"] is not None:
            a["resolved"] += 1
            a["handle"] += (t["resolved_at"] - t["opened_at"]).total_seconds() / 60
            if t["agent_replies"] <= 1 and t["reopened"] == 0:
                a["fcr"] += 1
        if t["csat"] is not None:
            a["csat"].append(int(t["csat"]))
    ids = list(keys)
    for start in range(0, len(ids), 1000):
        for c in repository.stopped_clocks(conn, ids[start : start + 1000]):
            key = keys[c["ticket_id"]]
            if c["breached"] or c["met"] is False:
                acc[key]["breached"] += 1
            elif c["met"]:
                acc[key]["met"] += 1
    for row in repository.live_backlog(conn, [s.value for s in LIVE_STATES]):
        acc[_key_of(by, row["assignee"], row["tier"], teams)]["backlog"] += int(row["n"])
    for comp in repository.compensations_in_window(conn, since, until):
        payer = comp["decided_by"]
        found = keys.get(comp["ticket_id"]) if by == "tier" else _key_of(by, payer, None, teams)
        acc[found or "(none)"]["paid"] += int(comp["value"])
    days = max(1, round((until - since).total_seconds() / 86400))
    budgets: dict[str, int | None] = {}
    for staff_id, agent in agents.items():
        rule = program.service.authority.get(agent["authority"])
        daily = rule.daily if rule is not None else None
        key = _key_of(by, staff_id, None, teams)
        if by == "tier":
            continue
        if key in budgets and budgets[key] is None:
            continue
        budgets[key] = None if daily is None else (budgets.get(key) or 0) + daily * days
    rows = []
    for key in sorted(acc):
        a = acc[key]
        outcomes = a["met"] + a["breached"]
        rows.append(
            ReportRow(
                key=key,
                tickets=a["tickets"],
                resolved=a["resolved"],
                backlog=a["backlog"],
                sla_met=a["met"],
                sla_breached=a["breached"],
                sla_attainment=round(a["met"] / outcomes, 4) if outcomes else None,
                first_contact_resolution=round(a["fcr"] / a["resolved"], 4)
                if a["resolved"]
                else None,
                mean_handle_minutes=round(a["handle"] / a["resolved"], 1)
                if a["resolved"]
                else None,
                csat=round(sum(a["csat"]) / len(a["csat"]), 2) if a["csat"] else None,
                compensation_paid=a["paid"],
                compensation_budget=budgets.get(key),
            )
        )
    return ReportOut(by=by, since=since, until=until, rows=rows)
