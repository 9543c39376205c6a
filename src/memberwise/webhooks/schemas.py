"""Webhook endpoints, deliveries and attempts as the API shows them, and the event catalogue."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, HttpUrl


class EventType(StrEnum):
    """What the platform can subscribe to; the payload's ``type``."""

    tier_changed = "member.tier_changed"
    downgrade_notice = "member.downgrade_notice"
    invitation_created = "invitation.created"
    subscription_updated = "subscription.updated"
    coupon_issued = "coupon.issued"
    points_expired = "points.expired"
    campaign_send = "campaign.send"
    journey_step = "journey.step"


EVENT_DESCRIPTIONS: dict[EventType, str] = {
    EventType.tier_changed: "A member moved up or down a tier (first placements are not sent).",
    EventType.downgrade_notice: (
        "A member's next evaluation will downgrade them unless they requalify (once a notice)."
    ),
    EventType.invitation_created: "A member was invited to an invitation-only tier.",
    EventType.subscription_updated: "A paid subscription changed state.",
    EventType.coupon_issued: "A coupon was issued to a member.",
    EventType.points_expired: "A member's points expired.",
    EventType.campaign_send: "A campaign's message (and offer) to send to a member.",
    EventType.journey_step: "A journey step's message (and offer) to send to a member.",
}


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(description="Where deliveries are POSTed (http or https).")
    description: str | None = Field(default=None, max_length=500)
    event_types: list[EventType] = Field(
        default_factory=list, description="Types to receive; empty means every type."
    )


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=500)
    event_types: list[EventType] | None = None
    enabled: bool | None = Field(
        default=None, description="false disables; true re-enables and resets the failure count."
    )


class EndpointOut(BaseModel):
    endpoint_id: str
    url: str
    description: str | None
    event_types: list[str]
    status: str
    disabled_reason: str | None
    consecutive_failures: int
    failing_since: datetime | None
    created_at: datetime


class EndpointCreated(EndpointOut):
    secret: str = Field(description="The signing secret (whsec_...); shown once.")


class SecretRotated(BaseModel):
    endpoint_id: str
    secret: str = Field(description="The new signing secret; shown once.")
    previous_expires_at: datetime | None = Field(
        description="Until then deliveries are signed with the old secret too."
    )


class RotateSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_previous_hours: int = Field(default=24, ge=0, le=24 * 30)


class DeliveryOut(BaseModel):
    delivery_id: str
    endpoint_id: str
    message_id: str
    event_type: str
    member_id: str | None
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class AttemptOut(BaseModel):
    attempt_id: str
    delivery_id: str
    attempted_at: datetime
    status_code: int | None
    duration_ms: int
    error: str | None
    response: str | None


class ReplayRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime
    until: datetime | None = None
    only_failed: bool = Field(default=False, description="Replay only failed deliveries.")


class Replayed(BaseModel):
    replayed: int


class EventTypeOut(BaseModel):
    type: str
    description: str


class SendReport(BaseModel):
    """What one pass of the sender did."""

    dispatched: int = 0
    attempted: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    disabled_endpoints: int = 0
