"""What the predictions API returns: a member's published predictions and the diagnostics of
the models that made them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, Field


class MemberPredictionsOut(BaseModel):
    """One member's predictions in the published model version. Money is in fen; a null
    value means the model that makes it could not be fitted on this build's data
    (``GET /v1/predictions/models`` says why)."""

    member_id: str
    model_version: str = Field(description="Id of the build whose models made these values.")
    as_of: datetime = Field(description="The clock the models were fitted and scored at.")
    published_at: datetime
    clv_12m_fen: int | None = Field(
        description="Predicted profit of the next 12 months' repeat purchases, discounted "
        "(BG/NBD x Gamma-Gamma x margin), in fen; 0 for a member who never bought."
    )
    p_alive: float | None = Field(description="Probability (0-1) the member is still a buyer.")
    churn_risk: float | None = Field(
        description="Calibrated probability (0-1) of no purchase in the churn horizon."
    )
    expected_purchases_90d: float | None = Field(
        description="Expected purchase days in the next 90 days (repeat purchases)."
    )
    expected_spend_fen: int | None = Field(
        description="Expected spend per purchase day (Gamma-Gamma), in fen; null without a "
        "purchase."
    )
    repeat_purchases: int = Field(description="Purchase days after the first, up to as_of.")
    purchase_days: int = Field(description="Distinct purchase days up to as_of.")
    purchase_interval_days: float | None = Field(
        description="Median days between purchase days (re-buyers only)."
    )
    next_purchase_date: date | None = Field(
        description="Last purchase day + the median interval (re-buyers only; a date before "
        "as_of means overdue)."
    )
    best_hour: int = Field(ge=0, le=23, description="Hour (program time zone) to reach them.")
    best_weekday: int = Field(ge=1, le=7, description="1 = Monday .. 7 = Sunday.")


class ModelFit(BaseModel):
    """A fitted (or not fitted) BG/NBD or Gamma-Gamma model."""

    status: str = Field(description="fitted or not_fitted")
    params: dict[str, float] = Field(default_factory=dict)
    log_likelihood: float | None = None
    penalizer: float | None = None
    code: str | None = Field(default=None, description="Why it was not fitted (error code).")
    message: str | None = None
    fit_seconds: float | None = None
    diagnostics: dict[str, Any] = Field(default_factory=dict)


class CalibrationBin(BaseModel):
    low: float
    high: float
    members: int
    mean_predicted: float
    observed_rate: float


class FeatureImportance(BaseModel):
    field: str
    gain: float
    share: float


class ChurnFit(BaseModel):
    """The churn model's time split and test-part figures."""

    status: str
    horizon_days: int
    features_as_of: str
    labels: str
    code: str | None = None
    message: str | None = None
    details: dict[str, Any] = Field(
        default_factory=dict, description="Why it was not fitted, e.g. reason too_few_members."
    )
    members: int | None = None
    churn_rate: float | None = None
    parts: dict[str, int] = Field(default_factory=dict)
    auc: float | None = None
    auc_uncalibrated: float | None = None
    brier: float | None = None
    brier_uncalibrated: float | None = None
    brier_baseline: float | None = None
    calibration_method: str | None = None
    calibration: list[CalibrationBin] = Field(default_factory=list)
    importance: list[FeatureImportance] = Field(default_factory=list)
    fit_seconds: float | None = None
    score_seconds: float | None = None


class ModelsOut(BaseModel):
    """The published model version's diagnostics (all null before any is published)."""

    model_version: str | None
    as_of: datetime | None
    fitted_at: datetime | None = None
    published_at: datetime | None = None
    members: int | None = None
    customers: int | None = None
    repeat_buyers: int | None = None
    unit: str | None = None
    currency: str | None = None
    clv: dict[str, Any] = Field(default_factory=dict)
    bgnbd: ModelFit | None = None
    gammagamma: ModelFit | None = None
    churn: ChurnFit | None = None
