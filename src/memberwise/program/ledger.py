"""The program's points and coupon sections: earn rules, expiry policy and coupon templates.

A program file says, for example::

    points:
      unit: 100              # fen of paid money per earning unit (1 CNY)
      per_unit: 1            # points per unit
      tier_multipliers: {gold: 1.5, platinum: 2}
      category_bonus: {beauty: 2}
      campaigns:
        - {name: double11, start: 2026-11-01, end: 2026-11-12, multiplier: 2}
      review: 20             # points per review
      check_in: 5            # points per daily check-in
      daily_cap: 2000        # most points earned per member per day (display time zone)
      pending_days: 7        # return window: order points become available after it
      expiry: end_of_next_year
      point_value: 1         # fen a point is worth when paying at checkout
      max_payment_share: 0.5 # at most half an order's goods may be paid with points
      refund_shortfall: deduct_from_refund
    coupons:
      welcome_10: {kind: amount_off, amount: 1000, valid_days: 30, per_member_limit: 1}
      big_50_300: {kind: threshold, amount: 5000, min_spend: 30000, budget_count: 10000}
      vip_9: {kind: percent_off, percent: 10, max_discount: 3000, tiers: [gold, platinum]}

Every number is validated here, so a program that loads never makes the ledger divide by zero,
award fractional points or issue a coupon that can never be used.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator

from memberwise.program.base import Problem, Section, problem, problems_error


class ExpiryPolicy(StrEnum):
    """When earned points expire (counted from the day they are earned, in the display zone)."""

    #: At the end of the calendar year after the one they were earned in (Tmall, JD style).
    end_of_next_year = "end_of_next_year"
    #: ``expiry_days`` days after they were earned, at the end of that day.
    days = "days"
    #: Never.
    never = "never"


class RefundShortfall(StrEnum):
    """What happens when a refund must take back points the member has already spent.

    The balance never goes negative. The points still in the order's lot are cancelled first,
    then the member's other available points (nearest expiry first); what is still missing is
    either turned into money deducted from the refund (``point_value`` fen a point, reported as
    ``refund_deduction``) or recorded as a points debt repaid by the next points that become
    available.
    """

    deduct_from_refund = "deduct_from_refund"
    debt = "debt"


class Campaign(Section):
    """A period in which purchases earn more (multiplies the base earn; dates inclusive)."""

    name: str = Field(min_length=1, max_length=64)
    start: date
    end: date
    multiplier: Decimal = Field(gt=0, le=100)
    #: Categories the campaign applies to; empty = every category.
    categories: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _window(self) -> Campaign:
        if self.end < self.start:
            raise problems_error(
                [problem(["end"], f"end {self.end} is before start {self.start}", "swap them")]
            )
        return self


class PointsSettings(Section):
    """How members earn and lose points (the ledger's rules)."""

    #: Fen of paid money per earning unit; points are earned per whole unit.
    unit: int = Field(default=100, ge=1)
    #: Points per earning unit, before multipliers.
    per_unit: int = Field(default=1, ge=0, le=10_000)
    #: Tier name -> multiplier of purchase points (a tier not listed earns x1).
    tier_multipliers: dict[str, Decimal] = Field(default_factory=dict)
    #: Category -> multiplier of that category's purchase points.
    category_bonus: dict[str, Decimal] = Field(default_factory=dict)
    campaigns: tuple[Campaign, ...] = ()
    #: Points for a review (0 = none), and for a daily check-in.
    review: int = Field(default=0, ge=0, le=1_000_000)
    check_in: int = Field(default=0, ge=0, le=1_000_000)
    #: Most points one member may earn per day / per month in the display time zone (all
    #: sources together); None = no cap. An award over the cap is cut to what is left.
    daily_cap: int | None = Field(default=None, ge=1)
    monthly_cap: int | None = Field(default=None, ge=1)
    #: Days order points stay pending (the return window) before they become available.
    pending_days: int = Field(default=7, ge=0, le=365)
    expiry: ExpiryPolicy = ExpiryPolicy.end_of_next_year
    expiry_days: int = Field(default=365, ge=1, le=36_500)
    #: Fen one point is worth when paying at checkout (and when a shortfall is deducted).
    point_value: int = Field(default=1, ge=1, le=10_000)
    #: The largest share of an order's goods that points may pay (0 = points cannot pay).
    max_payment_share: Decimal = Field(default=Decimal("0.5"), ge=0, le=1)
    refund_shortfall: RefundShortfall = RefundShortfall.deduct_from_refund

    @model_validator(mode="after")
    def _multipliers(self) -> PointsSettings:
        found: list[Problem] = []
        for section in ("tier_multipliers", "category_bonus"):
            values: dict[str, Decimal] = getattr(self, section)
            for name, value in values.items():
                if not Decimal(0) < value <= Decimal(100):
                    found.append(
                        problem(
                            [section, name],
                            f"multiplier {value} is out of range",
                            "use a number above 0 and at most 100 (1.5 = half again)",
                        )
                    )
        names = [c.name for c in self.campaigns]
        for i, name in enumerate(names):
            if name in names[:i]:
                found.append(
                    problem(["campaigns", i, "name"], f"campaign {name!r} twice", "rename")
                )
        if (
            self.daily_cap is not None
            and self.monthly_cap is not None
            and self.daily_cap > self.monthly_cap
        ):
            found.append(
                problem(
                    ["daily_cap"],
                    f"daily_cap ({self.daily_cap}) is above monthly_cap ({self.monthly_cap})",
                    "make daily_cap at most monthly_cap",
                )
            )
        if found:
            raise problems_error(found)
        return self

    def expires_at(self, earned: datetime, timezone: str) -> datetime | None:
        """When points earned at ``earned`` expire under this policy (None = never)."""
        zone = ZoneInfo(timezone)
        local = earned.astimezone(zone).date()
        if self.expiry is ExpiryPolicy.never:
            return None
        if self.expiry is ExpiryPolicy.end_of_next_year:
            last = date(local.year + 1, 12, 31)
        else:
            last = local + timedelta(days=self.expiry_days)
        # The first instant of the following day: the points are good all of their last day.
        return datetime.combine(last + timedelta(days=1), time(), zone)

    def multiplier(self, *, tier: str | None, category: str | None, at: datetime) -> Decimal:
        """The purchase-points multiplier of one item: tier x category bonus x campaigns."""
        value = self.tier_multipliers.get(tier, Decimal(1)) if tier else Decimal(1)
        if category is not None:
            value *= self.category_bonus.get(category, Decimal(1))
        day = at.date()
        for campaign in self.campaigns:
            if campaign.start <= day <= campaign.end and (
                not campaign.categories or category in campaign.categories
            ):
                value *= campaign.multiplier
        return value


def day_key(at: datetime, timezone: str) -> str:
    """The member-facing day of ``at`` (``2026-11-24``), for daily caps and check-ins."""
    return at.astimezone(ZoneInfo(timezone)).date().isoformat()


def month_key(at: datetime, timezone: str) -> str:
    """The member-facing month of ``at`` (``2026-11``), for monthly caps."""
    return at.astimezone(ZoneInfo(timezone)).strftime("%Y-%m")


def month_end(at: datetime, timezone: str) -> datetime:
    """The first instant (in UTC terms, aware) after the member-facing month of ``at``."""
    local = at.astimezone(ZoneInfo(timezone))
    last = calendar.monthrange(local.year, local.month)[1]
    return datetime.combine(
        date(local.year, local.month, last) + timedelta(days=1), time(), ZoneInfo(timezone)
    )


class CouponKind(StrEnum):
    """What a coupon takes off."""

    #: ``amount`` fen off the eligible goods.
    amount_off = "amount_off"
    #: ``amount`` fen off once the eligible goods reach ``min_spend`` ("50 off 300").
    threshold = "threshold"
    #: ``percent`` % off the eligible goods, at most ``max_discount`` fen.
    percent_off = "percent_off"
    #: The order's shipping fee.
    free_shipping = "free_shipping"


class CouponTemplate(Section):
    """A coupon a program can issue: what it takes off, when, for whom and how many."""

    description: str = ""
    #: The description in Chinese, shown where the page is Chinese (see docs/membership.md).
    description_zh: str = ""
    kind: CouponKind = CouponKind.amount_off
    #: Fen off (amount_off, threshold).
    amount: int = Field(default=0, ge=0)
    #: Percent off (percent_off), 1-99.
    percent: int = Field(default=0, ge=0, le=99)
    #: The most a percent_off coupon takes off, in fen (None = no cap).
    max_discount: int | None = Field(default=None, ge=1)
    #: The eligible goods must reach this many fen (0 = any order).
    min_spend: int = Field(default=0, ge=0)
    #: Categories whose goods are eligible; empty = all goods.
    categories: tuple[str, ...] = ()
    #: Days a coupon is valid from issuance (ends at the end of the last day, display zone);
    #: ``valid_until`` caps it. At least one of them must be set.
    valid_days: int | None = Field(default=None, ge=1, le=3660)
    #: First and last moment any coupon of this template may be issued and used.
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    #: Tiers whose members may receive and use it; empty = every member.
    tiers: tuple[str, ...] = ()
    #: Segments (lifecycle or persona) whose members may receive it; empty = every member.
    segments: tuple[str, ...] = ()
    #: The most coupons of this template one member may ever be issued (None = no limit).
    per_member_limit: int | None = Field(default=None, ge=1)
    #: The most coupons of this template ever issued (None = no limit).
    budget_count: int | None = Field(default=None, ge=1)
    #: The most fen all redemptions together may take off (None = no limit).
    budget_money: int | None = Field(default=None, ge=1)
    #: May it be combined with other coupons in one order (each stackable one with the rest)?
    stackable: bool = False
    #: May an order that uses it also pay with points?
    with_points: bool = True
    #: Is it given back (valid again) when its order is refunded in full?
    restore_on_refund: bool = True
    #: Points a member pays to get one (None = not for sale against points).
    points_price: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> CouponTemplate:
        found: list[Problem] = []
        if self.kind in (CouponKind.amount_off, CouponKind.threshold) and self.amount <= 0:
            found.append(
                problem(["amount"], f"a {self.kind} coupon needs an amount", "amount: 1000 (fen)")
            )
        if self.kind is CouponKind.threshold and self.min_spend <= self.amount:
            found.append(
                problem(
                    ["min_spend"],
                    "a threshold coupon's min_spend must be above its amount",
                    "e.g. amount: 5000 with min_spend: 30000 (50 off 300)",
                )
            )
        if self.kind is CouponKind.percent_off and self.percent <= 0:
            found.append(
                problem(["percent"], "a percent_off coupon needs a percent", "percent: 10")
            )
        if self.valid_days is None and self.valid_until is None:
            found.append(
                problem(
                    ["valid_days"],
                    "the coupon would never expire",
                    "set valid_days (days from issuance) or valid_until",
                )
            )
        if (
            self.valid_from is not None
            and self.valid_until is not None
            and self.valid_until <= self.valid_from
        ):
            found.append(
                problem(["valid_until"], "valid_until is not after valid_from", "swap them")
            )
        for field in ("valid_from", "valid_until"):
            value: datetime | None = getattr(self, field)
            if value is not None and value.tzinfo is None:
                found.append(
                    problem(
                        [field], "the time has no time zone", "write e.g. 2026-12-31T23:59:59+08:00"
                    )
                )
        if found:
            raise problems_error(found)
        return self
