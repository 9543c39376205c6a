"""Every query of the ledgers (points, coupons, orders, idempotent answers).

The balance, budget and coupon updates are *guarded* statements: the check and the change are
one ``UPDATE ... WHERE <check>``, so two transactions can never both pass a check that only one
of them may pass. On PostgreSQL the guarded UPDATE also takes the row lock the rest of the
transaction relies on; on SQLite the first write of a transaction takes the database's single
write lock (the driver opens the transaction lazily at the first write, so no stale read
snapshot is ever upgraded).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    RowMapping,
    and_,
    case,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

from memberwise.kit import rawsql
from memberwise.kit.db import insert_ignore
from memberwise.kit.time import as_utc
from memberwise.ledger.tables import (
    benefit_counters,
    benefit_uses,
    coupon_budgets,
    coupon_member_counts,
    coupons,
    idempotency_keys,
    order_refunds,
    orders,
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


# -- coupons -----------------------------------------------------------------------------------


def ensure_budget(conn: Connection, template: str) -> None:
    conn.execute(
        insert_ignore(conn, coupon_budgets).values(
            template=template, issued=0, redeemed=0, redeemed_money=0
        )
    )


def reserve_issue(conn: Connection, template: str, n: int, cap: int | None) -> bool:
    """Count ``n`` more coupons issued, unless that would pass ``cap``."""
    ensure_budget(conn, template)
    b = coupon_budgets.c
    stmt = update(coupon_budgets).where(b.template == template).values(issued=b.issued + n)
    if cap is not None:
        stmt = stmt.where(b.issued + n <= cap)
    return conn.execute(stmt).rowcount == 1


def release_money(conn: Connection, template: str, money: int) -> None:
    b = coupon_budgets.c
    conn.execute(
        update(coupon_budgets)
        .where(b.template == template)
        .values(redeemed=b.redeemed - 1, redeemed_money=b.redeemed_money - money)
    )


def count_member_issue(conn: Connection, template: str, member_id: str, limit: int) -> bool:
    """Count one more coupon of ``template`` for the member, unless at ``limit``."""
    conn.execute(
        insert_ignore(conn, coupon_member_counts).values(
            template=template, member_id=member_id, issued=0
        )
    )
    c = coupon_member_counts.c
    result = conn.execute(
        update(coupon_member_counts)
        .where(c.template == template, c.member_id == member_id, c.issued < limit)
        .values(issued=c.issued + 1)
    )
    return result.rowcount == 1


def uncount_member_issue(conn: Connection, template: str, member_id: str) -> None:
    c = coupon_member_counts.c
    conn.execute(
        update(coupon_member_counts)
        .where(c.template == template, c.member_id == member_id)
        .values(issued=c.issued - 1)
    )


def coupon_by_issue(conn: Connection, key: str, member_id: str, template: str) -> RowMapping | None:
    c = coupons.c
    return (
        conn.execute(
            select(coupons).where(
                c.issue_key == key, c.member_id == member_id, c.template == template
            )
        )
        .mappings()
        .first()
    )


def insert_coupon(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(coupons).values(**values))


def get_coupons(conn: Connection, coupon_ids: Sequence[str]) -> dict[str, RowMapping]:
    rows = conn.execute(select(coupons).where(coupons.c.coupon_id.in_(coupon_ids))).mappings()
    return {r["coupon_id"]: r for r in rows}


def redeem_coupon(
    conn: Connection, coupon_id: str, member_id: str, order_id: str, discount: int, at: datetime
) -> bool:
    """Mark an issued, currently valid coupon of the member redeemed (exactly once)."""
    c = coupons.c
    result = conn.execute(
        update(coupons)
        .where(
            c.coupon_id == coupon_id,
            c.member_id == member_id,
            c.status == "issued",
            c.valid_from <= at,
            c.valid_until > at,
        )
        .values(status="redeemed", order_id=order_id, discount=discount, redeemed_at=at)
    )
    return result.rowcount == 1


def restore_coupon(conn: Connection, coupon_id: str, order_id: str, at: datetime) -> bool:
    """Give a coupon redeemed by ``order_id`` back: issued again, or expired if past its end."""
    c = coupons.c
    result = conn.execute(
        update(coupons)
        .where(c.coupon_id == coupon_id, c.order_id == order_id, c.status == "redeemed")
        .values(
            status=case((c.valid_until > at, literal("issued")), else_=literal("expired")),
            order_id=None,
            discount=None,
            redeemed_at=None,
        )
    )
    return result.rowcount == 1


def order_coupons(conn: Connection, order_id: str) -> Sequence[RowMapping]:
    c = coupons.c
    return (
        conn.execute(select(coupons).where(c.order_id == order_id).order_by(c.coupon_id))
        .mappings()
        .all()
    )


def member_coupons(
    conn: Connection, member_id: str, *, status: str | None, after: str | None, limit: int
) -> Sequence[RowMapping]:
    c = coupons.c
    query = select(coupons).where(c.member_id == member_id)
    if status is not None:
        query = query.where(c.status == status)
    if after is not None:
        query = query.where(c.coupon_id > after)
    return conn.execute(query.order_by(c.coupon_id).limit(limit)).mappings().all()


def expire_coupons(conn: Connection, at: datetime) -> int:
    c = coupons.c
    result = conn.execute(
        update(coupons).where(c.status == "issued", c.valid_until <= at).values(status="expired")
    )
    return int(result.rowcount)


def coupon_counts(conn: Connection) -> dict[tuple[str, str], tuple[int, int]]:
    """(template, status) -> (coupons, fen taken off)."""
    c = coupons.c
    rows = conn.execute(
        select(c.template, c.status, func.count(), func.coalesce(func.sum(c.discount), 0)).group_by(
            c.template, c.status
        )
    )
    return {(t, s): (int(n), int(m)) for t, s, n, m in rows}


# -- orders and refunds --------------------------------------------------------------------------


def claim_order(conn: Connection, values: dict[str, Any]) -> bool:
    """Insert the order unless its id exists (then False: a replay or a conflict)."""
    # RETURNING, not rowcount: PostgreSQL drivers report -1 for INSERT ... ON CONFLICT here.
    stmt = insert_ignore(conn, orders).values(**values).returning(orders.c.order_id)
    return conn.execute(stmt).first() is not None


def get_order(conn: Connection, order_id: str) -> RowMapping | None:
    return conn.execute(select(orders).where(orders.c.order_id == order_id)).mappings().first()


def lock_order(conn: Connection, order_id: str, now: datetime) -> RowMapping | None:
    """Lock the order's row (a no-op write) and return it; None when there is no such order."""
    row = (
        conn.execute(
            update(orders)
            .where(orders.c.order_id == order_id)
            .values(updated_at=now)
            .returning(*orders.c)
        )
        .mappings()
        .first()
    )
    return row


