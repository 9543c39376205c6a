"""The checkout quote: what a member would pay for a cart, and why, without changing anything.

The platform sends the member and the cart; the quote answers, in this order:

1. **Member prices** -- each line at the lowest unit price of the member-price benefits the
   member holds that cover its category or brand (rounded half up to the fen).
2. **Coupons** -- every coupon the member holds, with what it would take off this cart or why it
   does not apply (expired, another tier's, below its minimum spend, no eligible goods), and the
   **best combination**: found by trying every allowed combination (see :func:`best_combination`).
3. **Shipping** -- free when a free-shipping benefit's minimum is reached, else a free-shipping
   coupon in the best combination may pay it.
4. **Points** -- how many the member may pay with on what is left (``max_payment_share`` of the
   goods, not with a coupon that refuses points) and their value in fen.

How coupons add up (the same rules ``POST /v1/orders`` redeems by): a coupon's minimum spend and
its percent are taken on its *eligible goods* (its categories, all goods when it names none) at
member prices, before other coupons; a coupon takes off at most its eligible goods; all coupons
together take off at most the goods. An order uses one coupon, or several that are all
``stackable``, at most one of each template.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from itertools import combinations

from pydantic import BaseModel, Field, StrictInt, model_validator
from sqlalchemy import Connection

from memberwise.ledger import benefits, coupons, points
from memberwise.ledger import service as ledger
from memberwise.ledger.schemas import CouponStatus, OrderItem
from memberwise.program.benefits import FreeShipping, MemberPrice
from memberwise.program.ledger import CouponKind, CouponTemplate
from memberwise.program.schemas import Program

#: Stackable coupon templates tried together at most (2^12 = 4,096 combinations); past it the
#: ones taking off the most are kept, which is exact unless a cart holds more than 12 kinds.
MAX_STACKABLE = 12
MAX_FEN = 1_000_000_000


# -- request and answer -----------------------------------------------------------------------


class CartItem(BaseModel):
    """One line of the cart, at the platform's list price (fen per unit)."""

    item_id: str = Field(min_length=1, max_length=128)
    category: str | None = Field(default=None, max_length=128)
    brand: str | None = Field(default=None, max_length=128)
    merchant_id: str | None = Field(default=None, max_length=128)
    price: StrictInt = Field(ge=0, le=MAX_FEN)  # money is a strict integer, as on orders
    quantity: StrictInt = Field(ge=1, le=10_000)


class QuoteIn(BaseModel):
    member_id: str = Field(min_length=1, max_length=128)
    items: list[CartItem] = Field(min_length=1, max_length=500)
    #: The platform's shipping fee for the cart, in fen.
    shipping_fee: StrictInt = Field(default=0, ge=0, le=MAX_FEN)
    #: Consider only these of the member's coupons (default: all the member holds).
    coupon_ids: list[str] | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _unique_items(self) -> QuoteIn:
        ids = [i.item_id for i in self.items]
        if len(set(ids)) != len(ids):
            raise ValueError("an item_id appears twice; send one line per item with its quantity")
        return self


class QuoteLine(BaseModel):
    item_id: str
    quantity: int
    price: int
    member_price: int
    #: The member-price benefit that gave ``member_price`` (None: list price).
    benefit: str | None
    total: int


class CouponOption(BaseModel):
    coupon_id: str
    template: str
    kind: str
    stackable: bool
    with_points: bool
    valid_until: datetime
    #: What the coupon alone would take off this cart (goods or shipping), 0 if it does not apply.
    discount: int
    applicable: bool
    #: Why it does not apply (None when it does).
    reason: str | None


class PointsOption(BaseModel):
    available: int
    #: Points the member may pay with on this cart after the best coupons, and their value.
    usable: int
    value: int
    point_value: int


class Quote(BaseModel):
    member_id: str
    tier: str | None
    lines: list[QuoteLine]
    #: Goods at list prices, the member-price discount, and the goods at member prices.
    goods_total: int
    member_price_discount: int
    goods_member_total: int
    coupons: list[CouponOption]
    best_coupons: list[str]
    coupon_discount: int
    shipping_fee: int
    #: A free-shipping benefit held and its minimum reached.
    free_shipping: bool
    shipping_discount: int
    #: What the member pays with the best coupons and no points, and with the usable points.
    payable: int
    points: PointsOption
    payable_with_points: int


# -- the pieces -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldCoupon:
    """A coupon the member holds, as the quote needs it."""

    coupon_id: str
    template: str
    valid_from: datetime
    valid_until: datetime


