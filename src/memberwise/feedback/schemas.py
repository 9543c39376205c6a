"""What the feedback API answers: a text's analysis, topics and rising items/merchants."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class Level(StrEnum):
    """Where topics are counted."""

    category = "category"
    brand = "brand"
    item = "item"
    merchant = "merchant"


class RisingLevel(StrEnum):
    item = "item"
    merchant = "merchant"


class AnalyzeIn(BaseModel):
    """Texts to analyse (reviews, complaints, service messages)."""

    texts: list[str] = Field(min_length=1, max_length=1000)


class AspectOut(BaseModel):
    aspect: str
    trigger: str
    phrase: str


class TextAnalysis(BaseModel):
    text: str
    #: P(positive) from the shipped model.
    positive: float
    sentiment: str
    aspects: list[AspectOut]
    words: list[str]


class AnalyzeOut(BaseModel):
    model: dict[str, object]
    results: list[TextAnalysis]


class TopicOut(BaseModel):
    level: Level
    key: str
    aspect: str
    trigger: str
    label: str | None
    mentions: int
    members: int
    share: float
    examples: list[str]
    first_seen: datetime | None
    last_seen: datetime | None


class TopicsOut(BaseModel):
    build_id: str | None
    topics: list[TopicOut]


class RisingOut(BaseModel):
    level: RisingLevel
    key: str
    recent_complaints: int
    recent_orders: int
    base_complaints: int
    base_orders: int
    ratio: float
    p_value: float
    q_value: float
    rising: bool
    as_of: datetime


class RisingListOut(BaseModel):
    build_id: str | None
    items: list[RisingOut]
