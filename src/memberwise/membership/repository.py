"""Every query of tiers, their history and black-card invitations; those of subscriptions,
account managers and tier notices are in :mod:`.subscription_repository`,
:mod:`.manager_repository` and :mod:`.notice_repository`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    RowMapping,
    Select,
    String,
    Text,
    bindparam,
    cast,
    distinct,
    func,
    insert,
    literal,
    select,
    update,
)

from memberwise.kit import diffpublish, rawsql
from memberwise.kit.db import upsert
from memberwise.kit.storage import parquet_sql
from memberwise.kit.time import UTCDateTime
from memberwise.members.tables import members
from memberwise.membership.tables import (
    invitations,
    member_tiers,
    tier_history,
)

# --- tiers ----------------------------------------------------------------------------------


def epoch_us(conn: Connection, column: Any) -> Any:
    """``column`` (a UTC timestamp) as integer microseconds since the epoch, computed by the
    database. SQLite keeps 'YYYY-MM-DD HH:MM:SS[.ffffff]' text: whole seconds from strftime,
    the microseconds from the text; PostgreSQL's EXTRACT(EPOCH) is an exact numeric."""
    if conn.dialect.name == "sqlite":
        seconds = cast(func.strftime("%s", column), BigInteger)
        micros = cast(func.substr(column + literal(".000000"), 21, 6), BigInteger)
        return seconds * 1_000_000 + micros
    return cast(func.extract("epoch", column) * 1_000_000, BigInteger)


def tier_states_query(conn: Connection) -> Select[Any]:
    """(member_id, tier, source, since µs, until µs) of every member with a tier."""
    return select(
        member_tiers.c.member_id,
        member_tiers.c.tier,
        member_tiers.c.source,
        epoch_us(conn, member_tiers.c.since),
        epoch_us(conn, member_tiers.c.until),
    )


def tier_states(conn: Connection) -> list[tuple[str, str, str, int, int | None]]:
    """(member_id, tier, source, since µs, until µs) of every member with a tier."""
    return [(r[0], r[1], r[2], r[3], r[4]) for r in conn.execute(tier_states_query(conn)).all()]


def join_times_query(conn: Connection) -> Select[Any]:
    """(member_id, registered_at µs) of every member."""
    return select(members.c.member_id, epoch_us(conn, members.c.registered_at))


def join_times(conn: Connection) -> list[tuple[str, int | None]]:
    """(member_id, registered_at µs) of every member."""
    return [(r[0], r[1]) for r in conn.execute(join_times_query(conn)).all()]


def upsert_tiers(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Write tier rows (member_id, tier, source, since, until, score, details, build_id,
    updated_at); a member whose stored tier is manual or by invitation is left alone unless the
    row itself says so (their tier changes only by staff or by accepting an invitation)."""
    if not rows:
        return
    stmt = upsert(
        conn,
        member_tiers,
        ["member_id"],
        member_id=bindparam("member_id", type_=String),
        tier=bindparam("tier", type_=String),
        source=bindparam("source", type_=String),
        since=bindparam("since", type_=UTCDateTime),
        until=bindparam("until", type_=UTCDateTime),
        score=bindparam("score", type_=Integer),
        details=bindparam("details", type_=Text),
        build_id=bindparam("build_id", type_=String),
        updated_at=bindparam("updated_at", type_=UTCDateTime),
    )
    conn.execute(stmt, rows)


def update_scores(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Refresh score and details only (members whose tier a build must not touch)."""
    if not rows:
        return
    stmt = (
        update(member_tiers)
        .where(member_tiers.c.member_id == bindparam("m_id", type_=String))
        .values(
            score=bindparam("score", type_=Integer),
            details=bindparam("details", type_=Text),
            build_id=bindparam("build_id", type_=String),
            updated_at=bindparam("updated_at", type_=UTCDateTime),
        )
    )
    conn.execute(stmt, rows)


#: The stored tier rows as the publisher compares them (times as epoch microseconds, the
#: details text as its MD5).
STORED_TIERS_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string()),
        pa.field("tier", pa.string()),
        pa.field("source", pa.string()),
        pa.field("since_us", pa.int64()),
        pa.field("until_us", pa.int64()),
        pa.field("score", pa.int64()),
        pa.field("details", pa.string()),
    ]
)


