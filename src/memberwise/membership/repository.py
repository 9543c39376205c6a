"""Every query of the membership domain (tiers, history, invitations, managers, subscriptions)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
    func,
    insert,
    literal,
    select,
    update,
)

from memberwise.kit import diffpublish, rawsql
from memberwise.kit.db import insert_ignore, upsert
from memberwise.kit.storage import parquet_sql
from memberwise.kit.time import UTCDateTime
from memberwise.members.tables import members
from memberwise.membership.tables import (
    account_managers,
    invitations,
    member_managers,
    member_tiers,
    subscription_events,
    subscription_invoices,
    subscription_payments,
    subscriptions,
    tier_history,
    tier_notices,
)
from memberwise.privacy.tables import staff

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


def subscription_states(conn: Connection, member_id: str) -> list[dict[str, Any]]:
    """The plan, status and period end of each of the member's subscriptions not expired (on
    the driver's cursor: every benefits read and checkout asks it)."""
    rows = rawsql.fetchall(
        conn,
        "SELECT plan, status, period_end FROM subscriptions "
        "WHERE member_id = :member_id AND status <> 'expired'",
        {"member_id": member_id},
    )
    return [
        {"plan": plan, "status": status, "period_end": rawsql.instant(end)}
        for plan, status, end in rows
    ]


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
    stmt = select(member_tiers.c.tier, func.count()).group_by(member_tiers.c.tier)
    return {tier: int(n) for tier, n in conn.execute(stmt)}


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


# --- subscriptions --------------------------------------------------------------------------


def insert_subscription(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(subscriptions).values(**values))


def get_subscription(
    conn: Connection, subscription_id: str, *, for_update: bool = False
) -> RowMapping | None:
    stmt = select(subscriptions).where(subscriptions.c.subscription_id == subscription_id)
    if for_update and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return conn.execute(stmt).mappings().first()


def subscription_by_key(conn: Connection, member_id: str, key: str) -> RowMapping | None:
    stmt = select(subscriptions).where(
        subscriptions.c.member_id == member_id, subscriptions.c.idempotency_key == key
    )
    return conn.execute(stmt).mappings().first()


def subscriptions_of(conn: Connection, member_id: str) -> Sequence[RowMapping]:
    stmt = (
        select(subscriptions)
        .where(subscriptions.c.member_id == member_id)
        .order_by(subscriptions.c.created_at.desc(), subscriptions.c.subscription_id)
    )
    return conn.execute(stmt).mappings().all()


