"""Orders and refunds from the platform, driving both ledgers in one transaction each.

* :func:`place`: the coupons and points the member chose are redeemed atomically or the order
  is refused as a whole (nothing changes); the points it earns are credited *pending* until the
  return window (``pending_days``) closes. Idempotent by the platform's order id: the same
  order again gets the stored order, a different one under the same id ``order_exists``.
* :func:`refund`: full or partial, idempotent by the refund id. The points the order earned are
  taken back pro rata to the money refunded (cumulatively, rounded half up, so the refunds of
  a whole order take back exactly what it earned); the points it was paid with are given back
  in the same proportion (as a new available lot expiring when the latest of the spent lots
  would have). A full refund gives back its coupons (templates with ``restore_on_refund``).
  Points the member has already spent are handled by the program's ``refund_shortfall`` rule
  (see :mod:`memberwise.ledger.points`).
* :func:`complete`: the return window closed early: the order's points become available.

Earning: each item earns on its share of the money paid for goods (coupons and points are
not paid money), ``per_unit`` points per ``unit`` fen, times the tier multiplier, the
category bonus and any running campaign; the total is rounded down to whole points, then cut
by the daily and monthly caps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import orjson
from sqlalchemy import Connection, RowMapping

from memberwise.kit.ids import new_id
from memberwise.kit.pagination import InvalidCursor, Page, decode_cursor, encode_cursor
from memberwise.kit.time import as_utc, utcnow
from memberwise.ledger import (
    benefits,
    coupons,
    fast_entries,
    fast_repository,
    order_repository,
    points,
    repository,
)
from memberwise.ledger.schemas import (
    EntryKind,
    LotStatus,
    MemberOrder,
    OrderIn,
    OrderItem,
    OrderOut,
    OrderStatus,
    RefundIn,
    RefundLine,
    RefundOut,
)
from memberwise.ledger.service import (
    InsufficientPoints,
    InvalidOrder,
    MemberUnknown,
    OrderExists,
    OrderNotFound,
    OrderRefunded,
    PointsNotAllowed,
    RefundExists,
    RefundTooLarge,
    needs_tier,
    request_hash,
)
from memberwise.membership import service as membership
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, Principal
from memberwise.program.ledger import PointsSettings, RefundShortfall
from memberwise.program.schemas import Program


def earn_for(
    settings: PointsSettings,
    items: Sequence[OrderItem],
    goods_paid: int,
    *,
    tier: str | None,
    at: datetime,
    timezone: str,
    bonus: Decimal = Decimal(1),
) -> int:
    """Points an order earns (before caps) when ``goods_paid`` fen of its goods were paid in
    money: each item's share of it, times its multiplier (and the member's points-multiplier
    benefit, ``bonus``), rounded down once at the end."""
    from zoneinfo import ZoneInfo

    goods = sum(i.price * i.quantity for i in items)
    if goods <= 0 or goods_paid <= 0 or settings.per_unit == 0:
        return 0
    local = at.astimezone(ZoneInfo(timezone))
    total = Fraction(0)
    for item in items:
        share = Fraction(item.price * item.quantity * goods_paid, goods)
        multiplier = Fraction(settings.multiplier(tier=tier, category=item.category, at=local))
        total += share * multiplier
    return math.floor(total * Fraction(bonus) * settings.per_unit / settings.unit)


def _half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


def _out(row: RowMapping | dict[str, Any]) -> OrderOut:
    return OrderOut(
        order_id=row["order_id"],
        member_id=row["member_id"],
        status=OrderStatus(row["status"]),
        goods_amount=row["goods_amount"],
        shipping_fee=row["shipping_fee"],
        coupon_discount=row["coupon_discount"],
        shipping_discount=row["shipping_discount"],
        points_used=row["points_used"],
        points_value=row["points_value"],
        paid=row["paid"],
        points_earned=row["points_earned"],
        points_pending_until=row["points_available_at"],
        refunded=row["refunded"],
        points_reversed=row["points_reversed"],
        points_restored=row["points_restored"],
        coupons=list(row["coupon_ids"]),
        placed_at=row["placed_at"],
        completed_at=row["completed_at"],
    )


def _replay(row: RowMapping, digest: str) -> OrderOut:
    if row["request_hash"] != digest:
        raise OrderExists(f"order {row['order_id']!r} was already placed with different contents")
    return _out(row)


def place(
    conn: Connection,
    program: Program,
    order: OrderIn,
    *,
    tier: str | None = None,
    lookup_tier: bool = False,
    bonus: Decimal = Decimal(1),
    free_shipping: bool = False,
    at: datetime | None = None,
    actor: Principal = SYSTEM,
) -> tuple[OrderOut, bool]:
    """Place an order: redeem its coupons and points, credit the points it earns (pending).

    ``lookup_tier`` asks the membership domain for the member's tier within the order's first
    read (instead of ``tier``): what the API does when the program's rules depend on tiers.
    ``free_shipping``: the member holds a free-shipping benefit whose minimum this order
    reaches, so its shipping fee is waived (``shipping_discount``) before coupons are priced,
    as the checkout quote does (a free-shipping coupon then does not apply).

    Returns the order and whether it was created now (False: a replay). Raises OrderExists,
    MemberUnknown, InvalidOrder, PointsNotAllowed, InsufficientPoints and the coupon refusals
    (see :func:`memberwise.ledger.coupons.price` and
    :func:`~memberwise.ledger.coupons.refuse_redemption`); on any refusal nothing changes.
    """
    at = as_utc(order.placed_at or at or utcnow())
    digest = request_hash(order)
    first = order.coupon_ids[0] if order.coupon_ids else None
    exists, known, coupon, found_tier = fast_repository.fast_prefetch(
        conn,
        order.order_id,
        order.member_id,
        first,
        at,
        tier_query=membership.TIER_QUERY if lookup_tier else None,
    )
    if lookup_tier:
        tier = found_tier
    if exists:
        found = order_repository.get_order(conn, order.order_id)
        assert found is not None
        return _replay(found, digest), False
    if not known:
        raise MemberUnknown(f"no member {order.member_id!r}")
    settings = program.points
    goods = sum(i.price * i.quantity for i in order.items)
    shipping = 0 if free_shipping else order.shipping_fee
    applied = coupons.price(
        conn,
        program,
        order.member_id,
        order.coupon_ids,
        order.items,
        shipping,
        tier=tier,
        at=at,
        read={first: coupon} if first is not None and coupon is not None else None,
    )
    coupon_discount = sum(a.goods for a in applied)
    shipping_discount = (order.shipping_fee - shipping) + sum(a.shipping for a in applied)
    points_value = order.points * settings.point_value
    if order.points:
        if any(not a.with_points for a in applied):
            raise PointsNotAllowed("a coupon of this order cannot be combined with points")
        limit = math.floor((goods - coupon_discount) * settings.max_payment_share)
        if points_value > limit:
            raise PointsNotAllowed(
                f"points may pay at most {limit} fen of this order's goods, not {points_value}"
            )
    goods_paid = goods - coupon_discount - points_value
    earned = earn_for(
        settings,
        order.items,
        goods_paid,
        tier=tier,
        at=at,
        timezone=program.display_timezone,
        bonus=bonus,
    )
    available_at = at + timedelta(days=settings.pending_days)
    values: dict[str, Any] = {
        "order_id": order.order_id,
        "member_id": order.member_id,
        "status": OrderStatus.placed.value,
        "merchant_id": order.merchant_id,
        "goods_amount": goods,
        "shipping_fee": order.shipping_fee,
        "coupon_discount": coupon_discount,
        "shipping_discount": shipping_discount,
        "points_used": order.points,
        "points_value": points_value,
        "paid": goods_paid + order.shipping_fee - shipping_discount,
        "points_earned": earned,
        "refunded": 0,
        "points_reversed": 0,
        "points_restored": 0,
        "tier": tier,
        "items": [i.model_dump(mode="json") for i in order.items],
        "coupon_ids": list(order.coupon_ids),
        "points_available_at": available_at,
        "request_hash": digest,
        "placed_at": at,
        "completed_at": None,
        "updated_at": at,
    }
    member_id = order.member_id
    capped = settings.daily_cap is not None or settings.monthly_cap is not None
    marked, counted = coupons.redemptions(applied)
    # The order row is the first write: it serializes a concurrent duplicate of this order
    # (PostgreSQL waits on the key; SQLite's write lock is taken here). Then the coupons, the
    # budgets, and one guarded statement that spends the points and adds the pending ones
    # (and locks the member's balance, after the coupons and budgets: the lock order).
    refused = fast_repository.fast_place(
        conn, values, marked, counted, order.points, 0 if capped else earned, at
    )
    if refused is not None:
        step, key = refused
        if step == "order":
            found = order_repository.get_order(conn, order.order_id)
            assert found is not None
            return _replay(found, digest), False
        if step != "points":
            coupons.refuse_redemption(conn, step, key, at)
        have = repository.get_balance(conn, member_id)
        raise InsufficientPoints(
            f"the member has {0 if have is None else have['available']} points available, "
            f"fewer than the {order.points} asked for"
        )
    entries: list[dict[str, Any]] = []
    if order.points:
        spend = points.entry_row(
            member_id,
            EntryKind.spend_order,
            f"order:{order.order_id}:spend",
            at,
            actor,
            available=-order.points,
            order_id=order.order_id,
        )
        entries.append(spend)
    if capped and earned:
        earned = points.cap_earn(conn, program, member_id, earned, at)
        if earned:
            repository.change_balance(conn, member_id, at, pending=earned)
        if earned != values["points_earned"]:
            values["points_earned"] = earned
            order_repository.update_order(conn, order.order_id, {"points_earned": earned})
    earn = points.entry_row(
        member_id,
        EntryKind.earn_order,
        f"order:{order.order_id}:earn",
        at,
        actor,
        pending=earned,
        order_id=order.order_id,
    )
    entries.append(earn)
    lot = (
        {
            "lot_id": new_id(),
            "member_id": member_id,
            "entry_id": earn["entry_id"],
            "order_id": order.order_id,
            "points": earned,
            "remaining": earned,
            "status": LotStatus.pending.value
            if settings.pending_days
            else LotStatus.available.value,
            "earned_at": at,
            "available_at": available_at,
            "expires_at": settings.expires_at(at, program.display_timezone),
        }
        if earned
        else None
    )
    audit = privacy.audit_row(
        actor,
        "orders.place",
        "order",
        order.order_id,
        member_id=member_id,
        details={
            "paid": values["paid"],
            "coupons": list(order.coupon_ids),
            "coupon_discount": coupon_discount + shipping_discount,
            "points_used": order.points,
            "points_earned": values["points_earned"],
        },
    )
    spend_of = (member_id, entries[0]["entry_id"], order.points) if order.points else None
    fast_entries.fast_write_tail(conn, entries, lot, audit, spend_of)
    return _out(values), True


def place_now(
    conn: Connection, program: Program, order: OrderIn, *, actor: Principal = SYSTEM
) -> tuple[OrderOut, bool]:
    """:func:`place` as ``POST /v1/orders`` does it: at the order's ``placed_at`` (or now), with
    the member's points-multiplier and free-shipping benefits (the same the checkout quote
    applies), and their tier (within the order's first read) when the program's rules depend
    on tiers."""
    at = as_utc(order.placed_at or utcnow())
    goods = sum(i.price * i.quantity for i in order.items)
    bonus, free = benefits.order_terms(conn, program, order.member_id, goods, at)
    lookup = needs_tier(program)
    return place(
        conn,
        program,
        order,
        lookup_tier=lookup,
        bonus=bonus,
        free_shipping=free,
        at=at,
        actor=actor,
    )


def get(conn: Connection, order_id: str) -> OrderOut:
    """An order as it stands. Raises OrderNotFound."""
    row = order_repository.get_order(conn, order_id)
    if row is None:
        raise OrderNotFound(f"no order {order_id!r}")
    return _out(row)


def complete(
    conn: Connection, order_id: str, *, at: datetime | None = None, actor: Principal = SYSTEM
) -> OrderOut:
    """The order's return window closed: its pending points become available now.

    Idempotent (completing again changes nothing). Raises OrderNotFound.
    """
    at = as_utc(at or utcnow())
    row = order_repository.lock_order(conn, order_id, at)
    if row is None:
        raise OrderNotFound(f"no order {order_id!r}")
    if row["completed_at"] is not None:
        return _out(row)
    moved = points.mature_order(conn, row["member_id"], order_id, at, actor)
    values: dict[str, Any] = {"completed_at": at}
    if row["status"] == OrderStatus.placed.value:
        values["status"] = OrderStatus.completed.value
    order_repository.update_order(conn, order_id, values)
    privacy.audit(
        conn,
        actor,
        "orders.complete",
        "order",
        order_id,
        member_id=row["member_id"],
        details={"points_available": moved},
    )
    return _out({**row, **values})


def _refund_out(row: RowMapping | dict[str, Any], order: OrderOut) -> RefundOut:
    return RefundOut(
        refund_id=row["refund_id"],
        order_id=row["order_id"],
        amount=row["amount"],
        points_reversed=row["points_reversed"],
        points_restored=row["points_restored"],
        points_shortfall=row["points_shortfall"],
        refund_deduction=row["refund_deduction"],
        coupons_restored=list(row["coupons_restored"]),
        order=order,
    )


def _order_cursor(row: RowMapping) -> str:
    return encode_cursor(f"{as_utc(row['placed_at']).isoformat()}|{row['order_id']}")


def _order_key(cursor: str | None) -> tuple[datetime, str] | None:
    key = decode_cursor(cursor)
    if key is None:
        return None
    at, sep, order_id = key.partition("|")
    try:
        if not sep or not order_id:
            raise ValueError(key)
        return as_utc(datetime.fromisoformat(at)), order_id
    except ValueError:
        raise InvalidCursor("the cursor is not valid; pass next_cursor from a page") from None


def member_orders(
    conn: Connection, member_id: str, *, after: str | None, limit: int
) -> Page[MemberOrder]:
    """A page of the member's orders, newest first, each with its refunds; ``after`` is the
    previous page's ``next_cursor``. Raises InvalidCursor (the member's existence is the
    caller's check)."""
    rows = order_repository.member_orders(conn, member_id, after=_order_key(after), limit=limit + 1)
    page = rows[:limit]
    refunds: dict[str, list[RefundLine]] = {}
    for r in order_repository.refunds_of_orders(conn, [row["order_id"] for row in page]):
        refunds.setdefault(r["order_id"], []).append(RefundLine.model_validate(dict(r)))
    items = [
        MemberOrder(**_out(row).model_dump(), refunds=refunds.get(row["order_id"], []))
        for row in page
    ]
    return Page[MemberOrder](
        items=items, next_cursor=_order_cursor(page[-1]) if len(rows) > limit else None
    )


def find_refund(conn: Connection, refund_id: str) -> RefundOut | None:
    """Refund ``refund_id`` with its order as it stands now, or None when there is none."""
    found = order_repository.get_refund(conn, refund_id)
    return None if found is None else _refund_out(found, get(conn, found["order_id"]))


def member_order(conn: Connection, member_id: str, order_id: str) -> OrderOut:
    """The member's order ``order_id``. Raises OrderNotFound when there is no such order or
    it is another member's (the message does not tell which)."""
    row = order_repository.get_order(conn, order_id)
    if row is None or row["member_id"] != member_id:
        raise OrderNotFound(f"the member has no order {order_id!r}")
    return _out(row)


def _stored_refund(conn: Connection, found: RowMapping, order_id: str, digest: str) -> RefundOut:
    if found["order_id"] != order_id or found["request_hash"] != digest:
        raise RefundExists(f"refund {found['refund_id']!r} was already made with other contents")
    return _refund_out(found, get(conn, order_id))


def refund(
    conn: Connection,
    program: Program,
    order_id: str,
    body: RefundIn,
    *,
    at: datetime | None = None,
    actor: Principal = SYSTEM,
) -> tuple[RefundOut, bool]:
    """Refund part or all of an order (see the module docstring for the points rules).

    Returns the refund and whether it was made now (False: a replay). Raises OrderNotFound,
    RefundExists (same id, other contents), OrderRefunded, RefundTooLarge.
    """
    at = as_utc(body.at or at or utcnow())
    digest = request_hash({"order_id": order_id, **body.model_dump(mode="json", exclude={"at"})})
    found = order_repository.get_refund(conn, body.refund_id)
    if found is not None:
        return _stored_refund(conn, found, order_id, digest), False
    # Locking the order serializes its refunds (and is this transaction's first write).
    order = order_repository.lock_order(conn, order_id, at)
    if order is None:
        raise OrderNotFound(f"no order {order_id!r}")
    found = order_repository.get_refund(conn, body.refund_id)
    if found is not None:
        return _stored_refund(conn, found, order_id, digest), False
    paid, refunded = int(order["paid"]), int(order["refunded"])
    if order["status"] == OrderStatus.refunded.value:
        raise OrderRefunded(f"order {order_id!r} has been refunded in full already")
    remaining = paid - refunded
    amount = remaining if body.full else int(body.amount or 0)
    if amount > remaining:
        raise RefundTooLarge(f"order {order_id!r} has {remaining} fen left to refund, not {amount}")
    if paid == 0 and not body.full:  # pragma: no cover - amount >= 1 > remaining == 0
        raise InvalidOrder("nothing was paid in money; refund it with full: true")
    total = refunded + amount
    full = body.full or total == paid
    settings = program.points
    member_id = order["member_id"]
    earned, used = int(order["points_earned"]), int(order["points_used"])
    target_reversed = earned if full else _half_up(earned * total, paid)
    target_restored = used if full else _half_up(used * total, paid)
    to_reverse = target_reversed - int(order["points_reversed"])
    to_restore = target_restored - int(order["points_restored"])
    # Lock order: coupons and budgets, then the member's balance.
    restored_coupons = coupons.restore(conn, program, order_id, at) if full else []
    repository.lock_balance(conn, member_id, at)
    if to_restore > 0:
        spend = repository.entry_by_key(conn, f"order:{order_id}:spend")
        expiries = (
            [r["expires_at"] for r in repository.allocations_of(conn, spend["entry_id"])]
            if spend is not None
            else []
        )
        expires: datetime | bool | None = (
            True if not expiries else None if any(e is None for e in expiries) else max(expiries)
        )
        points.credit(
            conn,
            program,
            member_id,
            to_restore,
            kind=EntryKind.restore_refund,
            key=f"refund:{body.refund_id}:restore",
            at=at,
            order_id=order_id,
            actor=actor,
            capped=False,
            expires_at=expires,
            audited=False,
            fresh=True,
        )
    debt_rule = settings.refund_shortfall is RefundShortfall.debt
    reversal = points.reverse(
        conn,
        settings,
        member_id,
        order_id,
        to_reverse,
        key=f"refund:{body.refund_id}:reverse",
        at=at,
        actor=actor,
        allow_debt=debt_rule,
    )
    deduction = 0
    if reversal.shortfall and not debt_rule:
        deduction = min(reversal.shortfall * settings.point_value, amount)
        owed = reversal.shortfall - deduction // settings.point_value
        if owed:
            # The refund is too small to cover the points: the rest is owed as points.
            _record_debt(conn, member_id, order_id, owed, body.refund_id, at, actor)
    status = OrderStatus.refunded if full else OrderStatus.partially_refunded
    order_values = {
        "refunded": total,
        "points_reversed": target_reversed,
        "points_restored": target_restored,
        "status": status.value,
        "updated_at": at,
    }
    order_repository.update_order(conn, order_id, order_values)
    values: dict[str, Any] = {
        "refund_id": body.refund_id,
        "order_id": order_id,
        "member_id": member_id,
        "amount": amount,
        "points_reversed": to_reverse,
        "points_restored": max(0, to_restore),
        "points_shortfall": reversal.shortfall,
        "refund_deduction": deduction,
        "coupons_restored": restored_coupons,
        "request_hash": digest,
        "created_at": at,
    }
    order_repository.insert_refund(conn, values)
    privacy.audit(
        conn,
        actor,
        "orders.refund",
        "order",
        order_id,
        member_id=member_id,
        details={
            k: values[k]
            for k in (
                "refund_id",
                "amount",
                "points_reversed",
                "points_restored",
                "points_shortfall",
                "refund_deduction",
                "coupons_restored",
            )
        },
    )
    return _refund_out(values, _out({**order, **order_values})), True


def _record_debt(
    conn: Connection,
    member_id: str,
    order_id: str,
    owed: int,
    refund_id: str,
    at: datetime,
    actor: Principal,
) -> None:
    from memberwise.ledger.points import entry_row

    repository.change_balance(conn, member_id, at, debt=owed)
    entry = entry_row(
        member_id,
        EntryKind.debt,
        f"refund:{refund_id}:debt",
        at,
        actor,
        debt=owed,
        order_id=order_id,
        reason="points taken back exceed the refund's money",
    )
    repository.insert_entries(conn, [entry])


def lines(conn: Connection, order_id: str) -> tuple[OrderOut, list[OrderItem]]:
    """An order and its lines as placed (the service desk's after-sales requests name lines).

    Raises OrderNotFound.
    """
    row = order_repository.get_order(conn, order_id)
    if row is None:
        raise OrderNotFound(f"no order {order_id!r}")
    items = row["items"]
    if isinstance(items, str):  # stored as JSON text by the hot path's raw insert
        items = orjson.loads(items)
    return _out(row), [OrderItem.model_validate(i) for i in items]
