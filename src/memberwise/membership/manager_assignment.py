"""The automatic assignment of account managers: which tiers come with one, and giving each
member of those tiers a manager within the managers' capacity (after every build, grant and
change of managers)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from memberwise.membership import manager_repository, repository
from memberwise.program.benefits import BenefitKind
from memberwise.program.schemas import Program


def tiers_with_manager(program: Program) -> set[str]:
    """Tiers whose holders get a dedicated account manager."""
    names = {program.black_card.tier} if program.black_card is not None else set()
    for tier in program.tiers:
        if any(
            program.benefits[b].kind == BenefitKind.account_manager
            for b in tier.benefits
            if b in program.benefits
        ):
            names.add(tier.name)
    return names


def assign_managers(conn: Connection, program: Program, *, at: datetime) -> dict[str, int]:
    """Give every member of a managed tier a manager, keeping existing assignments; members of
    managers who left are reassigned; members who left the tier are released. Each goes to the
    active manager with the lowest load relative to capacity (ties: staff id), never above it."""
    managed_tiers = tiers_with_manager(program)
    wanted: set[str] = set()
    for tier in managed_tiers:
        wanted.update(repository.members_in_tier(conn, tier))
    managers = manager_repository.managers_with_load(conn)
    active = {m["staff_id"]: m for m in managers if m["active"]}
    current = manager_repository.assignments(conn)
    released = [m for m, s in current.items() if m not in wanted]
    orphaned = sorted(m for m, s in current.items() if m in wanted and s not in active)
    manager_repository.unassign(conn, released + orphaned)
    load = dict.fromkeys(active, 0)
    for m, s in current.items():
        if m in wanted and s in active:
            load[s] += 1
    todo = sorted(m for m in wanted if m not in current or m in orphaned)
    rows, unassigned = [], 0
    for member_id in todo:
        free = [s for s in active if load[s] < active[s]["capacity"]]
        if not free:
            unassigned += 1
            continue
        best = min(free, key=lambda s: (load[s] / active[s]["capacity"], s))
        load[best] += 1
        reason = "manager left; reassigned" if member_id in orphaned else "black-card member"
        rows.append({"member_id": member_id, "staff_id": best, "assigned_at": at, "reason": reason})
    manager_repository.assign(conn, rows)
    return {"assigned": len(rows), "released": len(released), "unassigned": unassigned}