def update_order(conn: Connection, order_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(orders).where(orders.c.order_id == order_id).values(**values))


def member_orders(
    conn: Connection, member_id: str, *, after: tuple[datetime, str] | None, limit: int
) -> Sequence[RowMapping]:
    """The member's orders, newest first (placed_at, then order_id, both descending), after
    the keyset ``after``; uses ix_orders_member_placed."""
    stmt = select(orders).where(orders.c.member_id == member_id)
    if after is not None:
        at, order_id = after
        stmt = stmt.where(
            or_(
                orders.c.placed_at < at,
                and_(orders.c.placed_at == at, orders.c.order_id < order_id),
            )
        )
    stmt = stmt.order_by(orders.c.placed_at.desc(), orders.c.order_id.desc()).limit(limit)
    return conn.execute(stmt).mappings().all()


def refunds_of_orders(conn: Connection, order_ids: Sequence[str]) -> Sequence[RowMapping]:
    """The refunds of these orders, oldest first."""
    if not order_ids:
        return []
    stmt = (
        select(order_refunds)
        .where(order_refunds.c.order_id.in_(list(order_ids)))
        .order_by(order_refunds.c.created_at, order_refunds.c.refund_id)
    )
    return conn.execute(stmt).mappings().all()


def get_refund(conn: Connection, refund_id: str) -> RowMapping | None:
    return (
        conn.execute(select(order_refunds).where(order_refunds.c.refund_id == refund_id))
        .mappings()
        .first()
    )


def insert_refund(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(order_refunds).values(**values))


def refunds_of(conn: Connection, order_id: str) -> Sequence[RowMapping]:
    r = order_refunds.c
    return (
        conn.execute(
            select(order_refunds).where(r.order_id == order_id).order_by(r.created_at, r.refund_id)
        )
        .mappings()
        .all()
    )


# -- members -------------------------------------------------------------------------------------


def known_members(conn: Connection, member_ids: Sequence[str]) -> set[str]:
    """Which of ``member_ids`` the platform registered (or sent events of)."""
    from memberwise.members.tables import members

    if not member_ids:
        return set()
    rows = conn.execute(select(members.c.member_id).where(members.c.member_id.in_(member_ids)))
    return set(rows.scalars())


# -- benefit counters and uses ---------------------------------------------------------------------


def counter_used(conn: Connection, member_id: str, counter: str, period: str) -> int:
    value = conn.execute(
        select(benefit_counters.c.used).where(
            benefit_counters.c.member_id == member_id,
            benefit_counters.c.counter == counter,
            benefit_counters.c.period == period,
        )
    ).scalar()
    return int(value or 0)


def counters_of(conn: Connection, member_id: str) -> dict[tuple[str, str], int]:
    """(counter, period) -> used, of every counter of the member (on the driver's cursor:
    every benefits read asks it)."""
    rows = rawsql.fetchall(
        conn,
        "SELECT counter, period, used FROM benefit_counters WHERE member_id = :member_id",
        {"member_id": member_id},
    )
    return {(counter, period): int(used) for counter, period, used in rows}


