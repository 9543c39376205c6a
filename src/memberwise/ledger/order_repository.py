"""Every query of orders and refunds (the ledger rows an order or a refund writes are the
points' and coupons' repositories').
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, insert, or_, select, update

from memberwise.kit.db import insert_ignore
from memberwise.ledger.tables import order_refunds, orders


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
