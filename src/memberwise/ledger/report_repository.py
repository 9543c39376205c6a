"""Read-only aggregates over the ledgers that other parts ask for: points earned in a window
(tier scores), spend and points redeemed per member (experiments), points about to expire
(journeys), and what the ledgers owe (the console's overview).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, case, func, select

from memberwise.kit.time import as_utc
from memberwise.ledger.tables import (
    coupon_budgets,
    orders,
    points_balances,
    points_entries,
    points_lots,
)


def _earned() -> Any:
    """Lots a member *earned* (orders, reviews, check-ins; not staff adjustments), not
    cancelled: points reversed by a refund were never earned; spent or expired ones were."""
    return points_lots.join(points_entries, points_entries.c.entry_id == points_lots.c.entry_id)


def points_earned_window_query(as_of: datetime, days: int) -> Select[Any]:
    """(member_id, points) earned in the ``days`` before ``as_of``, one row per member who
    earned any: what :func:`points_earned_window` reads, and what a Spark build streams out."""
    return (
        select(points_lots.c.member_id, func.sum(points_lots.c.points).label("points"))
        .select_from(_earned())
        .where(
            points_entries.c.kind.like("earn%"),
            points_lots.c.status != "cancelled",
            points_lots.c.earned_at > as_of - timedelta(days=days),
            points_lots.c.earned_at <= as_of,
        )
        .group_by(points_lots.c.member_id)
    )


def points_earned_window(conn: Connection, as_of: datetime, days: int) -> dict[str, int]:
    """Points each member earned in the ``days`` before ``as_of``."""
    return {str(m): int(n) for m, n in conn.execute(points_earned_window_query(as_of, days))}


def earned_lots_query() -> Select[Any]:
    """(member_id, earned_at, points) of every lot earned and not cancelled: what
    :func:`points_earned_since` sums per member, and what a Spark build streams out to sum in
    its executors."""
    return (
        select(points_lots.c.member_id, points_lots.c.earned_at, points_lots.c.points)
        .select_from(_earned())
        .where(points_entries.c.kind.like("earn%"), points_lots.c.status != "cancelled")
    )


def points_earned_since(conn: Connection, since: dict[str, datetime]) -> dict[str, int]:
    """Points each member earned since their own time in ``since`` (their last tier change)."""
    out: dict[str, int] = {}
    for member_id, earned_at, points in conn.execute(earned_lots_query()):
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
