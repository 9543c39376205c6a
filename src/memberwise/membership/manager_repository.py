"""Every query of account managers: the managers with their load, and which manager looks after
which member.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, String, Text, bindparam, func, select, update

from memberwise.kit.db import upsert
from memberwise.kit.time import UTCDateTime
from memberwise.membership.tables import account_managers, member_managers, member_tiers
from memberwise.privacy.tables import staff

# --- account managers -----------------------------------------------------------------------


def upsert_manager(conn: Connection, staff_id: str, capacity: int, now: datetime) -> None:
    stmt = upsert(
        conn,
        account_managers,
        ["staff_id"],
        staff_id=staff_id,
        capacity=capacity,
        active=True,
        created_at=now,
        left_at=None,
    )
    conn.execute(stmt)


def deactivate_manager(conn: Connection, staff_id: str, now: datetime) -> bool:
    stmt = (
        update(account_managers)
        .where(account_managers.c.staff_id == staff_id, account_managers.c.active.is_(True))
        .values(active=False, left_at=now)
    )
    return (conn.execute(stmt).rowcount or 0) == 1


def managers_with_load(conn: Connection) -> Sequence[RowMapping]:
    """Every manager with name, capacity, active flag (theirs and their staff account's) and
    how many members they look after."""
    load = (
        select(member_managers.c.staff_id, func.count().label("members"))
        .group_by(member_managers.c.staff_id)
        .subquery()
    )
    stmt = (
        select(
            account_managers.c.staff_id,
            account_managers.c.capacity,
            (account_managers.c.active & staff.c.active).label("active"),
            staff.c.name,
            staff.c.role,
            func.coalesce(load.c.members, 0).label("members"),
        )
        .join(staff, staff.c.staff_id == account_managers.c.staff_id)
        .outerjoin(load, load.c.staff_id == account_managers.c.staff_id)
        .order_by(account_managers.c.staff_id)
    )
    return conn.execute(stmt).mappings().all()


def get_manager(conn: Connection, staff_id: str) -> RowMapping | None:
    return next((m for m in managers_with_load(conn) if m["staff_id"] == staff_id), None)


def assignments(conn: Connection) -> dict[str, str]:
    """member_id -> staff_id of every assignment."""
    stmt = select(member_managers.c.member_id, member_managers.c.staff_id)
    return {str(m): str(s) for m, s in conn.execute(stmt)}


def assign(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    stmt = upsert(
        conn,
        member_managers,
        ["member_id"],
        member_id=bindparam("member_id", type_=String),
        staff_id=bindparam("staff_id", type_=String),
        assigned_at=bindparam("assigned_at", type_=UTCDateTime),
        reason=bindparam("reason", type_=Text),
    )
    conn.execute(stmt, rows)


def unassign(conn: Connection, member_ids: Sequence[str]) -> None:
    if member_ids:
        conn.execute(member_managers.delete().where(member_managers.c.member_id.in_(member_ids)))


def manager_of(conn: Connection, member_id: str) -> RowMapping | None:
    stmt = (
        select(member_managers, staff.c.name)
        .join(staff, staff.c.staff_id == member_managers.c.staff_id)
        .where(member_managers.c.member_id == member_id)
    )
    return conn.execute(stmt).mappings().first()


def page_managed(
    conn: Connection, staff_id: str, *, after: str | None, limit: int
) -> Sequence[RowMapping]:
    stmt = (
        select(member_managers, member_tiers.c.tier, member_tiers.c.score)
        .outerjoin(member_tiers, member_tiers.c.member_id == member_managers.c.member_id)
        .where(member_managers.c.staff_id == staff_id)
        .order_by(member_managers.c.member_id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(member_managers.c.member_id > after)
    return conn.execute(stmt).mappings().all()
