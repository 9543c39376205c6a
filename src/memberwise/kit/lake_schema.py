"""The event lake's Arrow schema: the event contract as stored (DESIGN.md, "Event schema").

It lives in ``kit`` beside the lake that writes and reads it, so the lake needs nothing from the
``events`` domain; ``memberwise.events.schemas`` re-exports it with the API's models.
"""

from __future__ import annotations

import pyarrow as pa

#: The lake's Arrow schema. ``price`` is in minor units (fen/cents); ``ingested_at`` decides
#: which copy of a duplicated ``event_id`` wins (the first ingested).
LAKE_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("member_id", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("item_id", pa.string()),
        pa.field("category_id", pa.string()),
        pa.field("brand", pa.string()),
        pa.field("merchant_id", pa.string()),
        pa.field("price", pa.int64()),
        pa.field("quantity", pa.int32()),
        pa.field("order_id", pa.string()),
        pa.field("channel", pa.string()),
        pa.field("query", pa.string()),
        pa.field("rating", pa.int32()),
        pa.field("text", pa.string()),
        pa.field("region", pa.string()),
        pa.field("properties", pa.string()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