def page_subscriptions(
    conn: Connection,
    *,
    member_id: str | None,
    plan: str | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> list[str]:
    """Subscription ids in id order after ``after``, filtered by member, plan and stored
    status."""
    c = subscriptions.c
    stmt = select(c.subscription_id)
    if member_id is not None:
        stmt = stmt.where(c.member_id == member_id)
    if plan is not None:
        stmt = stmt.where(c.plan == plan)
    if status is not None:
        stmt = stmt.where(c.status == status)
    if after is not None:
        stmt = stmt.where(c.subscription_id > after)
    return list(conn.execute(stmt.order_by(c.subscription_id).limit(limit)).scalars())


def open_subscription_ids(conn: Connection) -> list[str]:
    """Subscriptions that time may still move (pending, active, past_due, cancelled)."""
    stmt = select(subscriptions.c.subscription_id).where(subscriptions.c.status != "expired")
    return list(conn.execute(stmt).scalars())


def save_subscription(
    conn: Connection, subscription_id: str, version: int, values: dict[str, Any]
) -> bool:
    """Compare-and-set on ``version``: False when someone else changed it first."""
    stmt = (
        update(subscriptions)
        .where(
            subscriptions.c.subscription_id == subscription_id, subscriptions.c.version == version
        )
        .values(**values, version=version + 1)
    )
    return (conn.execute(stmt).rowcount or 0) == 1


def insert_invoice(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(subscription_invoices).values(**values))


def invoices_of(conn: Connection, subscription_id: str) -> Sequence[RowMapping]:
    stmt = (
        select(subscription_invoices)
        .where(subscription_invoices.c.subscription_id == subscription_id)
        .order_by(subscription_invoices.c.seq)
    )
    return conn.execute(stmt).mappings().all()


def update_invoice(conn: Connection, invoice_id: str, values: dict[str, Any]) -> None:
    conn.execute(
        update(subscription_invoices)
        .where(subscription_invoices.c.invoice_id == invoice_id)
        .values(**values)
    )


def get_payment(conn: Connection, payment_id: str) -> RowMapping | None:
    stmt = select(subscription_payments).where(subscription_payments.c.payment_id == payment_id)
    return conn.execute(stmt).mappings().first()


def insert_payment(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(subscription_payments).values(**values))


def insert_event(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(subscription_events).values(**values))


def events_of(conn: Connection, subscription_id: str) -> Sequence[RowMapping]:
    stmt = (
        select(subscription_events)
        .where(subscription_events.c.subscription_id == subscription_id)
        .order_by(subscription_events.c.at, subscription_events.c.event_id)
    )
    return conn.execute(stmt).mappings().all()


def subscriptions_in(conn: Connection, status: str) -> list[tuple[str, str]]:
    """(member, subscription) of subscriptions in ``status``."""
    query = (
        select(subscriptions.c.member_id, subscriptions.c.subscription_id)
        .where(subscriptions.c.status == status)
        .order_by(subscriptions.c.subscription_id)
    )
    return [(m, s) for m, s in conn.execute(query)]


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


def colliding_subscription_keys(conn: Connection, source: str, target: str) -> list[str]:
    """Source subscriptions whose idempotency key the target used too."""
    theirs = select(subscriptions.c.idempotency_key).where(subscriptions.c.member_id == target)
    query = select(subscriptions.c.subscription_id).where(
        subscriptions.c.member_id == source, subscriptions.c.idempotency_key.in_(theirs)
    )
    return list(conn.execute(query).scalars())


def rename_subscription_keys(conn: Connection, ids: list[str], suffix: str) -> None:
    if ids:
        conn.execute(
            update(subscriptions)
            .where(subscriptions.c.subscription_id.in_(ids))
            .values(idempotency_key=subscriptions.c.idempotency_key + suffix)
        )


# --- downgrade notices ----------------------------------------------------------------------


def notice_keys(conn: Connection, member_ids: Sequence[str]) -> set[tuple[str, str, datetime]]:
    """(member, tier, downgrade_on) of the notices already given to ``member_ids``."""
    out: set[tuple[str, str, datetime]] = set()
    ids = list(member_ids)
    for i in range(0, len(ids), 1000):
        stmt = select(
            tier_notices.c.member_id, tier_notices.c.tier, tier_notices.c.downgrade_on
        ).where(tier_notices.c.member_id.in_(ids[i : i + 1000]))
        out.update((m, t, on) for m, t, on in conn.execute(stmt))
    return out


def insert_notices(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert_ignore(conn, tier_notices), rows)


def notices_after(conn: Connection, at: datetime) -> list[RowMapping]:
    """Notices whose downgrade date is still ahead of ``at``."""
    stmt = (
        select(tier_notices)
        .where(tier_notices.c.downgrade_on > at)
        .order_by(tier_notices.c.member_id, tier_notices.c.tier)
    )
    return list(conn.execute(stmt).mappings())


def notices_of(conn: Connection, member_id: str) -> list[RowMapping]:
    stmt = (
        select(tier_notices)
        .where(tier_notices.c.member_id == member_id)
        .order_by(tier_notices.c.noticed_at.desc(), tier_notices.c.tier)
    )
    return list(conn.execute(stmt).mappings())


def tier_rows(conn: Connection, member_ids: Sequence[str]) -> dict[str, RowMapping]:
    """The tier rows (tier, source, since, score, details) of ``member_ids``."""
    out: dict[str, RowMapping] = {}
    ids = list(member_ids)
    for i in range(0, len(ids), 1000):
        stmt = select(member_tiers).where(member_tiers.c.member_id.in_(ids[i : i + 1000]))
        out.update((r["member_id"], r) for r in conn.execute(stmt).mappings())
    return out


def auto_tier_rows(
    conn: Connection, below: Sequence[str], batch: int = 20_000
) -> Iterator[list[RowMapping]]:
    """Batches of automatic tier rows (member_id, tier, since, score, details) of members
    holding one of the tiers ``below`` (those with a higher automatic tier to reach), in member
    order: read a batch at a time so a million members never sit in memory at once."""
    after = ""
    while True:
        stmt = (
            select(
                member_tiers.c.member_id,
                member_tiers.c.tier,
                member_tiers.c.since,
                member_tiers.c.score,
                member_tiers.c.details,
            )
            .where(
                member_tiers.c.source == "auto",
                member_tiers.c.tier.in_(list(below)),
                member_tiers.c.member_id > after,
            )
            .order_by(member_tiers.c.member_id)
            .limit(batch)
        )
        rows = list(conn.execute(stmt).mappings())
        if not rows:
            return
        yield rows
        after = rows[-1]["member_id"]
