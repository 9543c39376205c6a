"""Every query of the privacy domain: staff, API keys, audit log."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, func, insert, literal, select, true, update

from memberwise.kit.db import string_values
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


def insert_member_audits(
    conn: Connection, keyed_ids: Sequence[str], values: dict[str, Any]
) -> None:
    """One audit row per member in ONE statement: ``keyed_ids`` are each row's 32-character
    audit id followed by its member id (subject and member of the row); ``values`` are the
    columns every row shares. Set-based, because a bulk ingest audits 100,000s at once."""
    if not keyed_ids:
        return
    ids = string_values(conn, keyed_ids)
    member = func.substr(ids.c.value, 33)
    shared = ("ts", "actor", "actor_role", "action", "subject_type", "reason", "details")
    rows = select(
        func.substr(ids.c.value, 1, 32),
        *(literal(values[name], audit_log.c[name].type) for name in shared),
        member,
        member,
    ).where(true())
    conn.execute(
        insert(audit_log).from_select(["audit_id", *shared, "subject_id", "member_id"], rows)
    )
