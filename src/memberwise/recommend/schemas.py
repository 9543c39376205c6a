"""Items as the platform sends them, and recommendations, similar items and coupon
suggestions as the API shows them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from memberwise.events.schemas import MAX_ID_LEN
from memberwise.kit.money import Money
from memberwise.kit.time import ScheduledTime

Id = str


class ItemIn(BaseModel):
    """An item's full state as the platform knows it (``PUT /v1/items/{id}`` replaces it)."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, max_length=1000)
    category_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_LEN)
    parent_category_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_LEN)
    brand: str | None = Field(default=None, max_length=MAX_ID_LEN)
    merchant_id: str | None = Field(default=None, max_length=MAX_ID_LEN)
    price: Money | None = None
    launched_at: ScheduledTime | None = Field(
        default=None,
        description="Launch time; before it only members whose tier grants early access see it.",
    )
    consumable: bool = Field(default=False, description="Re-bought on a cycle (diapers, milk).")
    rebuy_days: int | None = Field(default=None, ge=1, le=3650)
    in_stock: bool = True
    hidden: bool = False


class ItemOut(ItemIn):
    # What was stored is shown as it is: the input bounds (price, launch window) are not
    # checked again on a read, so a row can never make its own read fail.
    price: int | None = Field(default=None, description="Minor units (fen).")
    launched_at: datetime | None = None
    item_id: str
    updated_at: datetime


class RecommendationSource(StrEnum):
    """Where an item in a list came from (the offline sources plus the online ones)."""

    session = "session"
    fallback = "fallback"


class RecommendedItem(BaseModel):
    rank: int = Field(description="1 = best.")
    item_id: str
    score: float
    reason: str = Field(description="Why, in words a member center can show.")
    source: str = Field(
        description="repeat, als, cooc, popular, new, neighbours, early_access (offline), "
        "session (lifted by the member's last minutes), fallback (no own list)."
    )
    title: str | None = None
    category_id: str | None = None


class RecommendationsOut(BaseModel):
    member_id: str
    model_id: str | None = Field(description="The published model; null before any build.")
    context: str
    personalized: bool = Field(description="False when the list is the fallback chain only.")
    consent_withheld: bool = Field(
        default=False,
        description="True when the member refused personalised recommendations: the list is "
        "the non-personalised one, built from nothing of theirs.",
    )
    items: list[RecommendedItem]


class SimilarItem(BaseModel):
    rank: int
    item_id: str
    score: float
    title: str | None = None
    category_id: str | None = None


class SimilarOut(BaseModel):
    item_id: str
    model_id: str | None
    fallback: bool = Field(description="True when the item has no learned neighbours.")
    items: list[SimilarItem]


class CouponSuggestion(BaseModel):
    campaign: str
    template: str
    value: int = Field(description="What one coupon may cost the campaign, minor units.")
    uplift: float = Field(description="Estimated extra purchase probability the coupon causes.")
    p_purchase: float = Field(description="Estimated purchase probability without the coupon.")
    best_hour: int | None = Field(description="Hour (0-23, program time zone) to send it.")
    reason: str


class CouponSuggestionsOut(BaseModel):
    member_id: str
    build_id: str | None
    best_hour: int | None
    suggestions: list[CouponSuggestion]
    channels: list[str] = Field(
        default_factory=list,
        description="The marketing purposes (channels) the member consented to: a coupon "
        "message may go only through these; empty: send nothing.",
    )


class ItemsImportResult(BaseModel):
    created: int
    updated: int
    unchanged: int


class RecModelOut(BaseModel):
    """A recommendation model a build made: what orders its lists (``method``: ``ranker`` or
    ``own_history``), its offline metrics on the build's time split, the best own-history
    baseline's, and why it serves or was rejected."""

    model_id: str
    status: str
    as_of: datetime
    created_at: datetime
    published_at: datetime | None
    method: str
    published_method: str | None
    method_decision: str | None
    metrics: dict[str, float | None]
    baselines: dict[str, dict[str, float]]
    decision: str


class RecModelsOut(BaseModel):
    """Recommendation models, newest first; ``serving`` is the id of the one serving."""

    serving: str | None
    models: list[RecModelOut]
