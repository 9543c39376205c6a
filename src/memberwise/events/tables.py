"""The receipt of every event accepted through the API: what makes ``POST /v1/events`` idempotent.

Events themselves live in the lake (Parquet), not here; this table only remembers ids, so a
replayed batch is answered "duplicate" and not written twice.
"""

from __future__ import annotations

from sqlalchemy import Column, String, Table, func

from memberwise.kit.db import metadata
from memberwise.kit.time import UTCDateTime

event_receipts = Table(
    "event_receipts",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column("received_at", UTCDateTime, nullable=False, server_default=func.current_timestamp()),
    # Clustered on the key on SQLite (no separate rowid tree): half the work per insert.
    sqlite_with_rowid=False,
)