def priced_lines(
    items: Sequence[CartItem], member_prices: Sequence[tuple[str, MemberPrice]]
) -> list[QuoteLine]:
    """Each line at the lowest member price that covers it (list price if none does)."""
    lines = []
    for item in items:
        best, name = item.price, None
        for benefit_name, benefit in member_prices:
            if benefit.applies_to(item.category, item.brand):
                price = benefit.unit_price(item.price)
                if price < best:
                    best, name = price, benefit_name
        lines.append(
            QuoteLine(
                item_id=item.item_id,
                quantity=item.quantity,
                price=item.price,
                member_price=best,
                benefit=name,
                total=best * item.quantity,
            )
        )
    return lines


def order_items(items: Sequence[CartItem], lines: Sequence[QuoteLine]) -> list[OrderItem]:
    """The cart at member prices, as ``POST /v1/orders`` takes it (what coupons are priced on)."""
    return [
        OrderItem.model_construct(
            item_id=item.item_id,
            category=item.category,
            brand=item.brand,
            price=line.member_price,
            quantity=item.quantity,
        )
        for item, line in zip(items, lines, strict=True)
    ]


@dataclass(frozen=True)
class Candidate:
    """A coupon that applies, with what it takes off alone."""

    coupon_id: str
    template: str
    stackable: bool
    with_points: bool
    shipping: bool
    discount: int
    valid_until: datetime


@dataclass(frozen=True)
class Combination:
    coupons: tuple[Candidate, ...]
    goods_discount: int
    shipping_discount: int

    @property
    def saving(self) -> int:
        return self.goods_discount + self.shipping_discount

    @property
    def with_points(self) -> bool:
        return all(c.with_points for c in self.coupons)


def _combine(chosen: tuple[Candidate, ...], goods: int, shipping: int) -> Combination:
    goods_off = min(goods, sum(c.discount for c in chosen if not c.shipping))
    ship_off = min(shipping, sum(c.discount for c in chosen if c.shipping))
    return Combination(chosen, goods_off, ship_off)


def _rank(combo: Combination) -> tuple[int, int, int, int, tuple[datetime, ...], tuple[str, ...]]:
    """Best first: the most saved; then points still usable; then fewer coupons; then the least
    face value spent (the coupon worth more is kept for a bigger cart); then the coupons that
    expire soonest; then by id, so equal carts always get the same answer."""
    face = sum(c.discount for c in combo.coupons)
    return (
        -combo.saving,
        0 if combo.with_points else 1,
        len(combo.coupons),
        face,
        tuple(sorted(c.valid_until for c in combo.coupons)),
        tuple(sorted(c.coupon_id for c in combo.coupons)),
    )


def best_combination(candidates: Iterable[Candidate], goods: int, shipping: int) -> Combination:
    """The best allowed combination of ``candidates`` (see :func:`_rank`), tried exhaustively.

    Allowed (as :func:`memberwise.ledger.coupons.price` checks an order): no coupon, any one
    coupon, or stackable coupons of distinct templates together, one of them at most paying the
    shipping.
    Of each template only the coupons that could differ are tried (per template: the one
    taking off the most, the soonest-expiring among those), so the search is over templates:
    every subset of at most :data:`MAX_STACKABLE` stackable templates (4,096 subsets).
    """
    per_template: dict[str, Candidate] = {}
    for c in candidates:
        if c.discount <= 0:
            continue
        kept = per_template.get(c.template)
        if kept is None or (-c.discount, c.valid_until, c.coupon_id) < (
            -kept.discount,
            kept.valid_until,
            kept.coupon_id,
        ):
            per_template[c.template] = c
    options = [Combination((), 0, 0)]
    options += [_combine((c,), goods, shipping) for c in per_template.values()]
    stackable = sorted(
        (c for c in per_template.values() if c.stackable),
        key=lambda c: (-c.discount, c.valid_until, c.coupon_id),
    )[:MAX_STACKABLE]
    for size in range(2, len(stackable) + 1):
        options += [
            _combine(chosen, goods, shipping)
            for chosen in combinations(stackable, size)
            if sum(c.shipping for c in chosen) <= 1  # one coupon at most pays the shipping
        ]
    return min(options, key=_rank)


