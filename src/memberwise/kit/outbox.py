"""The transactional outbox: domains record what happened in the same transaction as the change.

A row is written with the change (a tier moved, a coupon issued, a subscription lapsed) and so
exists exactly when the change committed: nothing is announced for a rolled-back change and
nothing committed goes unannounced. The ``webhooks`` domain fans rows out to the platform's
endpoints later; the domains that write here know nothing of webhooks (DESIGN.md: "fed by an
outbox every domain writes to").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import BigInteger, Column, Connection, Index, Integer, String, Table, Text, insert

from memberwise.kit.db import metadata
from memberwise.kit.ids import new_id
from memberwise.kit.time import UTCDateTime, utcnow

#: BIGSERIAL on PostgreSQL; SQLite autoincrements only an INTEGER PRIMARY KEY (the rowid).
SEQ_TYPE = BigInteger().with_variant(Integer(), "sqlite")

outbox = Table(
    "outbox",
    metadata,
    # Insertion order: deliveries to one member keep the order their changes were written in.
    Column("seq", SEQ_TYPE, primary_key=True, autoincrement=True),
    # The Standard Webhooks ``webhook-id``: the same for every attempt and every replay.
    Column("message_id", String(40), nullable=False, unique=True),
    Column("event_type", String(64), nullable=False),
    Column("member_id", String(128), nullable=True),
    Column("payload", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Set once the row was fanned out to endpoints; a marker, not a cursor, because rows commit
    # out of sequence order and a cursor would skip a late commit.
    Column("dispatched_at", UTCDateTime, nullable=True),
    Index("ix_outbox_dispatched_at_seq", "dispatched_at", "seq"),
)


def message_row(
    event_type: str,
    data: Mapping[str, Any],
    *,
    member_id: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """One outbox row, for callers that write many at once with :func:`emit_many`."""
    return {
        "message_id": f"msg_{new_id()}",
        "event_type": event_type,
        "member_id": member_id,
        "payload": orjson.dumps(data, default=str).decode(),
        "created_at": at or utcnow(),
        "dispatched_at": None,
    }


def emit(
    conn: Connection,
    event_type: str,
    data: Mapping[str, Any],
    *,
    member_id: str | None = None,
    at: datetime | None = None,
) -> str:
    """Record ``event_type`` with ``data`` in the caller's transaction; returns its message id."""
    row = message_row(event_type, data, member_id=member_id, at=at)
    conn.execute(insert(outbox), [row])
    return str(row["message_id"])


def emit_many(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Record many rows made by :func:`message_row` in one statement."""
    if rows:
        conn.execute(insert(outbox), list(rows))
