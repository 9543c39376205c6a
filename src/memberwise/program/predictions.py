"""The program's prediction section: the numbers CLV and churn models need from the business."""

from __future__ import annotations

from pydantic import Field

from memberwise.program.base import Section


class PredictionSettings(Section):
    """Margin and discount rate for CLV, and the churn label's horizon."""

    #: Share of spend that is profit, for CLV.
    margin: float = Field(default=0.3, gt=0, le=1)
    #: Yearly discount rate for CLV.
    discount_rate: float = Field(default=0.1, ge=0, lt=1)
    #: A member "churns" when they buy nothing in this many days.
    churn_horizon_days: int = Field(default=90, ge=7, le=730)
