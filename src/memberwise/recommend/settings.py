"""The program's recommendation section: list length and business rules of the recommender."""

from __future__ import annotations

from pydantic import Field

from memberwise.program.base import Section


class RecommendationSettings(Section):
    """How many items each member's precomputed list holds."""

    list_length: int = Field(default=50, ge=1, le=500)
