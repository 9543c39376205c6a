"""What the merchants API takes and answers."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ScorecardOut(BaseModel):
    merchant_id: str
    industry: str
    ratings: int
    dsr_described: float | None
    dsr_service: float | None
    dsr_logistics: float | None
    dsr_score: float
    dsr_percentile: float
    orders: int
    refunds: int
    disputes: int
    complaints: int
    refund_rate: float
    dispute_rate: float
    complaint_rate: float
    handling_hours: float | None
    quality: float
    quality_percentile: float
    as_of: datetime
    build_id: str


class MerchantOut(BaseModel):
    """A merchant's scorecard, penalty points and actions in force."""

    scorecard: ScorecardOut | None
    points: int
    actions: list[ActionOut]
    badge: str | None
    kept_away: bool


class ScorecardsOut(BaseModel):
    items: list[ScorecardOut]


class ViolationIn(BaseModel):
    violation: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=2000)


class PenaltyOut(BaseModel):
    entry_id: str
    merchant_id: str
    violation: str
    points: int
    reason: str
    reverses: str | None
    actor: str
    created_at: datetime


class PenaltyResult(BaseModel):
    entry: PenaltyOut
    points: int
    actions: list[ActionOut]


class AppealIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class AppealDecisionIn(BaseModel):
    uphold: bool
    decision: str = Field(min_length=1, max_length=2000)


class AppealOut(BaseModel):
    appeal_id: str
    entry_id: str
    merchant_id: str
    reason: str
    status: str
    decision: str | None
    decided_by: str | None
    created_at: datetime
    decided_at: datetime | None


class ActionOut(BaseModel):
    action_id: str
    merchant_id: str
    kind: str
    reason: str
    points: int | None
    starts_at: datetime
    ends_at: datetime | None
    lifted_at: datetime | None


class LedgerOut(BaseModel):
    merchant_id: str
    points: int
    entries: list[PenaltyOut]
    appeals: list[AppealOut]
    actions: list[ActionOut]


MerchantOut.model_rebuild()
PenaltyResult.model_rebuild()