def take_counter(
    conn: Connection, member_id: str, counter: str, period: str, n: int, limit: int, at: datetime
) -> bool:
    """Add ``n`` to a counter if it stays within ``limit``; False (and nothing changed) if not.

    The check and the change are one statement, so two concurrent uses cannot both pass: on
    PostgreSQL the second waits for the first's row lock and re-checks the new value; SQLite
    has one writer at a time.
    """
    conn.execute(
        insert_ignore(conn, benefit_counters).values(
            member_id=member_id, counter=counter, period=period, used=0, updated_at=at
        )
    )
    result = conn.execute(
        update(benefit_counters)
        .where(
            benefit_counters.c.member_id == member_id,
            benefit_counters.c.counter == counter,
            benefit_counters.c.period == period,
            benefit_counters.c.used + n <= limit,
        )
        .values(used=benefit_counters.c.used + n, updated_at=at)
    )
    return result.rowcount == 1


def give_back_counter(
    conn: Connection, member_id: str, counter: str, period: str, n: int, at: datetime
) -> None:
    conn.execute(
        update(benefit_counters)
        .where(
            benefit_counters.c.member_id == member_id,
            benefit_counters.c.counter == counter,
            benefit_counters.c.period == period,
        )
        .values(used=benefit_counters.c.used - n, updated_at=at)
    )


def unused_monthly_coupons(
    conn: Connection, member_id: str, benefit: str, month: str, count: int
) -> int:
    """This month's coupons of a monthly-coupons benefit the member has not used yet (all
    ``count`` of them before they are issued)."""
    key = f"monthly_coupons:{benefit}:{member_id}:{month}"
    if get_use(conn, key) is None:
        return count
    c = coupons.c
    unused = conn.execute(
        select(func.count()).where(
            c.member_id == member_id,
            c.status == "issued",
            c.issue_key.startswith(f"benefit:{benefit}:{month}:", autoescape=True),
        )
    ).scalar_one()
    return int(unused)


def get_use(conn: Connection, use_id: str) -> RowMapping | None:
    return (
        conn.execute(select(benefit_uses).where(benefit_uses.c.use_id == use_id)).mappings().first()
    )


def insert_use(conn: Connection, **values: Any) -> bool:
    """Record a use under its key; False when the key exists (a replay or a concurrent twin,
    which PostgreSQL makes wait until the first commits)."""
    # RETURNING, not rowcount: PostgreSQL drivers may report -1 for INSERT ... ON CONFLICT.
    stmt = insert_ignore(conn, benefit_uses).values(**values).returning(benefit_uses.c.use_id)
    return conn.execute(stmt).first() is not None


def benefit_used_since(
    conn: Connection, member_id: str, benefits: list[str], since: datetime
) -> bool:
    stmt = (
        select(benefit_uses.c.use_id)
        .where(
            benefit_uses.c.member_id == member_id,
            benefit_uses.c.benefit.in_(benefits),
            benefit_uses.c.created_at >= since,
        )
        .limit(1)
    )
    return conn.execute(stmt).first() is not None


def settle_use(conn: Connection, use_id: str, member_id: str, status: str, at: datetime) -> bool:
    """Mark an open use of the member settled (an express refund's return arrived); False
    when there was none open (a replay)."""
    result = conn.execute(
        update(benefit_uses)
        .where(
            benefit_uses.c.use_id == use_id,
            benefit_uses.c.member_id == member_id,
            benefit_uses.c.status == "open",
        )
        .values(status=status, settled_at=at)
    )
    return result.rowcount == 1


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


# -- the order hot path: prepared SQL on the driver's cursor ---------------------------------------
#
# Placing an order is the ledgers' hottest write (≥ 1,000 a second on SQLite is the target).
# Building and compiling SQLAlchemy statements costs more than SQLite takes to run them, so the
# statements of that path are written once, as portable SQL with ``:name`` parameters, and run
# on the DBAPI cursor of the same connection (so inside the same transaction). Only the
# parameter style, timestamps and JSON differ between the drivers; :mod:`memberwise.kit.rawsql`
# handles them.


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def fast_coupon(conn: Connection, coupon_id: str, at: datetime) -> dict[str, Any] | None:
    """A coupon with whether it has started and not ended at ``at`` (compared in SQL)."""
    row = rawsql.execute(
        conn,
        "SELECT coupon_id, member_id, template, status, "
        "CASE WHEN valid_from <= :at THEN 1 ELSE 0 END, "
        "CASE WHEN valid_until > :at THEN 1 ELSE 0 END "
        "FROM coupons WHERE coupon_id = :coupon_id",
        {"coupon_id": coupon_id, "at": rawsql.stamp(conn, at)},
    ).fetchone()
    if row is None:
        return None
    keys = ("coupon_id", "member_id", "template", "status", "started", "valid")
    return dict(zip(keys, row, strict=True))


_COUPON_KEYS = ("coupon_id", "member_id", "template", "status", "started", "valid")


