"""Every query of the coupon ledger: budgets, per-member issue counts, coupons and their
redemption (the guarded updates: see :mod:`memberwise.ledger.repository`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, case, func, insert, literal, select, update

from memberwise.kit.db import insert_ignore
from memberwise.ledger.tables import coupon_budgets, coupon_member_counts, coupons


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


# -- members -------------------------------------------------------------------------------------


def known_members(conn: Connection, member_ids: Sequence[str]) -> set[str]:
    """Which of ``member_ids`` the platform registered (or sent events of)."""
    from memberwise.members.tables import members

    if not member_ids:
        return set()
    rows = conn.execute(select(members.c.member_id).where(members.c.member_id.in_(member_ids)))
    return set(rows.scalars())
