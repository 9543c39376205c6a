"""A campaign as an operator defines it, and its results as an analyst reads them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Channel(StrEnum):
    push = "push"
    sms = "sms"
    app = "app"
    email = "email"


class OfferKind(StrEnum):
    coupon = "coupon"
    points = "points"
    message = "message"


class Audience(BaseModel):
    """Who is targeted, from the published build: one of a lifecycle segment, a persona or a
    tag."""

    model_config = ConfigDict(extra="forbid")

    segment: str | None = None
    persona: int | None = None
    tag: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if sum(v is not None for v in (self.segment, self.persona, self.tag)) != 1:
            raise ValueError("name exactly one of segment, persona or tag")
        return self


class Offer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: OfferKind
    coupon_template: str | None = Field(default=None, description="For kind=coupon.")
    points: int | None = Field(default=None, ge=1, le=1_000_000, description="For kind=points.")
    message: str = Field(default="", max_length=2000, description="Text for the channel.")

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.kind is OfferKind.coupon and not self.coupon_template:
            raise ValueError("a coupon offer names its coupon_template")
        if self.kind is OfferKind.points and self.points is None:
            raise ValueError("a points offer says how many points")
        if self.kind is OfferKind.message and not self.message:
            raise ValueError("a message offer has a message")
        return self


#: The arm of the members kept out (the control of every comparison when there is one).
HOLDOUT = "holdout"
#: The one arm of a campaign with a single ``offer``.
TREATMENT = "treatment"


class Arm(BaseModel):
    """One offer of an A/B/n campaign and its share of the members not held out."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="e.g. coupon_a.")
    weight: float = Field(default=1.0, gt=0, le=1000, description="Relative to the other arms.")
    offer: Offer


class CampaignCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    audience: Audience
    offer: Offer | None = Field(default=None, description="The one offer (or give arms).")
    arms: list[Arm] | None = Field(
        default=None,
        min_length=1,
        max_length=10,
        description="Several offers (A/B/n), each with its weight; the holdout is apart.",
    )
    channels: list[Channel] = Field(default_factory=lambda: [Channel.push], min_length=1)
    holdout_percent: float = Field(
        default=10.0, ge=0, le=50, description="Members kept out to measure the effect."
    )
    send_at_best_hour: bool = Field(
        default=True, description="Send at each member's best hour (the habits model)."
    )
    quiet_hours: tuple[int, int] = Field(
        default=(22, 8), description="No sends from the first hour to the second (local)."
    )
    frequency_cap_days: int = Field(
        default=7, ge=0, le=365, description="At most one campaign send a member per N days."
    )
    points_budget: int | None = Field(default=None, ge=1, description="Points in all.")
    pre_period_days: int = Field(default=28, ge=0, le=365, description="For CUPED.")

    @model_validator(mode="after")
    def _hours(self) -> Self:
        if not all(0 <= h <= 23 for h in self.quiet_hours):
            raise ValueError("quiet_hours are hours of the day, 0-23")
        if (self.offer is None) == (self.arms is None):
            raise ValueError("give either one offer or arms")
        names = [a.name for a in self.arms or []]
        if len(set(names)) != len(names):
            raise ValueError("arm names must differ")
        if HOLDOUT in names:
            raise ValueError(f"{HOLDOUT!r} names the members kept out; choose another arm name")
        if self.holdout_percent == 0 and len(names) == 1:
            raise ValueError("one arm without a holdout compares nothing: give an offer")
        return self

    def offers(self) -> dict[str, Offer]:
        """Each treatment arm's offer, in declaration order."""
        if self.arms is None:
            assert self.offer is not None  # the validator allows only one of them
            return {TREATMENT: self.offer}
        return {a.name: a.offer for a in self.arms}

    def ratios(self) -> dict[str, float]:
        """Every arm's share of the audience in percent (the holdout's when it has one): what
        assignment draws and the sample-ratio check expects."""
        rest = 100.0 - self.holdout_percent
        weights = {a.name: a.weight for a in self.arms} if self.arms else {TREATMENT: 1.0}
        total = sum(weights.values())
        shares = {name: rest * w / total for name, w in weights.items()}
        return {HOLDOUT: self.holdout_percent, **shares} if self.holdout_percent else shares

    def control(self) -> str:
        """The arm every other is compared with: the holdout, else the first arm."""
        return HOLDOUT if self.holdout_percent else next(iter(self.offers()))


