"""Every query of the points ledger (balances, entries, lots) and of the stored idempotent
answers; the other ledgers' queries are in :mod:`.coupon_repository`, :mod:`.order_repository`,
:mod:`.benefit_repository`, :mod:`.fast_repository` and :mod:`.fast_entries` (the order hot
path), :mod:`.report_repository` (aggregates) and :mod:`.merge_repository` (identity merges).

The balance, budget and coupon updates are *guarded* statements: the check and the change are
one ``UPDATE ... WHERE <check>``, so two transactions can never both pass a check that only one
of them may pass. On PostgreSQL the guarded UPDATE also takes the row lock the rest of the
transaction relies on; on SQLite the first write of a transaction takes the database's single
write lock (the driver opens the transaction lazily at the first write, so no stale read
snapshot is ever upgraded).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    RowMapping,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)

from memberwise.kit.db import insert_ignore
from memberwise.ledger.tables import (
    idempotency_keys,
    points_allocations,
    points_balances,
    points_earn_periods,
    points_entries,
    points_lots,
)

# -- points ------------------------------------------------------------------------------------


def ensure_balance(conn: Connection, member_id: str, now: datetime) -> None:
    conn.execute(
        insert_ignore(conn, points_balances).values(
            member_id=member_id, available=0, pending=0, debt=0, updated_at=now
        )
    )


def lock_balance(conn: Connection, member_id: str, now: datetime) -> RowMapping:
    """Lock the member's balance row (creating it) and return it as it is now."""
    ensure_balance(conn, member_id, now)
    row = (
        conn.execute(
            update(points_balances)
            .where(points_balances.c.member_id == member_id)
            .values(updated_at=now)
            .returning(
                points_balances.c.available, points_balances.c.pending, points_balances.c.debt
            )
        )
        .mappings()
        .one()
    )
    return row


def change_balance(
    conn: Connection,
    member_id: str,
    now: datetime,
    *,
    available: int = 0,
    pending: int = 0,
    debt: int = 0,
) -> bool:
    """Add the deltas, unless a result would be negative (then nothing changes: False)."""
    b = points_balances.c
    guards = [b.member_id == member_id]
    if available < 0:
        guards.append(b.available >= -available)
    if pending < 0:
        guards.append(b.pending >= -pending)
    if debt < 0:
        guards.append(b.debt >= -debt)
    result = conn.execute(
        update(points_balances)
        .where(*guards)
        .values(
            available=b.available + available,
            pending=b.pending + pending,
            debt=b.debt + debt,
            updated_at=now,
        )
    )
    return result.rowcount == 1


def get_balance(conn: Connection, member_id: str) -> RowMapping | None:
    return (
        conn.execute(select(points_balances).where(points_balances.c.member_id == member_id))
        .mappings()
        .first()
    )


def entry_by_key(conn: Connection, key: str) -> RowMapping | None:
    return (
        conn.execute(select(points_entries).where(points_entries.c.idem_key == key))
        .mappings()
        .first()
    )


def insert_entries(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(points_entries), rows)


def insert_lots(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(points_lots), rows)


def insert_allocations(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(points_allocations), rows)


def spendable_lots(conn: Connection, member_id: str) -> Sequence[RowMapping]:
    """The member's available lots with points left, nearest expiry first (never-expiring
    last, then oldest first): the order points are spent, expired and taken back in."""
    lot = points_lots.c
    return (
        conn.execute(
            select(lot.lot_id, lot.remaining, lot.expires_at)
            .where(lot.member_id == member_id, lot.status == "available", lot.remaining > 0)
            .order_by(lot.expires_at.is_(None), lot.expires_at, lot.earned_at, lot.lot_id)
        )
        .mappings()
        .all()
    )


def take_from_lot(conn: Connection, lot_id: str, points: int, status: str | None = None) -> None:
    """Take ``points`` from a lot (guarded: never below zero), optionally setting its status."""
    lot = points_lots.c
    values: dict[str, Any] = {"remaining": lot.remaining - points}
    if status is not None:
        values["status"] = status
    result = conn.execute(
        update(points_lots).where(lot.lot_id == lot_id, lot.remaining >= points).values(**values)
    )
    if result.rowcount != 1:  # pragma: no cover - the balance lock makes this unreachable
        raise RuntimeError(f"lot {lot_id} has fewer than {points} points left")


def add_to_lot(conn: Connection, lot_id: str, points: int) -> None:
    lot = points_lots.c
    conn.execute(
        update(points_lots).where(lot.lot_id == lot_id).values(remaining=lot.remaining + points)
    )


def set_lot_status(conn: Connection, lot_ids: Sequence[str], status: str) -> None:
    if lot_ids:
        conn.execute(
            update(points_lots).where(points_lots.c.lot_id.in_(lot_ids)).values(status=status)
        )


def expire_lots(conn: Connection, member_id: str, at: datetime) -> None:
    """Mark the member's available lots past expiry expired, nothing left in them (the caller
    holds the member's lock and records the allocations of what was left)."""
    lot = points_lots.c
    conn.execute(
        update(points_lots)
        .where(
            lot.member_id == member_id,
            lot.status == "available",
            lot.expires_at.is_not(None),
            lot.expires_at <= at,
        )
        .values(status="expired", remaining=0)
    )


