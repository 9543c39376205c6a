"""The membership API's request and response bodies."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from memberwise.kit.money import Money
from memberwise.kit.time import BusinessTime, EndTime


class SubscriptionStatus(StrEnum):
    pending = "pending"  # created, waiting for its first payment
    active = "active"  # paid (or in its trial) for the current period
    past_due = "past_due"  # the period ended, the renewal is not paid yet (grace days)
    cancelled = "cancelled"  # will not renew; benefits last until the period's end
    expired = "expired"  # over


class PaymentOutcome(StrEnum):
    succeeded = "succeeded"
    failed = "failed"


class ScorePartOut(BaseModel):
    name: str
    field: str
    value: float | None = Field(description="the profile field's value")
    points: float
    max: float


class ScoreOut(BaseModel):
    name: str
    value: int
    max: int
    parts: list[ScorePartOut]


class Shortfall(BaseModel):
    """One way to reach the next tier and how far the member is from it."""

    metric: str
    unit: str | None = Field(default=None, description="fen for spend, points otherwise")
    need: int | None = None
    have: int | None = None
    missing: int | None = None
    rule: str | None = None
    text: str


class NextTier(BaseModel):
    name: str
    any_of: list[Shortfall]


class Notice(BaseModel):
    downgrade_on: datetime
    to: str
    text: str


class TierNoticeOut(BaseModel):
    """A downgrade notice given to the member (each once, when a build first found it)."""

    tier: str = Field(description="the tier at risk")
    to_tier: str
    downgrade_on: datetime
    noticed_at: datetime
    build_id: str


class TierOut(BaseModel):
    name: str
    description: str
    source: str
    since: datetime
    until: datetime | None
    benefits: list[str]


class ManagerOut(BaseModel):
    staff_id: str
    name: str


class InvoiceOut(BaseModel):
    invoice_id: str
    seq: int
    amount: int
    status: str
    period_start: datetime
    period_end: datetime
    due_at: datetime
    paid_at: datetime | None


class SubscriptionOut(BaseModel):
    subscription_id: str
    member_id: str
    plan: str
    status: SubscriptionStatus
    fee: int = Field(description="per period, in minor units (fen)")
    currency: str
    auto_renew: bool
    trial_until: datetime | None
    period_start: datetime | None
    period_end: datetime | None
    cancelled_at: datetime | None
    refunded: int
    invoices: list[InvoiceOut]
    history: list[dict[str, Any]] = []


class MembershipOut(BaseModel):
    member_id: str
    tier: TierOut | None
    score: ScoreOut | None
    next_tier: NextTier | None
    notice: Notice | None
    subscriptions: list[SubscriptionOut]
    benefits: list[str]
    invitation: dict[str, Any] | None
    manager: ManagerOut | None
    history: list[dict[str, Any]]


class SubscriptionCreate(BaseModel):
    plan: str = Field(min_length=1, max_length=64)
    auto_renew: bool | None = None


class PaymentIn(BaseModel):
    """The platform payment system's callback: one charge attempt for one invoice."""

    payment_id: str = Field(min_length=1, max_length=128)
    invoice_id: str | None = Field(default=None, max_length=32)
    amount: Money
    outcome: PaymentOutcome = PaymentOutcome.succeeded
    occurred_at: BusinessTime | None = None


class CancelIn(BaseModel):
    reason: str = Field(default="", max_length=500)


class CancelOut(BaseModel):
    subscription: SubscriptionOut
    refund: int
    refund_rule: str


class TierGrant(BaseModel):
    tier: str = Field(min_length=1, max_length=64)
    until: EndTime | None = None
    reason: str = Field(min_length=1, max_length=500)


class InvitationOut(BaseModel):
    invitation_id: str
    member_id: str
    tier: str
    status: str
    rank: int
    score: float
    explanation: dict[str, Any]
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None


class ManagerAssign(BaseModel):
    """Reassign the member to account manager ``staff_id``, with the reason (kept with it)."""

    staff_id: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=3, max_length=500)


class MemberManagerOut(BaseModel):
    """A member's account manager as assigned now."""

    member_id: str
    staff_id: str
    name: str
    assigned_at: datetime
    reason: str


class ManagedMember(BaseModel):
    member_id: str
    tier: str | None
    score: int | None
    assigned_at: datetime
    reason: str


class ManagerMembersOut(BaseModel):
    staff_id: str
    name: str
    capacity: int
    active: bool
    members: list[ManagedMember]
    next_cursor: str | None
