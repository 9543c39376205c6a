"""The event contract: one schema for the API, the bulk files and the lake.

Every behaviour the platform sends is an event keyed by ``event_id`` (the idempotency key).
The rules below are the single definition of a valid event; the API validates with pydantic and
bulk ingest compiles the same rules (:data:`LIMITS`, :data:`EVENT_TYPES`) to SQL, and one
contract test feeds the same bad rows to both.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from memberwise.kit.ids import MemberId
from memberwise.kit.lake_schema import LAKE_SCHEMA as LAKE_SCHEMA


class EventType(StrEnum):
    """What happened. Taobao's pv/fav/cart/buy map to view/favorite/cart/purchase."""

    view = "view"
    search = "search"
    favorite = "favorite"
    cart = "cart"
    purchase = "purchase"
    refund = "refund"
    review = "review"
    complaint = "complaint"
    login = "login"
    service = "service"


EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)

#: Taobao UserBehavior's behaviour codes in our vocabulary.
TAOBAO_BEHAVIOR: dict[str, str] = {
    "pv": "view",
    "fav": "favorite",
    "cart": "cart",
    "buy": "purchase",
}

#: Earliest accepted event time: anything older is a clock or unit error (e.g. epoch 0).
MIN_TS = datetime(2000, 1, 1, tzinfo=UTC)
#: How far in the future an event may be stamped (clock skew between platform hosts).
MAX_FUTURE = timedelta(days=1)
#: Longest accepted identifier / free text, in characters.
MAX_ID_LEN = 128
MAX_TEXT_LEN = 4000
#: Most events one ``POST /v1/events`` may carry.
MAX_BATCH = 10_000

#: Field names of the contract in lake order; the first four are required.
REQUIRED_FIELDS: tuple[str, ...] = ("event_id", "member_id", "type", "ts")
ID_FIELDS: tuple[str, ...] = (
    "event_id",
    "member_id",
    "item_id",
    "category_id",
    "brand",
    "merchant_id",
    "order_id",
    "channel",
    "region",
)
TEXT_FIELDS: tuple[str, ...] = ("query", "text")

#: The fields a client sends (the lake's, less ``ingested_at``), in order.
EVENT_FIELDS: tuple[str, ...] = tuple(f.name for f in LAKE_SCHEMA if f.name != "ingested_at")
#: Input schema for event files (what ``demo generate`` writes and ``ingest`` reads best).
INPUT_SCHEMA = pa.schema([f for f in LAKE_SCHEMA if f.name != "ingested_at"])


class RejectCode(StrEnum):
    """Why an event was refused; stable, for clients and dead-letter files."""

    missing_field = "missing_field"
    wrong_type = "wrong_type"
    unknown_event_type = "unknown_event_type"
    bad_time = "bad_time"
    negative_price = "negative_price"
    invalid_value = "invalid_value"
    unknown_field = "unknown_field"
    malformed_row = "malformed_row"


def max_ts(now: datetime | None = None) -> datetime:
    """Latest accepted event time, relative to ``now`` (default: the current UTC time)."""
    return (now or datetime.now(UTC)) + MAX_FUTURE


class EventIn(BaseModel):
    """One behaviour event as a client sends it. Unknown fields are refused (typos would else
    silently lose data); anything platform-specific goes into ``properties``.

    The time-range rule is checked by :func:`check_time` after parsing (a per-field Python
    validator would double the cost of validating a 10,000-event batch).
    """

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=MAX_ID_LEN)
    member_id: MemberId
    type: EventType
    ts: datetime = Field(description="ISO-8601 (no zone = UTC) or Unix seconds.")
    item_id: str | None = Field(default=None, max_length=MAX_ID_LEN)
    category_id: str | None = Field(default=None, max_length=MAX_ID_LEN)
    brand: str | None = Field(default=None, max_length=MAX_ID_LEN)
    merchant_id: str | None = Field(default=None, max_length=MAX_ID_LEN)
    price: int | None = Field(
        default=None, ge=0, le=2**63 - 1, description="Unit price in minor units (fen/cents)."
    )
    quantity: int | None = Field(default=None, ge=1, le=1_000_000)
    order_id: str | None = Field(default=None, max_length=MAX_ID_LEN)
    channel: str | None = Field(default=None, max_length=MAX_ID_LEN)
    query: str | None = Field(default=None, max_length=MAX_TEXT_LEN)
    rating: int | None = Field(default=None, ge=1, le=5)
    text: str | None = Field(default=None, max_length=MAX_TEXT_LEN)
    region: str | None = Field(default=None, max_length=MAX_ID_LEN)
    properties: dict[str, Any] | None = None


def time_in_range(ts: datetime, latest: datetime) -> bool:
    """Whether ``ts`` (a naive time is UTC) lies within ``MIN_TS .. latest``."""
    aware = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
    return MIN_TS <= aware <= latest


def properties_json(value: dict[str, Any] | None) -> str | None:
    """Properties as stored in the lake: compact JSON text."""
    return None if value is None else orjson.dumps(value).decode()


class Rejection(BaseModel):
    """One refused event: where it was, which field, why."""

    index: int = Field(description="Position in the batch (0-based) or row number in a file.")
    event_id: str | None = None
    code: RejectCode
    field: str | None = None
    message: str


class IngestResult(BaseModel):
    """What happened to a batch: counts, and each rejection with its reason."""

    accepted: int
    duplicate: int
    rejected: int
    rejections: list[Rejection] = Field(default_factory=list)


class EventBatch(BaseModel):
    """The request body of ``POST /v1/events``: the shape it is documented and first parsed with.

    A body that does not fit it whole is parsed again event by event, so one bad event is
    rejected on its own (see ``events.service.read_batch``).
    """

    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(max_length=MAX_BATCH)
