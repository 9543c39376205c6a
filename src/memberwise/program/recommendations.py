"""The program's recommendation section: list length and business rules of the recommender."""

from __future__ import annotations

from pydantic import Field, model_validator

from memberwise.program.base import Section, problem, problems_error


class CouponCampaign(Section):
    """A coupon campaign: which template, for at most how many members and how much money.

    ``max_coupons`` and ``budget`` (fen: the most all its coupons together may take off) both
    bound it; at least one must be set (the template's ``budget_count``/``budget_money`` also
    cap it). Targeting picks the members whose purchase the coupon most likely *causes*.
    """

    name: str = Field(min_length=1, max_length=128)
    template: str = Field(min_length=1, max_length=128)
    max_coupons: int | None = Field(default=None, ge=1)
    budget: int | None = Field(default=None, ge=1)
    #: Members whose estimated uplift is below this get none (0 = any positive uplift).
    min_uplift: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _bounded(self) -> CouponCampaign:
        if self.max_coupons is None and self.budget is None:
            raise problems_error(
                [problem(["budget"], "no limit", "set budget (fen) or max_coupons")]
            )
        return self


class RecommendationSettings(Section):
    """How many items each member's precomputed list holds."""

    list_length: int = Field(default=50, ge=1, le=500)
    #: At most this share of a served list from one category (online diversity rule).
    diversity_share: float = Field(default=0.5, gt=0, le=1)
    #: A new model is published only if each gate metric is at least (1 - this) x the serving
    #: model's (0: at least equal).
    publish_tolerance: float = Field(default=0.0, ge=0, lt=1)
    #: Coupon campaigns, targeted in this order (a member gets at most one coupon per build).
    campaigns: tuple[CouponCampaign, ...] = ()