def fast_prefetch(
    conn: Connection,
    order_id: str,
    member_id: str,
    coupon_id: str | None,
    at: datetime,
    tier_query: str | None = None,
) -> tuple[bool, bool, dict[str, Any] | None, str | None]:
    """In one round trip: whether the order exists, whether the member does, the order's
    (first) coupon as :func:`fast_coupon` reads it, and the result of ``tier_query`` (the
    membership domain's statement of ``:member_id``; None when not given)."""
    tier = f"({tier_query})" if tier_query else "NULL"
    row = rawsql.execute(
        conn,
        "SELECT (SELECT COUNT(*) FROM orders WHERE order_id = :order_id), "
        "(SELECT COUNT(*) FROM members WHERE member_id = :member_id), "
        "c.coupon_id, c.member_id, c.template, c.status, "
        "CASE WHEN c.valid_from <= :at THEN 1 ELSE 0 END, "
        f"CASE WHEN c.valid_until > :at THEN 1 ELSE 0 END, {tier} "
        "FROM (SELECT 1 AS one) AS x LEFT JOIN coupons AS c ON c.coupon_id = :coupon_id",
        {
            "order_id": order_id,
            "member_id": member_id,
            "coupon_id": coupon_id or "",
            "at": rawsql.stamp(conn, at),
        },
    ).fetchone()
    coupon = dict(zip(_COUPON_KEYS, row[2:8], strict=True)) if row[2] is not None else None
    return bool(row[0]), bool(row[1]), coupon, None if row[8] is None else str(row[8])


def _insert_rows(
    conn: Connection, table: str, columns: tuple[str, ...], rows: list[dict[str, Any]]
) -> None:
    """One multi-row INSERT (one round trip, whatever the number of rows)."""
    if not rows:
        return
    params: dict[str, Any] = {}
    values = _bind(params, "", columns, rows)
    rawsql.execute(conn, f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}", params)


_ORDER_COLUMNS = [c.name for c in orders.c]
_ORDER_INSERT = (
    f"INSERT INTO orders ({', '.join(_ORDER_COLUMNS)}) VALUES ("
    + ", ".join(f":{n}_json" if n in ("items", "coupon_ids") else f":{n}" for n in _ORDER_COLUMNS)
    + ") ON CONFLICT (order_id) DO NOTHING RETURNING order_id"
)
# The guarded writes of an order after its row, ``{p}`` their parameters' prefix and ``{gate}``
# (on PostgreSQL) the condition that the write before it passed.
_REDEEM = (
    "UPDATE coupons SET status = 'redeemed', order_id = :order_id, discount = :{p}discount, "
    "redeemed_at = :at WHERE coupon_id = :{p}coupon_id AND member_id = :member_id "
    "AND status = 'issued' AND valid_from <= :at AND valid_until > :at{gate} RETURNING coupon_id"
)
_ENSURE_BUDGET = (
    "INSERT INTO coupon_budgets (template, issued, redeemed, redeemed_money) "
    "VALUES (:{p}template, 0, 0, 0) ON CONFLICT (template) DO NOTHING"
)
_RESERVE = (
    "UPDATE coupon_budgets SET redeemed = redeemed + 1, "
    "redeemed_money = redeemed_money + :{p}money WHERE template = :{p}template "
    "AND redeemed_money + :{p}money <= :{p}cap{gate} RETURNING template"
)
_ENSURE_BALANCE = (
    "INSERT INTO points_balances (member_id, available, pending, debt, updated_at) "
    "VALUES (:member_id, 0, 0, 0, :at) ON CONFLICT (member_id) DO NOTHING"
)
_SPEND = (
    "UPDATE points_balances SET available = available - :spend, pending = pending + :pending, "
    "updated_at = :at WHERE member_id = :member_id AND available >= :spend{gate} "
    "RETURNING member_id"
)
# PostgreSQL: one statement creates the budget or balance row if missing and counts in it (the
# parts of a statement cannot see each other's rows); the guard is the upsert's WHERE.
_RESERVE_UPSERT = (
    "INSERT INTO coupon_budgets (template, issued, redeemed, redeemed_money) "
    "SELECT :{p}template, 0, 1, :{p}money WHERE :{p}money <= :{p}cap{gate} "
    "ON CONFLICT (template) DO UPDATE SET redeemed = coupon_budgets.redeemed + 1, "
    "redeemed_money = coupon_budgets.redeemed_money + EXCLUDED.redeemed_money "
    "WHERE coupon_budgets.redeemed_money + EXCLUDED.redeemed_money <= :{p}cap RETURNING template"
)
_EARN_UPSERT = (
    "INSERT INTO points_balances (member_id, available, pending, debt, updated_at) "
    "SELECT :member_id, 0, :pending, 0, :at WHERE TRUE{gate} "
    "ON CONFLICT (member_id) DO UPDATE SET pending = points_balances.pending + EXCLUDED.pending, "
    "updated_at = EXCLUDED.updated_at RETURNING member_id"
)


