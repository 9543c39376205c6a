"""Every query of the members domain."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, literal, select, true, update
from sqlalchemy import delete as sa_delete

from memberwise.kit import rawsql
from memberwise.kit.db import insert_ignore, string_values
from memberwise.kit.time import UTCDateTime
from memberwise.members.schemas import MemberSource, MemberStatus
from memberwise.members.tables import members


def get(conn: Connection, member_id: str) -> RowMapping | None:
    return conn.execute(select(members).where(members.c.member_id == member_id)).mappings().first()


def exists(conn: Connection, member_id: str) -> bool:
    """Whether the member is registered (a keyed probe on the driver's cursor: hot reads ask
    it for members who hold no tier or plan)."""
    probe = "SELECT 1 FROM members WHERE member_id = :member_id"
    return rawsql.fetchone(conn, probe, {"member_id": member_id}) is not None


def get_many(conn: Connection, member_ids: Sequence[str]) -> dict[str, RowMapping]:
    rows = conn.execute(select(members).where(members.c.member_id.in_(member_ids))).mappings()
    return {r["member_id"]: r for r in rows}


def insert_one(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(members).values(**values))


def insert_many(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(members), rows)


def insert_seen(conn: Connection, member_ids: Sequence[str], now: datetime) -> list[str]:
    """Create records (source "events") for ids that have none; return the ids created."""
    if not member_ids:
        return []
    ids = string_values(conn, member_ids)
    rows = select(
        ids.c.value,
        literal(MemberStatus.active.value),
        literal(MemberSource.events.value),
        literal(now, UTCDateTime),
        literal(now, UTCDateTime),
        literal(1),
    ).where(true())
    stmt = (
        insert_ignore(conn, members)
        .from_select(["member_id", "status", "source", "created_at", "updated_at", "version"], rows)
        .returning(members.c.member_id)
    )
    return list(conn.execute(stmt).scalars())


def update_one(conn: Connection, member_id: str, version: int, values: dict[str, Any]) -> bool:
    """Update guarded by the version read, so concurrent writers cannot lose each other's change."""
    result = conn.execute(
        update(members)
        .where(members.c.member_id == member_id, members.c.version == version)
        .values(**values, version=version + 1)
    )
    return result.rowcount == 1


def page(
    conn: Connection,
    *,
    limit: int,
    after: str | None,
    source: str | None,
    region: str | None,
) -> Sequence[RowMapping]:
    query = select(members).order_by(members.c.member_id).limit(limit)
    if after is not None:
        query = query.where(members.c.member_id > after)
    if source is not None:
        query = query.where(members.c.source == source)
    if region is not None:
        query = query.where(members.c.region == region)
    return conn.execute(query).mappings().all()


def attribute_rows(conn: Connection) -> Iterator[Sequence[Any]]:
    """(member_id, region, credit_stars) of every member, streamed in chunks."""
    query = select(members.c.member_id, members.c.region, members.c.credit_stars)
    # Options on this statement only: Connection.execution_options would change the
    # connection itself, and every later statement would run through a server-side cursor.
    result = conn.execute(query, execution_options={"stream_results": True, "yield_per": 50_000})
    for partition in result.partitions():
        yield from partition


def delete(conn: Connection, member_id: str) -> int:
    """Remove a member's record (erasure); returns 1 when there was one."""
    return int(conn.execute(sa_delete(members).where(members.c.member_id == member_id)).rowcount)


def activity_rows(conn: Connection) -> Iterator[tuple[str, datetime]]:
    """(member_id, updated_at) of every member: the last change of their record."""
    rows = conn.execute(select(members.c.member_id, members.c.updated_at))
    yield from ((str(member_id), updated_at) for member_id, updated_at in rows)


def find_by_hash(conn: Connection, kind: str, digest: str) -> list[str]:
    """Member ids whose ``phone_hash`` or ``email_hash`` (``kind``) is ``digest`` (at most 2)."""
    column = members.c.phone_hash if kind == "phone" else members.c.email_hash
    rows = conn.execute(select(members.c.member_id).where(column == digest).limit(2))
    return [str(r) for r in rows.scalars()]


def unindexed_contacts(conn: Connection, *, limit: int) -> list[RowMapping]:
    """Members with sealed PII but no contact hashes yet (registered before they existed)."""
    return list(
        conn.execute(
            select(members)
            .where(
                members.c.phone_hash.is_(None),
                members.c.email_hash.is_(None),
                (members.c.phone_enc.is_not(None)) | (members.c.email_enc.is_not(None)),
            )
            .limit(limit)
        ).mappings()
    )


def set_contact_hashes(
    conn: Connection, member_id: str, *, phone_hash: str, email_hash: str
) -> None:
    conn.execute(
        update(members)
        .where(members.c.member_id == member_id)
        .values(phone_hash=phone_hash, email_hash=email_hash)
    )
