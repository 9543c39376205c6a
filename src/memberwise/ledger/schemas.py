"""Points, coupons, orders and refunds as the API takes and shows them (money in fen)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field, StrictInt, model_validator

from memberwise.kit.ids import ID_MAX_LEN, ID_PATTERN, MemberId
from memberwise.kit.money import MAX_AMOUNT, Money, Points, total
from memberwise.kit.pagination import Page
from memberwise.kit.time import BusinessTime

_ID = Field(min_length=1, max_length=ID_MAX_LEN, pattern=ID_PATTERN)


class LotStatus(StrEnum):
    pending = "pending"
    available = "available"
    expired = "expired"
    cancelled = "cancelled"


class EntryKind(StrEnum):
    earn_order = "earn_order"
    earn_review = "earn_review"
    earn_check_in = "earn_check_in"
    adjust = "adjust"
    spend_order = "spend_order"
    spend_redeem = "spend_redeem"
    mature = "mature"
    expire = "expire"
    reverse_refund = "reverse_refund"
    restore_refund = "restore_refund"
    debt = "debt"
    repay_debt = "repay_debt"
    merge_in = "merge_in"
    merge_out = "merge_out"


class CouponStatus(StrEnum):
    issued = "issued"
    redeemed = "redeemed"
    expired = "expired"
    void = "void"


class OrderStatus(StrEnum):
    placed = "placed"
    completed = "completed"
    partially_refunded = "partially_refunded"
    refunded = "refunded"


# -- points ---------------------------------------------------------------------------------------


class Balance(BaseModel):
    """A member's points: ``available`` to spend, ``pending`` (orders in their return window)
    and ``debt`` (points taken back by refunds that the member had already spent)."""

    member_id: str
    available: int
    pending: int
    debt: int


class Lot(BaseModel):
    """One credit of points and what is left of it."""

    lot_id: str
    points: int
    remaining: int
    status: LotStatus
    order_id: str | None
    earned_at: datetime
    available_at: datetime
    expires_at: datetime | None


class Entry(BaseModel):
    """One change of a balance (the ledger is these, append-only)."""

    entry_id: str
    kind: EntryKind
    available_delta: int
    pending_delta: int
    debt_delta: int
    order_id: str | None
    reason: str | None
    created_at: datetime


class PointsOut(BaseModel):
    """The balance, the lots still holding points (nearest expiry first) and a page of history."""

    balance: Balance
    lots: list[Lot]
    history: Page[Entry]


class PointsChange(BaseModel):
    """The result of one points write (an award, adjustment or redemption)."""

    entry_id: str
    points: int = Field(description="Points this write added (+) or took (-).")
    balance: Balance


class AwardKind(StrEnum):
    review = "review"
    check_in = "check_in"


class AwardIn(BaseModel):
    """Points for a member's action; ``source_id`` (the review id) makes it idempotent. A
    check-in is once per day in the program's time zone whatever its source id."""

    kind: AwardKind
    source_id: str = _ID
    at: BusinessTime | None = None


class AdjustmentIn(BaseModel):
    """A staff correction of a member's points (positive adds, negative takes), with a reason."""

    points: StrictInt = Field(ge=-(10**9), le=10**9)
    reason: str = Field(min_length=3, max_length=500)


class RedemptionIn(BaseModel):
    """Spend points: on a gift (``reason`` names it) or on a coupon template sold for points."""

    points: StrictInt | None = Field(default=None, ge=1, le=MAX_AMOUNT)
    coupon_template: str | None = Field(default=None, min_length=1, max_length=64)
    reason: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _one(self) -> RedemptionIn:
        if (self.points is None) == (self.coupon_template is None):
            raise ValueError("give either points (a gift) or coupon_template (a coupon)")
        return self


# -- coupons ---------------------------------------------------------------------------------


class CouponOut(BaseModel):
    coupon_id: str
    template: str
    member_id: str
    status: CouponStatus
    source: str
    issued_at: datetime
    valid_from: datetime
    valid_until: datetime
    order_id: str | None
    discount: int | None
    redeemed_at: datetime | None