def fast_place(
    conn: Connection,
    values: dict[str, Any],
    coupons: Sequence[tuple[str, int]],
    budgets: Sequence[tuple[str, int, int]],
    spend: int,
    pending: int,
    at: datetime,
) -> tuple[str, str] | None:
    """The guarded writes of an order, in the lock order, each only if the one before passed:
    the order row (unless its id exists), its ``coupons`` redeemed ((coupon id, money off),
    by id), the money ``budgets`` counted ((template, money, cap), by template), then ``spend``
    available points taken and ``pending`` ones added (which locks the member's balance).

    Returns None when all passed, else the first that did not: ``("order", order_id)`` (the id
    was taken since the caller's read; then nothing changed), ``("coupon", coupon_id)``,
    ``("budget", template)`` or ``("points", member_id)``; the writes before it stand, for the
    caller's unit of work to roll back.

    On PostgreSQL they are one statement of data-modifying CTEs, each gated on the one before
    it (so they run in that order): one round trip instead of four. On SQLite (in-process, no
    round trips) they are separate statements.
    """
    params = dict(values)
    for name in ("placed_at", "completed_at", "updated_at", "points_available_at"):
        params[name] = rawsql.stamp(conn, params[name])
    params["items_json"] = _json(params.pop("items"))
    params["coupon_ids_json"] = _json(params.pop("coupon_ids"))
    params.update(at=rawsql.stamp(conn, at), spend=spend, pending=pending)
    steps = [("order", values["order_id"])]
    for i, (coupon_id, discount) in enumerate(coupons):
        params[f"c{i}_coupon_id"], params[f"c{i}_discount"] = coupon_id, discount
        steps.append(("coupon", coupon_id))
    for i, (template, money, cap) in enumerate(budgets):
        params[f"g{i}_template"], params[f"g{i}_money"], params[f"g{i}_cap"] = template, money, cap
        steps.append(("budget", template))
    steps.append(("points", values["member_id"]))
    postgres = conn.dialect.name == "postgresql"
    statements = _place_sql(len(coupons), len(budgets), bool(spend), postgres)
    if not postgres:
        for step, group in zip(steps, statements, strict=True):
            *before, last = group.split(";")
            for statement in before:
                rawsql.execute(conn, statement, params)
            if rawsql.execute(conn, last, params).fetchone() is None:
                return step
        return None
    row = rawsql.execute(conn, statements[0], params).fetchone()
    for step, done in zip(steps, row, strict=True):
        if not done:
            return step
    return None


@functools.cache
def _place_sql(coupons: int, budgets: int, spend: bool, postgres: bool) -> tuple[str, ...]:
    """:func:`fast_place`'s statements for its shape: on PostgreSQL one, each step a CTE gated
    on the one before; on SQLite one group of ``;``-separated statements a step."""
    steps = [_ORDER_INSERT]
    steps += [_REDEEM.replace("{p}", f"c{i}_") for i in range(coupons)]
    reserve = _RESERVE_UPSERT if postgres else _ENSURE_BUDGET + ";" + _RESERVE
    steps += [reserve.replace("{p}", f"g{i}_") for i in range(budgets)]
    if postgres:
        steps.append(_SPEND if spend else _EARN_UPSERT)
    else:
        steps.append(_SPEND if spend else _ENSURE_BALANCE + ";" + _SPEND)
    if not postgres:
        return tuple(sql.replace("{gate}", "") for sql in steps)
    parts = [f"s0 AS ({steps[0]})"]
    for i, sql in enumerate(steps[1:], start=1):
        parts.append(f"s{i} AS ({sql.replace('{gate}', f' AND EXISTS (SELECT 1 FROM s{i - 1})')})")
    counts = ", ".join(f"(SELECT COUNT(*) FROM s{i})" for i in range(len(steps)))
    return (f"WITH {', '.join(parts)} SELECT {counts}",)


_LOT_ORDER = (
    "ORDER BY CASE WHEN expires_at IS NULL THEN 1 ELSE 0 END, expires_at, earned_at, lot_id"
)


def fast_allocate(conn: Connection, member_id: str, entry_id: str, points: int) -> None:
    """Take ``points`` from the member's available lots, nearest expiry first, recording the
    allocations (the caller has debited the balance, which holds the member's lock).

    The common case, the first lot holding enough, is one statement; otherwise the lots are
    walked in order.
    """
    one = rawsql.execute(
        conn,
        "UPDATE points_lots SET remaining = remaining - :points WHERE lot_id = ("
        "SELECT lot_id FROM points_lots WHERE member_id = :member_id AND status = 'available' "
        f"AND remaining > 0 {_LOT_ORDER} LIMIT 1) AND remaining >= :points RETURNING lot_id",
        {"points": points, "member_id": member_id},
    ).fetchone()
    taken: list[dict[str, Any]] = []
    if one is not None:
        taken.append({"lot_id": one[0], "points": points})
    else:
        cursor = rawsql.execute(
            conn,
            "SELECT lot_id, remaining FROM points_lots WHERE member_id = :member_id "
            f"AND status = 'available' AND remaining > 0 {_LOT_ORDER}",
            {"member_id": member_id},
        )
        left = points
        while left:
            row = cursor.fetchone()
            if row is None:  # pragma: no cover - balance == sum of available lots
                raise RuntimeError(f"member {member_id} has {left} points fewer in lots")
            n = min(left, int(row[1]))
            taken.append({"lot_id": row[0], "points": n})
            left -= n
        cursor.close()
        for t in taken:
            rawsql.execute(
                conn,
                "UPDATE points_lots SET remaining = remaining - :points "
                "WHERE lot_id = :lot_id AND remaining >= :points",
                t,
            )
    _insert_rows(
        conn,
        "points_allocations",
        ("entry_id", "lot_id", "member_id", "points"),
        [{**t, "entry_id": entry_id, "member_id": member_id} for t in taken],
    )