class CampaignOut(BaseModel):
    campaign_id: str
    name: str
    status: str
    definition: CampaignCreate
    created_at: datetime
    launched_at: datetime | None
    members: dict[str, int] = Field(description="Targeted members by status.")
    arms: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="The exposure log by arm: members by status."
    )


class CampaignMemberOut(BaseModel):
    member_id: str
    arm: str
    status: str
    reason: str | None
    send_at: datetime | None
    sent_at: datetime | None
    message_id: str | None


class SendReport(BaseModel):
    sent: int = 0
    skipped: int = 0


class MetricResult(BaseModel):
    metric: str
    arm: str = Field(default=TREATMENT, description="The arm compared with the control.")
    method: str
    control: float
    treatment: float = Field(description="The arm's value.")
    difference: float
    relative: float | None
    ci_low: float
    ci_high: float
    p_value: float
    p_adjusted: float = Field(description="Benjamini-Hochberg across the arms and metrics.")
    always_valid_low: float | None = None
    always_valid_high: float | None = None
    always_valid_p: float | None = None


class SRMOut(BaseModel):
    observed: dict[str, int]
    expected: dict[str, float]
    p_value: float | None
    mismatch: bool
    note: str


class TargetingResult(BaseModel):
    """The coupon targeting's uplift scores judged on a coupon arm's experiment data: members
    of the arm and the control ranked by their published uplift for the arm's template (the
    unscored last), the outcome being conversion. A positive Qini coefficient means the
    targeting finds the members the coupon moves better than chance."""

    arm: str
    template: str
    members: int = Field(description="Members of the arm and the control.")
    members_scored: int = Field(description="Of them, those the targeting scored.")
    qini: float = Field(description="Area between the Qini curve and random, per member.")
    auuc: float = Field(description="Area under the Qini curve, per member.")
    auuc_random: float = Field(description="The same area when targeting at random.")


class CampaignResults(BaseModel):
    campaign_id: str
    as_of: datetime
    control: str = Field(default=HOLDOUT, description="The arm each other arm is compared with.")
    srm: SRMOut
    metrics: list[MetricResult]
    targeting: list[TargetingResult] = Field(
        default_factory=list, description="Qini / AUUC of the coupon targeting, per coupon arm."
    )
    note: str


class TriggerKind(StrEnum):
    points_expiring = "points_expiring"
    renewal_failed = "renewal_failed"
    invitation_pending = "invitation_pending"
    churn_risk = "churn_risk"
    tier_near = "tier_near"
    downgrade_notice = "downgrade_notice"
    cart_abandoned = "cart_abandoned"


class Trigger(BaseModel):
    """What enrolls a member: a state the stores show, each occurrence once."""

    model_config = ConfigDict(extra="forbid")

    kind: TriggerKind
    days: int = Field(
        default=7,
        ge=1,
        le=365,
        description="points_expiring: within N days; cart_abandoned: carts of the last N days.",
    )
    threshold: float = Field(default=0.7, gt=0, le=1, description="churn_risk: at least.")
    within_fen: int = Field(
        default=50_000,
        ge=0,
        le=10**12,
        description="tier_near: net spend missing for the next tier, at most (fen).",
    )
    within_points: int = Field(
        default=0,
        ge=0,
        le=10**9,
        description="tier_near: score or points missing, at most (0: spend only).",
    )
    hours: float = Field(
        default=24,
        gt=0,
        le=24 * 30,
        description="cart_abandoned: hours since the cart without buying the item.",
    )


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait_hours: float = Field(default=0, ge=0, le=24 * 90, description="After the last step.")
    offer: Offer


class JourneyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    trigger: Trigger
    steps: list[Step] = Field(min_length=1, max_length=20)
    channels: list[Channel] = Field(default_factory=lambda: [Channel.push], min_length=1)
    exit_on_order: bool = Field(
        default=True, description="Leave the journey once the member orders after entering."
    )


class JourneyOut(BaseModel):
    journey_id: str
    name: str
    status: str
    definition: JourneyCreate
    created_at: datetime
    enrollments: dict[str, int] = Field(description="Enrollments by status.")


class EnrollmentOut(BaseModel):
    member_id: str
    trigger_key: str
    step: int
    status: str
    next_at: datetime | None
    entered_at: datetime
    exit_reason: str | None


class JourneyRun(BaseModel):
    enrolled: int = 0
    stepped: int = 0
    completed: int = 0
    exited: int = 0
    skipped: int = 0
