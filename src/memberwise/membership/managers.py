"""Account managers at run time: adding and removing managers, an operator's reassignment of a
member, a manager's members, a member's manager (the automatic assignment after a build is
:func:`memberwise.membership.manager_assignment.assign_managers`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from memberwise.kit.errors import InvalidRequest
from memberwise.kit.pagination import decode_cursor, encode_cursor
from memberwise.kit.time import utcnow
from memberwise.membership import manager_repository, repository
from memberwise.membership.manager_assignment import assign_managers, tiers_with_manager
from memberwise.membership.schemas import (
    ManagedMember,
    ManagerAssign,
    ManagerMembersOut,
    ManagerOut,
    MemberManagerOut,
)
from memberwise.membership.service import (
    ManagerFull,
    ManagerNotFound,
    NotManaged,
    NotServiceStaff,
)
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, Principal, Role
from memberwise.program.schemas import Program


def add_manager(
    conn: Connection, program: Program, staff_id: str, capacity: int, *, actor: Principal = SYSTEM
) -> dict[str, int]:
    """Make a service staff member an account manager with ``capacity`` members."""
    staff = next((s for s in privacy.list_staff(conn) if s.staff_id == staff_id), None)
    if staff is None:
        raise ManagerNotFound(
            f"no staff member {staff_id}; create them with `memberwise staff create`"
        )
    if staff.role is not Role.service:
        raise NotServiceStaff(
            f"{staff_id} has role {staff.role.value}; account managers have the service role"
        )
    if capacity < 1:
        raise InvalidRequest("capacity must be at least 1")
    now = utcnow()
    manager_repository.upsert_manager(conn, staff_id, capacity, now)
    privacy.audit(conn, actor, "manager.add", "staff", staff_id, details={"capacity": capacity})
    return assign_managers(conn, program, at=now)


def remove_manager(
    conn: Connection, program: Program, staff_id: str, *, actor: Principal = SYSTEM
) -> dict[str, int]:
    """A manager leaves: their members are reassigned to the others at once."""
    now = utcnow()
    if not manager_repository.deactivate_manager(conn, staff_id, now):
        raise ManagerNotFound(f"{staff_id} is not an active account manager")
    privacy.audit(conn, actor, "manager.remove", "staff", staff_id)
    return assign_managers(conn, program, at=now)


def reassign_manager(
    conn: Connection,
    program: Program,
    member_id: str,
    data: ManagerAssign,
    *,
    at: datetime,
    actor: Principal = SYSTEM,
) -> MemberManagerOut:
    """Give the member account manager ``data.staff_id`` (an operator's or service lead's
    decision; :func:`assign_managers` keeps it from then on), with an audit row.

    Idempotent: the member's current manager again changes nothing. Raises NotManaged (the
    member's tier has no account manager), ManagerNotFound (not an active manager) and
    ManagerFull (at capacity).
    """
    tier = repository.tier_name(conn, member_id)
    if tier not in tiers_with_manager(program):
        raise NotManaged(
            f"the member's tier ({tier or 'none'}) comes with no account manager in program "
            f"{program.name!r}"
        )
    manager = manager_repository.get_manager(conn, data.staff_id)
    if manager is None or not manager["active"]:
        raise ManagerNotFound(f"{data.staff_id} is not an active account manager")
    current = manager_repository.manager_of(conn, member_id)
    if current is None or current["staff_id"] != data.staff_id:
        if manager["members"] >= manager["capacity"]:
            raise ManagerFull(
                f"{data.staff_id} already looks after {manager['members']} members, their capacity",
                details={"capacity": manager["capacity"]},
            )
        row = {"member_id": member_id, "staff_id": data.staff_id, "assigned_at": at}
        manager_repository.assign(conn, [row | {"reason": data.reason}])
        privacy.audit(
            conn,
            actor,
            "manager.reassign",
            "member",
            member_id,
            member_id=member_id,
            details={
                "from": current["staff_id"] if current is not None else None,
                "to": data.staff_id,
                "reason": data.reason,
            },
        )
        current = manager_repository.manager_of(conn, member_id)
    assert current is not None
    return MemberManagerOut(
        member_id=member_id,
        staff_id=current["staff_id"],
        name=current["name"],
        assigned_at=current["assigned_at"],
        reason=current["reason"],
    )


def managed_members(
    conn: Connection, staff_id: str, *, after: str | None, limit: int
) -> ManagerMembersOut:
    cursor = decode_cursor(after)  # a bad cursor is refused first, as on every list
    manager = manager_repository.get_manager(conn, staff_id)
    if manager is None:
        raise ManagerNotFound(f"{staff_id} is not an account manager")
    rows = manager_repository.page_managed(conn, staff_id, after=cursor, limit=limit + 1)
    items = [ManagedMember.model_validate(dict(r)) for r in rows[:limit]]
    return ManagerMembersOut(
        staff_id=staff_id,
        name=manager["name"],
        capacity=manager["capacity"],
        active=bool(manager["active"]),
        members=items,
        next_cursor=encode_cursor(items[-1].member_id) if len(rows) > limit else None,
    )


def manager_of(conn: Connection, member_id: str) -> ManagerOut | None:
    """The member's account manager (None: the member has none): one keyed read, for the
    service desk's routing of a black-card member's ticket."""
    row = manager_repository.manager_of(conn, member_id)
    return ManagerOut(staff_id=row["staff_id"], name=row["name"]) if row is not None else None
