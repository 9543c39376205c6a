"""Typed factories for the ledger tests: a program with points rules and coupon templates,
members, orders, and the invariants every state of the ledgers must satisfy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from memberwise.kit.time import utcnow
from memberwise.ledger.schemas import OrderIn, OrderItem
from memberwise.ledger.tables import (
    coupon_budgets,
    coupons,
    points_allocations,
    points_balances,
    points_entries,
    points_lots,
)
from memberwise.members.repository import insert_seen
from memberwise.program.schemas import Program

T0 = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)  # 12:00 in Asia/Shanghai


def make_program(**points: Any) -> Program:
    """A program earning 1 point per CNY (x2 for gold), 7-day return window, with coupons."""
    settings: dict[str, Any] = {"tier_multipliers": {"gold": 2}, "review": 20, "check_in": 5}
    settings.update(points)
    return Program.model_validate(
        {
            "name": "test",
            "points": settings,
            "coupons": {
                "ten_off": {"kind": "amount_off", "amount": 1000, "valid_days": 30},
                "single": {
                    "kind": "amount_off",
                    "amount": 500,
                    "valid_days": 30,
                    "per_member_limit": 1,
                },
                "big_50_300": {
                    "kind": "threshold",
                    "amount": 5000,
                    "min_spend": 30000,
                    "valid_days": 30,
                    "budget_count": 3,
                },
                "pct": {
                    "kind": "percent_off",
                    "percent": 10,
                    "max_discount": 2000,
                    "valid_days": 30,
                    "stackable": True,
                },
                "ship": {"kind": "free_shipping", "valid_days": 30, "stackable": True},
                "gold_only": {
                    "kind": "amount_off",
                    "amount": 300,
                    "valid_days": 30,
                    "tiers": ["gold"],
                },
                "money": {
                    "kind": "amount_off",
                    "amount": 1000,
                    "valid_days": 30,
                    "budget_money": 2500,
                },
                "shop": {
                    "kind": "amount_off",
                    "amount": 800,
                    "valid_days": 30,
                    "points_price": 300,
                },
                "no_points": {
                    "kind": "amount_off",
                    "amount": 100,
                    "valid_days": 30,
                    "with_points": False,
                },
                "keep": {
                    "kind": "amount_off",
                    "amount": 200,
                    "valid_days": 30,
                    "restore_on_refund": False,
                },
            },
        }
    )


def add_members(conn: Connection, *member_ids: str) -> None:
    insert_seen(conn, list(member_ids), utcnow())


def order(
    order_id: str,
    member_id: str = "m1",
    *,
    price: int = 10_000,
    quantity: int = 1,
    category: str | None = "food",
    coupons: list[str] | None = None,
    points: int = 0,
    shipping_fee: int = 0,
    at: datetime | None = None,
    items: list[OrderItem] | None = None,
) -> OrderIn:
    return OrderIn(
        order_id=order_id,
        member_id=member_id,
        items=items or [OrderItem(item_id="i1", category=category, price=price, quantity=quantity)],
        coupon_ids=coupons or [],
        points=points,
        shipping_fee=shipping_fee,
        placed_at=at,
    )


def check_invariants(conn: Connection) -> None:
    """Every balance equals the sum of its entries and of its lots, never negative; every lot's
    remaining equals its points less its allocations; coupon budgets hold."""
    e, lot, a = points_entries.c, points_lots.c, points_allocations.c
    sums = {
        r.member_id: (int(r.av), int(r.pe), int(r.de))
        for r in conn.execute(
            select(
                e.member_id,
                func.sum(e.available_delta).label("av"),
                func.sum(e.pending_delta).label("pe"),
                func.sum(e.debt_delta).label("de"),
            ).group_by(e.member_id)
        )
    }
    balances = {
        r.member_id: (int(r.available), int(r.pending), int(r.debt))
        for r in conn.execute(select(points_balances))
    }
    for member_id, cached in balances.items():
        assert min(cached) >= 0, (member_id, cached)
        assert sums.get(member_id, (0, 0, 0)) == cached, (member_id, cached, sums.get(member_id))
    for member_id, summed in sums.items():
        assert balances.get(member_id, (0, 0, 0)) == summed
    lots = {
        (r.member_id, r.status): int(r.n)
        for r in conn.execute(
            select(lot.member_id, lot.status, func.sum(lot.remaining).label("n")).group_by(
                lot.member_id, lot.status
            )
        )
    }
    for member_id, (available, pending, _) in balances.items():
        assert lots.get((member_id, "available"), 0) == available, member_id
        assert lots.get((member_id, "pending"), 0) == pending, member_id
        assert lots.get((member_id, "expired"), 0) == 0
        assert lots.get((member_id, "cancelled"), 0) == 0
    allocated: dict[str, int] = dict(
        conn.execute(select(a.lot_id, func.sum(a.points)).group_by(a.lot_id)).all()
    )
    for row in conn.execute(select(lot.lot_id, lot.points, lot.remaining)):
        assert row.remaining == row.points - int(allocated.get(row.lot_id, 0)), row.lot_id
    for row in conn.execute(select(coupon_budgets)):
        redeemed = conn.execute(
            select(func.count()).where(coupons.c.template == row.template)
        ).scalar_one()
        assert row.issued >= 0 and row.redeemed_money >= 0
        assert redeemed >= 0