_ENTRY_COLUMNS = (
    "entry_id",
    "member_id",
    "kind",
    "available_delta",
    "pending_delta",
    "debt_delta",
    "idem_key",
    "order_id",
    "reason",
    "actor",
    "created_at",
)


_LOT_COLUMNS = (
    "lot_id",
    "member_id",
    "entry_id",
    "order_id",
    "points",
    "remaining",
    "status",
    "earned_at",
    "available_at",
    "expires_at",
)
_AUDIT_COLUMNS = (
    "audit_id",
    "ts",
    "actor",
    "actor_role",
    "action",
    "subject_type",
    "subject_id",
    "member_id",
    "reason",
    "details_json",
)


@functools.cache
def _marks(
    prefix: str, columns: tuple[str, ...], n: int
) -> tuple[str, tuple[tuple[str, ...], ...]]:
    """``VALUES (...), (...)`` for ``n`` rows with parameters named ``<prefix><column>_<row>``,
    and those names row by row (cached: the hot path's statements have a few shapes)."""
    names = tuple(tuple(f"{prefix}{c}_{i}" for c in columns) for i in range(n))
    return ", ".join("(" + ", ".join(f":{k}" for k in row) + ")" for row in names), names


def _bind(
    params: dict[str, Any],
    prefix: str,
    columns: tuple[str, ...],
    rows: Sequence[dict[str, Any]],
) -> str:
    """Add ``rows``' values to ``params`` (named as :func:`_marks` names them); the VALUES."""
    values, names = _marks(prefix, columns, len(rows))
    for row, keys in zip(rows, names, strict=True):
        for key, column in zip(keys, columns, strict=True):
            params[key] = row[column]
    return values


@functools.cache
def _tail_sql(entries: int, lot: bool, spend: bool) -> str:
    """The PostgreSQL statement of :func:`fast_write_tail` for its shape."""
    parts = []
    for name, table, columns, rows in (
        ("e", "points_entries", _ENTRY_COLUMNS, entries),
        ("l", "points_lots", _LOT_COLUMNS, int(lot)),
        ("a", "audit_log", _AUDIT_COLUMNS, 1),
    ):
        if rows:
            values, _ = _marks(f"{name}_", columns, rows)
            names = ", ".join(c.removesuffix("_json") for c in columns)
            parts.append(f"{name} AS (INSERT INTO {table} ({names}) VALUES {values})")
    if not spend:
        last = parts.pop()
        _, _, body = last.partition(" AS (")
        return ("WITH " + ", ".join(parts) + " " if parts else "") + body[:-1]
    parts.append(
        "t AS (UPDATE points_lots SET remaining = remaining - :t_points WHERE lot_id = ("
        "SELECT lot_id FROM points_lots WHERE member_id = :t_member AND status = 'available' "
        f"AND remaining > 0 {_LOT_ORDER} LIMIT 1) AND remaining >= :t_points RETURNING lot_id)"
    )
    return (
        "WITH " + ", ".join(parts) + " INSERT INTO points_allocations "
        "(entry_id, lot_id, member_id, points) SELECT :t_entry, lot_id, :t_member, :t_points "
        "FROM t RETURNING lot_id"
    )


def fast_write_tail(
    conn: Connection,
    entries: list[dict[str, Any]],
    lot: dict[str, Any] | None,
    audit: dict[str, Any],
    spend: tuple[str, str, int] | None,
) -> None:
    """The order's remaining writes: its entries, its earned lot, its audit row, and the
    allocation of ``spend`` (member, entry id, points) to lots, nearest expiry first.

    On PostgreSQL they go as one statement (data-modifying CTEs: one round trip instead of
    four); the allocation is folded in when the first lot holds enough, otherwise lots are
    walked afterwards. On SQLite (in-process, no round trips) they are separate statements.
    """
    entry_rows = [{**r, "created_at": rawsql.stamp(conn, r["created_at"])} for r in entries]
    lot_rows = (
        []
        if lot is None
        else [
            {
                **lot,
                **{
                    k: rawsql.stamp(conn, lot[k])
                    for k in ("earned_at", "available_at", "expires_at")
                },
            }
        ]
    )
    audit_row = {k: v for k, v in audit.items() if k != "details"}
    audit_row.update(ts=rawsql.stamp(conn, audit["ts"]), details_json=_json(audit["details"]))
    if conn.dialect.name != "postgresql":
        _insert_rows(conn, "points_entries", _ENTRY_COLUMNS, entry_rows)
        _insert_rows(conn, "points_lots", _LOT_COLUMNS, lot_rows)
        audit_names = ", ".join(c.removesuffix("_json") for c in _AUDIT_COLUMNS)
        params: dict[str, Any] = {}
        values = _bind(params, "", _AUDIT_COLUMNS, [audit_row])
        rawsql.execute(conn, f"INSERT INTO audit_log ({audit_names}) VALUES {values}", params)
        if spend is not None:
            fast_allocate(conn, *spend)
        return
    params = {}
    _bind(params, "e_", _ENTRY_COLUMNS, entry_rows)
    _bind(params, "l_", _LOT_COLUMNS, lot_rows)
    _bind(params, "a_", _AUDIT_COLUMNS, [audit_row])
    sql = _tail_sql(len(entry_rows), bool(lot_rows), spend is not None)
    if spend is None:
        rawsql.execute(conn, sql, params)
        return
    member_id, entry_id, points = spend
    params.update(t_points=points, t_member=member_id, t_entry=entry_id)
    if rawsql.execute(conn, sql, params).fetchone() is None:
        # The first lot holds fewer than the points: walk the lots (the CTE changed none).
        fast_allocate(conn, member_id, entry_id, points)