class RedemptionOut(BaseModel):
    """What a points redemption did: the points change, and the coupon bought (if any)."""

    change: PointsChange
    coupon: CouponOut | None = None


class IssueIn(BaseModel):
    """Issue coupons of a template to members: listed ones, or a segment of the published build."""

    template: str = Field(min_length=1, max_length=64)
    member_ids: list[MemberId] = Field(default_factory=list, max_length=10_000)
    segment: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _who(self) -> IssueIn:
        if bool(self.member_ids) == (self.segment is not None):
            raise ValueError("give either member_ids or segment")
        return self


class IssueOut(BaseModel):
    """Coupons issued (a replay lists the ones issued the first time) and who got none, why."""

    template: str
    issued: int
    coupons: list[CouponOut]
    refused: dict[str, str] = Field(description="member_id -> refusal code")


class TemplateOut(BaseModel):
    """A coupon template with how much of its budgets is used."""

    name: str
    kind: str
    description: str
    issued: int
    redeemed: int
    redeemed_money: int
    budget_count: int | None
    budget_money: int | None


# -- orders ----------------------------------------------------------------------------------


class OrderItem(BaseModel):
    item_id: str = _ID
    category: str | None = Field(default=None, max_length=128)
    brand: str | None = Field(default=None, max_length=128)
    price: Money
    quantity: StrictInt = Field(default=1, ge=1, le=100_000)


class OrderIn(BaseModel):
    """An order the platform placed, with the coupons and points the member chose."""

    order_id: str = _ID
    member_id: MemberId
    merchant_id: str | None = Field(default=None, max_length=128)
    items: list[OrderItem] = Field(min_length=1, max_length=500)
    shipping_fee: StrictInt = Field(default=0, ge=0, le=10**9)
    coupon_ids: list[str] = Field(default_factory=list, max_length=10)
    points: Points = Field(default=0, description="Points paying part of it.")
    placed_at: BusinessTime | None = Field(default=None, description="Default: now.")

    @model_validator(mode="after")
    def _bounded_total(self) -> OrderIn:
        # Each line is in bounds, but 500 of them may not be: the goods total is stored.
        total((i.price * i.quantity for i in self.items), what="the order's goods amount")
        return self


class OrderOut(BaseModel):
    order_id: str
    member_id: str
    status: OrderStatus
    goods_amount: int
    shipping_fee: int
    coupon_discount: int
    shipping_discount: int
    points_used: int
    points_value: int
    paid: int
    points_earned: int
    points_pending_until: datetime
    refunded: int
    points_reversed: int
    points_restored: int
    coupons: list[str]
    placed_at: datetime
    completed_at: datetime | None


class RefundLine(BaseModel):
    """One refund of an order, as listed with the order."""

    refund_id: str
    amount: int
    points_reversed: int
    points_restored: int
    points_shortfall: int
    refund_deduction: int
    coupons_restored: list[str]
    created_at: datetime


class MemberOrder(OrderOut):
    """An order in a member's order list, with its refunds (oldest first)."""

    refunds: list[RefundLine]


class RefundIn(BaseModel):
    """A refund of part (``amount`` fen of what was paid) or all (``full``) of an order."""

    refund_id: str = _ID
    amount: StrictInt | None = Field(default=None, ge=1, le=MAX_AMOUNT)
    full: bool = False
    at: BusinessTime | None = None

    @model_validator(mode="after")
    def _what(self) -> RefundIn:
        if (self.amount is not None) != self.full:
            return self
        raise ValueError("give either amount (a partial refund) or full: true")


class RefundOut(BaseModel):
    """What a refund did to the ledgers. ``refund_deduction`` fen are to be kept back from the
    money refunded: the points taken back that the member had already spent (the program's
    ``refund_shortfall: deduct_from_refund`` rule)."""

    refund_id: str
    order_id: str
    amount: int
    points_reversed: int
    points_restored: int
    points_shortfall: int
    refund_deduction: int
    coupons_restored: list[str]
    order: OrderOut