def load_tiers(conn: Connection, con: duckdb.DuckDBPyConnection, name: str) -> int:
    """Copy every stored tier row into the DuckDB table ``name`` (:data:`STORED_TIERS_SCHEMA`);
    the rows copied."""
    query = select(
        member_tiers.c.member_id,
        member_tiers.c.tier,
        member_tiers.c.source,
        epoch_us(conn, member_tiers.c.since),
        epoch_us(conn, member_tiers.c.until),
        member_tiers.c.score,
        member_tiers.c.details,
    )
    return diffpublish.load_published(
        conn, query, con, name, STORED_TIERS_SCHEMA, digest=["details"]
    )


def changed_tiers_sql(path: Path, stored: str) -> str:
    """DuckDB query of the rows of ``tiers.parquet`` at ``path`` that differ from the stored
    ones in table ``stored`` (or have none), in member_id order, with ``score_changed``: whether
    the score or details differ too (all a locked member may take from a build)."""
    return f"""
        SELECT t.member_id, t.tier, t.source, t.since, t.until, t.score, t.change,
               t.from_tier, t.reason, t.details,
               (s.member_id IS NULL OR t.score IS DISTINCT FROM s.score
                OR md5(t.details) IS DISTINCT FROM s.details) AS score_changed
        FROM read_parquet({parquet_sql(path)}) t
        LEFT JOIN "{stored}" s USING (member_id)
        WHERE s.member_id IS NULL
           OR t.tier IS DISTINCT FROM s.tier
           OR t.source IS DISTINCT FROM s.source
           OR epoch_us(t.since) IS DISTINCT FROM s.since_us
           OR epoch_us(t.until) IS DISTINCT FROM s.until_us
           OR t.score IS DISTINCT FROM s.score
           OR md5(t.details) IS DISTINCT FROM s.details
        ORDER BY t.member_id
    """


def locked_members(conn: Connection) -> set[str]:
    """Members whose tier is manual or by invitation right now (a build never changes them)."""
    stmt = select(member_tiers.c.member_id).where(member_tiers.c.source != "auto")
    return set(conn.execute(stmt).scalars())


def insert_history(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(tier_history), rows)


#: The member's tier as one keyed statement of ``:member_id`` (kit.rawsql style).
TIER_SQL = "SELECT tier FROM member_tiers WHERE member_id = :member_id"


def tier_name(conn: Connection, member_id: str) -> str | None:
    """The member's tier (on the driver's cursor: the order path and every benefits read ask
    it, and a SQLAlchemy statement cost five times as much)."""
    row = rawsql.fetchone(conn, TIER_SQL, {"member_id": member_id})
    return None if row is None else str(row[0])


def get_tier(conn: Connection, member_id: str) -> RowMapping | None:
    stmt = select(member_tiers).where(member_tiers.c.member_id == member_id)
    return conn.execute(stmt).mappings().first()


def tier_history_of(conn: Connection, member_id: str, limit: int) -> Sequence[RowMapping]:
    stmt = (
        select(tier_history)
        .where(tier_history.c.member_id == member_id)
        .order_by(tier_history.c.at.desc(), tier_history.c.change_id.desc())
        .limit(limit)
    )
    return conn.execute(stmt).mappings().all()


def tier_counts(conn: Connection) -> dict[str, int]:
    """Members per current tier."""
    stmt = select(member_tiers.c.tier, func.count()).group_by(member_tiers.c.tier)
    return {str(tier): int(n) for tier, n in conn.execute(stmt)}


def tier_counts_at(conn: Connection, at: datetime) -> dict[str, int]:
    """Members per tier as they stood at ``at`` (each member's last tier change by then)."""
    ranked = select(
        tier_history.c.to_tier,
        func.row_number()
        .over(partition_by=tier_history.c.member_id, order_by=tier_history.c.at.desc())
        .label("rn"),
    ).where(tier_history.c.at <= at)
    sub = ranked.subquery()
    rows = conn.execute(
        select(sub.c.to_tier, func.count()).where(sub.c.rn == 1).group_by(sub.c.to_tier)
    ).all()
    return {str(t): int(n) for t, n in rows}