def points_usable(
    available: int, goods_payable: int, program: Program, allowed: bool
) -> tuple[int, int]:
    """(points, value in fen) the member may pay with on ``goods_payable`` fen of goods."""
    settings = program.points
    if not allowed or available <= 0 or goods_payable <= 0:
        return 0, 0
    cap_fen = int(
        (Decimal(goods_payable) * settings.max_payment_share).to_integral_value(ROUND_DOWN)
    )
    points = min(available, cap_fen // settings.point_value)
    return points, points * settings.point_value


# -- the quote --------------------------------------------------------------------------------


def _member_coupons(conn: Connection, member_id: str, wanted: list[str] | None) -> list[HeldCoupon]:
    """The member's unused coupons (all pages), or only those of ``wanted``."""
    held: list[HeldCoupon] = []
    after: str | None = None
    while True:
        page, after = coupons.member_coupons(
            conn, member_id, status=CouponStatus.issued, after=after, limit=500
        )
        held += [
            HeldCoupon(c.coupon_id, c.template, c.valid_from, c.valid_until)
            for c in page
            if wanted is None or c.coupon_id in wanted
        ]
        if after is None:
            return held


def _why_not(
    template: CouponTemplate | None, held: HeldCoupon, tier: str | None, at: datetime
) -> str | None:
    if template is None:
        return "its template is no longer in the program"
    if at < held.valid_from:
        return f"valid from {held.valid_from.isoformat()}"
    if at >= held.valid_until:
        return "expired"
    if template.tiers and tier not in template.tiers:
        return f"for members of tier {', '.join(template.tiers)}"
    return None


def _no_discount(template: CouponTemplate, items: Sequence[OrderItem], shipping: int) -> str:
    """Why a valid coupon takes nothing off this cart."""
    eligible = coupons.eligible_amount(template, items)
    if eligible <= 0:
        return "no item of the cart is in its categories"
    if eligible < template.min_spend:
        return f"needs {template.min_spend} fen of eligible goods, the cart has {eligible}"
    if template.kind is CouponKind.free_shipping and shipping <= 0:
        return "shipping is already free"
    return "takes nothing off this cart"


def quote_cart(
    program: Program,
    data: QuoteIn,
    *,
    held: Sequence[str],
    tier: str | None,
    held_coupons: Sequence[HeldCoupon],
    available_points: int,
    at: datetime,
) -> Quote:
    """The quote for a cart given what the member holds (pure: no store)."""
    member_prices = [
        (name, benefit)
        for name in held
        if isinstance(benefit := program.benefits.get(name), MemberPrice)
    ]
    lines = priced_lines(data.items, member_prices)
    goods_total = sum(i.price * i.quantity for i in data.items)
    goods = sum(line.total for line in lines)
    free_shipping = any(
        isinstance(b, FreeShipping) and goods >= b.min_order
        for b in (program.benefits.get(n) for n in held)
    )
    shipping = 0 if free_shipping else data.shipping_fee

    priced = order_items(data.items, lines)
    options: list[CouponOption] = []
    candidates: list[Candidate] = []
    for coupon in held_coupons:
        template = program.coupons.get(coupon.template)
        reason = _why_not(template, coupon, tier, at)
        off = None
        if template is not None and reason is None:
            off = coupons.discount_for(template, priced, shipping)
            if off is None or sum(off) <= 0:
                reason = _no_discount(template, priced, shipping)
        if template is not None and off is not None and reason is None:
            candidates.append(
                Candidate(
                    coupon.coupon_id,
                    coupon.template,
                    template.stackable,
                    template.with_points,
                    template.kind is CouponKind.free_shipping,
                    off[0] + off[1],
                    coupon.valid_until,
                )
            )
        options.append(
            CouponOption(
                coupon_id=coupon.coupon_id,
                template=coupon.template,
                kind=template.kind.value if template else "unknown",
                stackable=template.stackable if template else False,
                with_points=template.with_points if template else True,
                valid_until=coupon.valid_until,
                discount=off[0] + off[1] if off is not None and reason is None else 0,
                applicable=reason is None,
                reason=reason,
            )
        )
    best = best_combination(candidates, goods, shipping)
    goods_payable = goods - best.goods_discount
    usable, value = points_usable(available_points, goods_payable, program, best.with_points)
    payable = goods_payable + shipping - best.shipping_discount
    return Quote(
        member_id=data.member_id,
        tier=tier,
        lines=lines,
        goods_total=goods_total,
        member_price_discount=goods_total - goods,
        goods_member_total=goods,
        coupons=options,
        best_coupons=sorted(c.coupon_id for c in best.coupons),
        coupon_discount=best.goods_discount,
        shipping_fee=data.shipping_fee,
        free_shipping=free_shipping,
        shipping_discount=(data.shipping_fee - shipping) + best.shipping_discount,
        payable=payable,
        points=PointsOption(
            available=available_points,
            usable=usable,
            value=value,
            point_value=program.points.point_value,
        ),
        payable_with_points=payable - value,
    )


def quote(conn: Connection, program: Program, data: QuoteIn, *, at: datetime) -> Quote:
    """The quote for the member's cart now: reads the member's benefits, coupons and points and
    writes nothing. Raises MemberUnknown."""
    ledger.member_exists(conn, data.member_id)
    entitled = benefits.entitlements(conn, program, data.member_id, at)
    held = [n for n in entitled.benefits if n in program.benefits]
    return quote_cart(
        program,
        data,
        held=held,
        tier=entitled.tier,
        held_coupons=_member_coupons(conn, data.member_id, data.coupon_ids),
        available_points=points.balance_of(conn, data.member_id).available,
        at=at,
    )