def _earned() -> Any:
    """Lots a member *earned* (orders, reviews, check-ins; not staff adjustments), not
    cancelled: points reversed by a refund were never earned; spent or expired ones were."""
    return points_lots.join(points_entries, points_entries.c.entry_id == points_lots.c.entry_id)


def points_earned_window(conn: Connection, as_of: datetime, days: int) -> dict[str, int]:
    """Points each member earned in the ``days`` before ``as_of``."""
    stmt = (
        select(points_lots.c.member_id, func.sum(points_lots.c.points))
        .select_from(_earned())
        .where(
            points_entries.c.kind.like("earn%"),
            points_lots.c.status != "cancelled",
            points_lots.c.earned_at > as_of - timedelta(days=days),
            points_lots.c.earned_at <= as_of,
        )
        .group_by(points_lots.c.member_id)
    )
    return {str(m): int(n) for m, n in conn.execute(stmt)}


def points_earned_since(conn: Connection, since: dict[str, datetime]) -> dict[str, int]:
    """Points each member earned since their own time in ``since`` (their last tier change)."""
    stmt = (
        select(points_lots.c.member_id, points_lots.c.earned_at, points_lots.c.points)
        .select_from(_earned())
        .where(points_entries.c.kind.like("earn%"), points_lots.c.status != "cancelled")
    )
    out: dict[str, int] = {}
    for member_id, earned_at, points in conn.execute(stmt):
        start = since.get(member_id)
        if start is None or as_utc(earned_at) >= start:
            out[member_id] = out.get(member_id, 0) + int(points)
    return out


def spend_by_member(
    conn: Connection, member_ids: Sequence[str], since: datetime, until: datetime
) -> dict[str, tuple[int, int]]:
    """(orders, money paid net of refunds) per member for orders placed in [since, until)."""
    out: dict[str, tuple[int, int]] = {}
    ids = list(member_ids)
    for i in range(0, len(ids), 1000):
        query = (
            select(
                orders.c.member_id,
                func.count(),
                func.sum(orders.c.paid - orders.c.refunded),
            )
            .where(
                orders.c.member_id.in_(ids[i : i + 1000]),
                orders.c.placed_at >= since,
                orders.c.placed_at < until,
            )
            .group_by(orders.c.member_id)
        )
        out.update({m: (int(n), int(s or 0)) for m, n, s in conn.execute(query)})
    return out


def points_expiring(conn: Connection, now: datetime, until: datetime) -> list[tuple[str, str, int]]:
    """(member, lot, points left) of available lots expiring in (now, until]."""
    query = (
        select(points_lots.c.member_id, points_lots.c.lot_id, points_lots.c.remaining)
        .where(
            points_lots.c.status == "available",
            points_lots.c.remaining > 0,
            points_lots.c.expires_at > now,
            points_lots.c.expires_at <= until,
        )
        .order_by(points_lots.c.member_id, points_lots.c.lot_id)
    )
    return [(m, lot, int(p)) for m, lot, p in conn.execute(query)]


def lots_still_held(conn: Connection, lot_ids: Sequence[str]) -> set[str]:
    """Of ``lot_ids``, those still available with points left."""
    out: set[str] = set()
    ids = list(lot_ids)
    for i in range(0, len(ids), 1000):
        query = select(points_lots.c.lot_id).where(
            points_lots.c.lot_id.in_(ids[i : i + 1000]),
            points_lots.c.status == "available",
            points_lots.c.remaining > 0,
        )
        out.update(conn.execute(query).scalars())
    return out


# -- identity merges (ledger/merge.py) ---------------------------------------------------------


def move_rows(conn: Connection, table: Any, source: str, target: str) -> int:
    """Re-key every row of ``source`` in ``table`` (keyed by its own id) to ``target``."""
    stmt = update(table).where(table.c.member_id == source).values(member_id=target)
    return int(conn.execute(stmt).rowcount)


def coupon_collisions(conn: Connection, source: str, target: str) -> list[str]:
    """Source coupons whose (issue_key, template) the target holds too (one issuance reached
    both ids): they cannot move under the same key."""
    other = coupons.alias("other")
    query = select(coupons.c.coupon_id).where(
        coupons.c.member_id == source,
        exists().where(
            other.c.member_id == target,
            other.c.issue_key == coupons.c.issue_key,
            other.c.template == coupons.c.template,
        ),
    )
    return list(conn.execute(query).scalars())


