"""The program's ``merchants`` section: DSR scorecard parameters, penalty points and the
actions their thresholds trigger, support for good merchants, and who is kept from bad shops.

Defaults follow Taobao's published rules where they exist (180-day DSR window, 3 counted
ratings per buyer and shop a calendar month, a 15-day rating window, yearly reset of ordinary
violation points) and are otherwise conservative; a program file may change every number.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from memberwise.program.base import Section, problem, problems_error


class ActionKind(StrEnum):
    """What a penalty threshold does to a shop."""

    marketing_ban = "marketing_ban"  # no campaigns, coupons or recommendation slots
    shop_block = "shop_block"  # items hidden from search and recommendations
    closure = "closure"  # the shop is closed


class Violation(Section):
    """A kind of violation and the points it adds to the penalty ledger."""

    points: int = Field(ge=1, le=48)
    description: str = ""


class Threshold(Section):
    """At ``points`` or more (within the current points year), ``action`` for ``days``
    (None: until lifted by hand)."""

    points: int = Field(ge=1, le=1000)
    action: ActionKind
    days: int | None = Field(default=None, ge=1, le=3650)


class Support(Section):
    """Support for good merchants: a badge and priority in recommendations."""

    #: A merchant at or above this industry percentile (0..100) with no penalty gets the badge.
    badge_percentile: float = Field(default=90.0, ge=0, le=100)
    badge: str = Field(default="优质商家", min_length=1, max_length=64)
    #: Score multiplier the recommender may apply to badge holders' items.
    recommendation_boost: float = Field(default=1.1, ge=1.0, le=3.0)


class KeepAway(Section):
    """Which merchants members of which tiers are not recommended."""

    #: Tiers (names of the program's tiers, or ``"*"`` for everyone) kept from bad shops.
    tiers: tuple[str, ...] = ("*",)
    #: Merchants below this industry percentile of the quality score are dropped ...
    below_percentile: float = Field(default=10.0, ge=0, le=100)
    #: ... and so are merchants under any of these actions.
    under_actions: tuple[ActionKind, ...] = (ActionKind.marketing_ban, ActionKind.shop_block,
                                             ActionKind.closure)  # fmt: skip
    #: Complaints from members of these tiers about kept-away merchants go to the service
    #: desk's hook (a ticket each). Empty: the program's black-card tier, if it has one.
    ticket_tiers: tuple[str, ...] = ()


class MerchantSettings(Section):
    """Scorecards (Taobao's DSR rules), penalty points and actions, support and keep-away."""

    dsr_window_days: int = Field(default=180, ge=1, le=730)
    #: Only the first this-many ratings per buyer and merchant a calendar month count.
    ratings_per_buyer_month: int = Field(default=3, ge=1, le=100)
    #: A rating more than this many days after the order is not recorded.
    rating_window_days: int = Field(default=15, ge=1, le=365)
    #: Shrinkage: a merchant's average is pulled to its industry's as if it had this many more
    #: ratings at the industry mean (a shop with 3 ratings of 5.0 is not the best in class).
    shrinkage_ratings: float = Field(default=20.0, ge=0, le=10_000)
    #: Refund, dispute and complaint rates are over this many days.
    rate_window_days: int = Field(default=30, ge=1, le=365)
    violations: dict[str, Violation] = Field(
        default_factory=lambda: {
            "complaint_upheld": Violation(points=2, description="a member complaint upheld"),
            "dispute_lost": Violation(points=4, description="a refund dispute ruled against"),
            "fake_orders": Violation(points=12, description="fake orders (刷单) detected"),
            "poor_service": Violation(points=6, description="quality score in the bottom band"),
        }
    )
    thresholds: tuple[Threshold, ...] = (
        Threshold(points=12, action=ActionKind.marketing_ban, days=30),
        Threshold(points=24, action=ActionKind.shop_block, days=7),
        Threshold(points=48, action=ActionKind.closure, days=None),
    )
    #: Points reset every year on this month and day (display time zone) ...
    reset_month: int = Field(default=1, ge=1, le=12)
    reset_day: int = Field(default=1, ge=1, le=28)
    #: ... except a merchant's points at or above this level, which are kept.
    reset_keep_above: int = Field(default=48, ge=1, le=1000)
    #: Scorecards below this industry percentile add a ``poor_service`` violation at a build.
    poor_service_percentile: float = Field(default=5.0, ge=0, le=100)
    support: Support = Field(default_factory=Support)
    keep_away: KeepAway = Field(default_factory=KeepAway)

    @model_validator(mode="after")
    def _ordered(self) -> MerchantSettings:
        points = [t.points for t in self.thresholds]
        if points != sorted(set(points)):
            raise problems_error(
                [problem(["thresholds"], "thresholds are not in rising order of points",
                         "list thresholds from the fewest points to the most, each once")]
            )  # fmt: skip
        return self
