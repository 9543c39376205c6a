"""Every query of the privacy domain: staff, API keys, audit log."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, func, insert, select, update

from memberwise.privacy.tables import api_keys, audit_log, staff


def insert_key(conn: Connection, **values: Any) -> None:
    conn.execute(insert(api_keys).values(**values))


def get_key(conn: Connection, key_id: str) -> RowMapping | None:
    return conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()


def list_keys(conn: Connection) -> Sequence[RowMapping]:
    return conn.execute(select(api_keys).order_by(api_keys.c.created_at)).mappings().all()


def revoke_key(conn: Connection, key_id: str, when: datetime) -> bool:
    result = conn.execute(
        update(api_keys)
        .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=when)
    )
    return result.rowcount == 1


def lock_active_keys(conn: Connection, role: str) -> list[str]:
    """The ids of the active keys of ``role``, locked until the transaction ends."""
    query = (
        select(api_keys.c.key_id)
        .where(api_keys.c.role == role, api_keys.c.revoked_at.is_(None))
        .order_by(api_keys.c.key_id)  # one lock order for every caller
        .with_for_update()
    )
    return list(conn.execute(query).scalars())


def count_active_keys(conn: Connection, role: str) -> int:
    query = select(func.count()).where(api_keys.c.role == role, api_keys.c.revoked_at.is_(None))
    return int(conn.execute(query).scalar_one())


def get_staff(conn: Connection, staff_id: str) -> RowMapping | None:
    return conn.execute(select(staff).where(staff.c.staff_id == staff_id)).mappings().first()


def insert_staff(conn: Connection, **values: Any) -> None:
    conn.execute(insert(staff).values(**values))


def list_staff(conn: Connection) -> Sequence[RowMapping]:
    return conn.execute(select(staff).order_by(staff.c.staff_id)).mappings().all()


def insert_audit(conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
    batch = list(rows)
    if batch:
        conn.execute(insert(audit_log), batch)


def list_audit(
    conn: Connection,
    *,
    limit: int,
    before: str | None,
    member_id: str | None,
    action: str | None,
) -> Sequence[RowMapping]:
    """Newest first; ``before`` is the audit_id to continue after (ids are time-ordered)."""
    query = select(audit_log).order_by(audit_log.c.audit_id.desc()).limit(limit)
    if before is not None:
        query = query.where(audit_log.c.audit_id < before)
    if member_id is not None:
        query = query.where(audit_log.c.member_id == member_id)
    if action is not None:
        query = query.where(audit_log.c.action == action)
    return conn.execute(query).mappings().all()