def rename_issue_key(conn: Connection, coupon_ids: Sequence[str], suffix: str) -> None:
    if coupon_ids:
        conn.execute(
            update(coupons)
            .where(coupons.c.coupon_id.in_(coupon_ids))
            .values(issue_key=coupons.c.issue_key + suffix)
        )


def member_coupon_counts(conn: Connection, member_id: str) -> dict[str, int]:
    c = coupon_member_counts.c
    return dict(conn.execute(select(c.template, c.issued).where(c.member_id == member_id)).all())


def set_member_coupon_count(conn: Connection, template: str, member_id: str, n: int) -> None:
    c = coupon_member_counts.c
    conn.execute(
        coupon_member_counts.delete().where(c.template == template, c.member_id == member_id)
    )
    if n:
        conn.execute(
            insert(coupon_member_counts).values(template=template, member_id=member_id, issued=n)
        )


def issued_coupons(conn: Connection, member_id: str, template: str) -> list[str]:
    """The member's unused coupons of ``template``, latest expiry first (the ones to void)."""
    c = coupons.c
    query = (
        select(c.coupon_id)
        .where(c.member_id == member_id, c.template == template, c.status == "issued")
        .order_by(c.valid_until.desc(), c.coupon_id)
    )
    return list(conn.execute(query).scalars())


def void_coupons(conn: Connection, coupon_ids: Sequence[str]) -> None:
    if coupon_ids:
        conn.execute(
            update(coupons)
            .where(coupons.c.coupon_id.in_(coupon_ids), coupons.c.status == "issued")
            .values(status="void")
        )


def counter_rows(conn: Connection, table: Any, member_id: str) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in conn.execute(select(table).where(table.c.member_id == member_id)).mappings()
    ]


def delete_member_rows(conn: Connection, table: Any, member_id: str) -> int:
    return int(conn.execute(table.delete().where(table.c.member_id == member_id)).rowcount)


def add_to_counter(
    conn: Connection,
    table: Any,
    key: dict[str, Any],
    column: str,
    amount: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Add ``amount`` to ``column`` of the row at ``key`` (inserting it, with ``extra``, when
    missing)."""
    where = [table.c[k] == v for k, v in key.items()]
    found = conn.execute(select(table.c[column]).where(*where)).first()
    if found is None:
        conn.execute(insert(table).values(**key, **(extra or {}), **{column: amount}))
    else:
        conn.execute(
            update(table).where(*where).values({column: table.c[column] + amount, **(extra or {})})
        )


def points_redeemed_by_member(
    conn: Connection, member_ids: Sequence[str], since: datetime, until: datetime
) -> dict[str, int]:
    """Points spent (on orders or coupons) per member in [since, until), net of nothing: a
    refund's restored points are a separate entry."""
    out: dict[str, int] = {}
    ids = list(member_ids)
    e = points_entries.c
    for i in range(0, len(ids), 1000):
        query = (
            select(e.member_id, func.sum(-e.available_delta))
            .where(
                e.member_id.in_(ids[i : i + 1000]),
                e.kind.in_(("spend_order", "spend_redeem")),
                e.created_at >= since,
                e.created_at < until,
            )
            .group_by(e.member_id)
        )
        out.update({m: int(s or 0) for m, s in conn.execute(query)})
    return out


# -- what the ledgers owe (the console's overview) -----------------------------------------------


def points_liability(conn: Connection, now: datetime) -> dict[str, int]:
    """Available and pending balances, and lot points expiring in 30 / 90 days.

    The expiring sums read only the available lots with an expiry up to 90 days ahead (a range
    of ``ix_points_lots_status_expires``), not every lot; lots past their expiry the sweep has
    not reached yet still count, as they are still owed."""
    available, pending = conn.execute(
        select(
            func.coalesce(func.sum(points_balances.c.available), 0),
            func.coalesce(func.sum(points_balances.c.pending), 0),
        )
    ).one()
    in30 = case((points_lots.c.expires_at <= now + timedelta(days=30), points_lots.c.remaining))
    in30_sum, in90_sum = conn.execute(
        select(
            func.coalesce(func.sum(in30), 0), func.coalesce(func.sum(points_lots.c.remaining), 0)
        ).where(
            points_lots.c.status == "available",
            points_lots.c.expires_at.is_not(None),
            points_lots.c.expires_at <= now + timedelta(days=90),
            points_lots.c.remaining > 0,
        )
    ).one()
    return {
        "available": int(available),
        "pending": int(pending),
        "expiring_30d": int(in30_sum),
        "expiring_90d": int(in90_sum),
    }


def coupon_budget_use(conn: Connection) -> list[tuple[str, int, int, int]]:
    """(template, issued, redeemed, money redeemed in fen) per coupon template."""
    b = coupon_budgets.c
    rows = conn.execute(
        select(b.template, b.issued, b.redeemed, b.redeemed_money).order_by(b.template)
    ).all()
    return [(str(t), int(i), int(r), int(m)) for t, i, r, m in rows]