def order_lots(conn: Connection, order_id: str) -> Sequence[RowMapping]:
    lot = points_lots.c
    return (
        conn.execute(select(points_lots).where(lot.order_id == order_id).order_by(lot.lot_id))
        .mappings()
        .all()
    )


def lots_of(conn: Connection, member_id: str, statuses: Sequence[str]) -> Sequence[RowMapping]:
    lot = points_lots.c
    return (
        conn.execute(
            select(points_lots)
            .where(lot.member_id == member_id, lot.status.in_(statuses), lot.remaining > 0)
            .order_by(lot.expires_at.is_(None), lot.expires_at, lot.earned_at, lot.lot_id)
        )
        .mappings()
        .all()
    )


def due_lots(
    conn: Connection, *, status: str, column: str, at: datetime, limit: int
) -> Sequence[RowMapping]:
    """Lots in ``status`` whose ``column`` (available_at / expires_at) is at or before ``at``."""
    lot = points_lots.c
    when = lot[column]
    return (
        conn.execute(
            select(lot.lot_id, lot.member_id, lot.remaining, lot.order_id)
            .where(lot.status == status, when.is_not(None), when <= at)
            .order_by(lot.member_id, lot.lot_id)
            .limit(limit)
        )
        .mappings()
        .all()
    )


def lot_for_update(conn: Connection, lot_id: str) -> RowMapping | None:
    return (
        conn.execute(select(points_lots).where(points_lots.c.lot_id == lot_id)).mappings().first()
    )


def allocations_of(conn: Connection, entry_id: str) -> Sequence[RowMapping]:
    a = points_allocations.c
    return (
        conn.execute(
            select(a.lot_id, a.points, points_lots.c.expires_at)
            .join(points_lots, points_lots.c.lot_id == a.lot_id)
            .where(a.entry_id == entry_id)
        )
        .mappings()
        .all()
    )


def add_earned(conn: Connection, member_id: str, period: str, points: int, cap: int) -> int:
    """Count up to ``points`` against a period's cap; returns how many fitted (the caller holds
    the member's balance lock, so the read and the write cannot interleave with another)."""
    conn.execute(
        insert_ignore(conn, points_earn_periods).values(
            member_id=member_id, period=period, earned=0
        )
    )
    p = points_earn_periods.c
    earned = conn.execute(
        select(p.earned).where(p.member_id == member_id, p.period == period)
    ).scalar_one()
    fits = max(0, min(points, cap - int(earned)))
    if fits:
        conn.execute(
            update(points_earn_periods)
            .where(p.member_id == member_id, p.period == period)
            .values(earned=p.earned + fits)
        )
    return fits


def earned_in(conn: Connection, member_id: str, period: str) -> int:
    p = points_earn_periods.c
    value = conn.execute(
        select(p.earned).where(p.member_id == member_id, p.period == period)
    ).scalar_one_or_none()
    return int(value or 0)


def entries_page(
    conn: Connection, member_id: str, *, before: tuple[datetime, str] | None, limit: int
) -> Sequence[RowMapping]:
    """The member's entries, newest first (keyset on created_at, entry_id)."""
    e = points_entries.c
    query = select(points_entries).where(e.member_id == member_id)
    if before is not None:
        ts, entry_id = before
        query = query.where(or_(e.created_at < ts, and_(e.created_at == ts, e.entry_id < entry_id)))
    return (
        conn.execute(query.order_by(e.created_at.desc(), e.entry_id.desc()).limit(limit))
        .mappings()
        .all()
    )


def sums(conn: Connection, member_id: str) -> RowMapping:
    """Sums of the member's entries (what the cached balance must equal)."""
    e = points_entries.c
    return (
        conn.execute(
            select(
                func.coalesce(func.sum(e.available_delta), 0).label("available"),
                func.coalesce(func.sum(e.pending_delta), 0).label("pending"),
                func.coalesce(func.sum(e.debt_delta), 0).label("debt"),
            ).where(e.member_id == member_id)
        )
        .mappings()
        .one()
    )


# -- idempotent answers --------------------------------------------------------------------------


def claim_key(conn: Connection, scope: str, key: str, request_hash: str, now: datetime) -> bool:
    """Claim an idempotency key for this request (False: it was used before; on PostgreSQL a
    concurrent first use is waited for, so the stored answer is there to read)."""
    stmt = (
        insert_ignore(conn, idempotency_keys)
        .values(
            scope=scope,
            key=key,
            request_hash=request_hash,
            status_code=0,
            response="",
            created_at=now,
        )
        .returning(idempotency_keys.c.key)
    )
    return conn.execute(stmt).first() is not None


def get_key(conn: Connection, scope: str, key: str) -> RowMapping | None:
    k = idempotency_keys.c
    return (
        conn.execute(select(idempotency_keys).where(k.scope == scope, k.key == key))
        .mappings()
        .first()
    )


def store_answer(conn: Connection, scope: str, key: str, status_code: int, response: str) -> None:
    k = idempotency_keys.c
    conn.execute(
        update(idempotency_keys)
        .where(k.scope == scope, k.key == key)
        .values(status_code=status_code, response=response)
    )