def history_extent(conn: Connection, until: datetime) -> tuple[int, int]:
    """(tier-history rows, members they are of) up to ``until``."""
    rows, members = conn.execute(
        select(func.count(), func.count(distinct(tier_history.c.member_id))).where(
            tier_history.c.at <= until
        )
    ).one()
    return int(rows), int(members)


def members_in_tier(conn: Connection, tier: str) -> list[str]:
    stmt = select(member_tiers.c.member_id).where(member_tiers.c.tier == tier)
    return list(conn.execute(stmt).scalars())


# --- invitations ----------------------------------------------------------------------------


def invitations_by_status(conn: Connection, tier: str) -> Sequence[RowMapping]:
    """The latest invitation of each member to ``tier`` is what counts; all are returned."""
    stmt = select(
        invitations.c.invitation_id,
        invitations.c.member_id,
        invitations.c.status,
        invitations.c.expires_at,
        invitations.c.decided_at,
    ).where(invitations.c.tier == tier)
    return conn.execute(stmt).mappings().all()


def invitation_counts(conn: Connection) -> dict[str, int]:
    """Invitations per status, over every tier."""
    rows = conn.execute(
        select(invitations.c.status, func.count()).group_by(invitations.c.status)
    ).all()
    return {str(s): int(n) for s, n in rows}


def insert_invitations(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(invitations), rows)


def expire_invitations(conn: Connection, now: datetime) -> int:
    stmt = (
        update(invitations)
        .where(invitations.c.status == "pending", invitations.c.expires_at <= now)
        .values(status="expired", decided_at=invitations.c.expires_at)
    )
    return conn.execute(stmt).rowcount or 0


def get_invitation(conn: Connection, invitation_id: str) -> RowMapping | None:
    stmt = select(invitations).where(invitations.c.invitation_id == invitation_id)
    return conn.execute(stmt).mappings().first()


def decide_invitation(conn: Connection, invitation_id: str, status: str, at: datetime) -> bool:
    """Move a pending invitation to ``status``; False when it was no longer pending."""
    stmt = (
        update(invitations)
        .where(invitations.c.invitation_id == invitation_id, invitations.c.status == "pending")
        .values(status=status, decided_at=at)
    )
    return (conn.execute(stmt).rowcount or 0) == 1


def page_invitations(
    conn: Connection, *, status: str | None, after: str | None, limit: int
) -> Sequence[RowMapping]:
    stmt = select(invitations).order_by(invitations.c.invitation_id).limit(limit)
    if status is not None:
        stmt = stmt.where(invitations.c.status == status)
    if after is not None:
        stmt = stmt.where(invitations.c.invitation_id > after)
    return conn.execute(stmt).mappings().all()


def latest_invitation_of(conn: Connection, member_id: str) -> RowMapping | None:
    stmt = (
        select(invitations)
        .where(invitations.c.member_id == member_id)
        .order_by(invitations.c.created_at.desc(), invitations.c.invitation_id.desc())
        .limit(1)
    )
    return conn.execute(stmt).mappings().first()


def invitations_in(conn: Connection, status: str) -> list[tuple[str, str]]:
    """(member, invitation) of invitations in ``status``."""
    query = (
        select(invitations.c.member_id, invitations.c.invitation_id)
        .where(invitations.c.status == status)
        .order_by(invitations.c.invitation_id)
    )
    return [(m, i) for m, i in conn.execute(query)]


# -- identity merges ----------------------------------------------------------------------------


def move_member_rows(conn: Connection, table: Any, source: str, target: str) -> int:
    stmt = update(table).where(table.c.member_id == source).values(member_id=target)
    return int(conn.execute(stmt).rowcount)


def delete_member_row(conn: Connection, table: Any, member_id: str) -> int:
    return int(conn.execute(table.delete().where(table.c.member_id == member_id)).rowcount)
