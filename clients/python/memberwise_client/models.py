"""Typed answers of the API. Each accepts fields the server adds later (``extra="allow"``), so
an older client keeps working against a newer server; the memberwise test suite checks every
field named here against the served OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Rejection(_Model):
    index: int
    event_id: str | None = None
    code: str
    field: str | None = None
    message: str


class IngestResult(_Model):
    """What ``POST /v1/events`` did: counts and every rejected event with its reason."""

    accepted: int
    duplicate: int
    rejected: int
    rejections: list[Rejection] = []


class Member(_Model):
    member_id: str
    status: str
    region: str | None = None
    registered_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    version: int
    pii: dict[str, Any] | None = None


class Balance(_Model):
    member_id: str
    available: int
    pending: int
    debt: int


class PointsChange(_Model):
    entry_id: str
    points: int
    balance: Balance


class Coupon(_Model):
    coupon_id: str
    template: str
    member_id: str
    status: str
    valid_from: datetime
    valid_until: datetime
    order_id: str | None = None
    discount: int | None = None


class Issued(_Model):
    template: str
    issued: int
    coupons: list[Coupon]
    refused: dict[str, str]


class Order(_Model):
    order_id: str
    member_id: str
    status: str
    goods_amount: int
    paid: int
    points_earned: int
    refunded: int
    placed_at: datetime


class Recommendation(_Model):
    rank: int
    item_id: str
    score: float
    reason: str
    source: str


class Recommendations(_Model):
    member_id: str
    personalized: bool
    items: list[Recommendation]


class WebhookEndpoint(_Model):
    endpoint_id: str
    url: str
    event_types: list[str]
    status: str
    secret: str | None = None


class Campaign(_Model):
    """A campaign with its targeted members by status and, per arm, by status (the exposure
    log)."""

    campaign_id: str
    name: str
    status: str
    created_at: datetime
    launched_at: datetime | None = None
    members: dict[str, int]
    arms: dict[str, dict[str, int]] = {}


class SampleRatio(_Model):
    observed: dict[str, int]
    expected: dict[str, float]
    p_value: float | None = None
    mismatch: bool
    note: str


class MetricResult(_Model):
    """One arm against the control for one metric; ``p_adjusted`` is Benjamini-Hochberg across
    every arm and metric."""

    metric: str
    arm: str
    method: str
    control: float
    treatment: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    p_adjusted: float
    always_valid_low: float | None = None
    always_valid_high: float | None = None


class CampaignResults(_Model):
    campaign_id: str
    as_of: datetime
    control: str
    srm: SampleRatio
    metrics: list[MetricResult]
    note: str


class MemberCenterLink(_Model):
    """A signed member-center link; it works until ``expires_at``."""

    url: str
    member_id: str
    expires_at: datetime
