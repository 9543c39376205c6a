"""Accept event batches from the platform's backend: validate each event, drop replays, land the
rest in the lake, and give members first seen here a record.

A batch is answered per event: accepted, duplicate (its ``event_id`` was accepted before, or
appears earlier in the same batch) or rejected with a stable code and a sentence. A batch that
is partly bad still lands its good events.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy import Connection

from memberwise.events import repository
from memberwise.events.schemas import (
    LAKE_SCHEMA,
    MAX_BATCH,
    REQUIRED_FIELDS,
    EventBatch,
    EventIn,
    IngestResult,
    RejectCode,
    Rejection,
    max_ts,
    properties_json,
    time_in_range,
)
from memberwise.kit.cache import BoundedSet
from memberwise.kit.errors import InvalidRequest, MemberwiseError, PayloadTooLarge
from memberwise.kit.lake import EventLake
from memberwise.kit.time import utcnow
from memberwise.members import service as members
from memberwise.privacy import erasure
from memberwise.privacy.schemas import Principal


class MalformedJson(MemberwiseError):
    status_code = 400
    code = "malformed_json"


class MalformedBatch(InvalidRequest):
    code = "malformed_batch"


class BatchTooLarge(PayloadTooLarge):
    code = "batch_too_large"


_events_adapter = TypeAdapter(list[EventIn])


def parse_batch(body: bytes) -> list[Any]:
    """The events of a request body ``{"events": [...]}``.

    Raises MalformedJson, MalformedBatch, or BatchTooLarge (more than MAX_BATCH events).
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict) or not isinstance(parsed.get("events"), list):
        raise MalformedBatch('the body must be a JSON object {"events": [ ... ]}')
    if set(parsed) != {"events"}:
        extra = ", ".join(sorted(set(parsed) - {"events"}))
        raise MalformedBatch(f"unknown top-level field(s): {extra}")
    events: list[Any] = parsed["events"]
    if len(events) > MAX_BATCH:
        raise BatchTooLarge(
            f"a batch holds at most {MAX_BATCH} events; this one has {len(events)}; split it"
        )
    return events


def _reject_code(error: ErrorDetails) -> tuple[RejectCode, str | None]:
    loc = error["loc"]
    field = str(loc[1]) if len(loc) > 1 else None
    kind = error["type"]
    # null or "" for a required field is the same as leaving it out (bulk files say so too).
    required_but_empty = field in REQUIRED_FIELDS and error.get("input") in (None, "")
    if kind == "missing" or required_but_empty:
        return RejectCode.missing_field, field
    if kind == "extra_forbidden":
        return RejectCode.unknown_field, field
    if field == "price" and kind == "greater_than_equal":
        return RejectCode.negative_price, field
    if field == "type" and kind in ("enum", "literal_error"):
        return RejectCode.unknown_event_type, field
    if field == "ts":
        return RejectCode.bad_time, field
    if kind.endswith(("_type", "_parsing")) or kind == "int_from_float":
        return RejectCode.wrong_type, field
    return RejectCode.invalid_value, field


def validate_events(raw: Sequence[Any]) -> tuple[list[EventIn], list[Rejection]]:
    """Split a batch into valid events (in order) and rejections (first problem of each)."""
    try:
        parsed = _events_adapter.validate_python(raw)
        first: dict[int, Rejection] = {}
    except ValidationError as exc:
        first = {}
        for error in exc.errors(include_url=False):
            index = error["loc"][0]
            if isinstance(index, int) and index not in first:
                code, field = _reject_code(error)
                prefix = f"{field}: " if field else ""
                first[index] = _rejection(raw, index, code, field, prefix + error["msg"])
        parsed = _events_adapter.validate_python([r for i, r in enumerate(raw) if i not in first])
    latest = max_ts()
    events: list[EventIn] = []
    good_indexes = (i for i in range(len(raw)) if i not in first) if first else range(len(raw))
    for index, event in zip(good_indexes, parsed, strict=True):
        if time_in_range(event.ts, latest):
            events.append(event)
        else:
            first[index] = _rejection(
                raw,
                index,
                RejectCode.bad_time,
                "ts",
                f"ts: {event.ts.isoformat()} is outside 2000-01-01 .. now + 1 day",
            )
    return events, [first[i] for i in sorted(first)]


def _rejection(
    raw: Sequence[Any], index: int, code: RejectCode, field: str | None, message: str
) -> Rejection:
    item = raw[index]
    event_id = item.get("event_id") if isinstance(item, dict) else None
    return Rejection(
        index=index,
        event_id=event_id if isinstance(event_id, str) else None,
        code=code,
        field=field,
        message=message,
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def _epoch_us(ts: datetime) -> int:
    """Microseconds since the Unix epoch, exactly (a naive time is UTC)."""
    return (ts - (_EPOCH if ts.tzinfo is not None else _EPOCH_NAIVE)) // _MICROSECOND


def to_arrow(events: Sequence[EventIn], ingested_at: datetime) -> pa.Table:
    """Events as a lake table (LAKE_SCHEMA), built column by column (the API's hot path)."""
    rows = [e.__dict__ for e in events]
    arrays = []
    for field in LAKE_SCHEMA:
        name = field.name  # read once: an Arrow field's name is a property call
        if name == "ingested_at":
            values: list[Any] = [_epoch_us(ingested_at)] * len(rows)
        elif name == "ts":
            # Integers, not datetimes: Arrow converting pydantic's tzinfo objects tries (and
            # fails) to import a time-zone library for every batch.
            values = [_epoch_us(r["ts"]) for r in rows]
        elif name == "properties":
            values = [properties_json(r["properties"]) for r in rows]
        elif name == "type":
            values = [r["type"].value for r in rows]
        else:
            values = [r[name] for r in rows]
        arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=LAKE_SCHEMA)


def read_batch(body: bytes) -> tuple[list[EventIn], list[Rejection]]:
    """Parse and validate a request body: the valid events and the rejections.

    The common case, a batch with nothing wrong, is parsed and validated in one pass in
    pydantic's Rust core; anything else takes the path that explains each problem. Raises
    MalformedJson, MalformedBatch, BatchTooLarge for a body that is not a batch at all.
    """
    try:
        events = EventBatch.model_validate_json(body).events
    except ValidationError:
        pass
    else:
        latest = max_ts()
        if all(time_in_range(e.ts, latest) for e in events):
            return events, []
    return validate_events(parse_batch(body))


def ingest_batch(
    conn: Connection,
    lake: EventLake,
    events: Sequence[EventIn],
    rejections: Sequence[Rejection] = (),
    *,
    actor: Principal,
    known_members: BoundedSet | None = None,
    tombstone_secret: bytes | None = None,
) -> IngestResult:
    """Deduplicate and land validated events; returns the per-event outcome.

    The receipts are claimed in the caller's transaction, the lake write is durable before this
    returns, and members first seen here get records in the same transaction. If the
    transaction then fails, the client's retry writes the events again and the lake's reader
    drops the copies (same ``event_id``), so nothing is lost or counted twice.
    """
    unique: dict[str, EventIn] = {}
    for event in events:
        unique.setdefault(event.event_id, event)
    new_ids = repository.claim(conn, list(unique))
    fresh = [e for eid, e in unique.items() if eid in new_ids]
    if fresh and tombstone_secret is not None and erasure.any_erased(conn):
        # An erased member's events never come back (a replayed or re-sent batch); they
        # count as duplicates of what was forgotten, and leave no trace here.
        gone = erasure.erased_among(conn, tombstone_secret, (e.member_id for e in fresh))
        fresh = [e for e in fresh if e.member_id not in gone]
    if fresh:
        lake.append(to_arrow(fresh, utcnow()), prefix="api")
        members.ensure_members(conn, (e.member_id for e in fresh), actor=actor, known=known_members)
    return IngestResult(
        accepted=len(fresh),
        duplicate=len(events) - len(fresh),
        rejected=len(rejections),
        rejections=list(rejections),
    )
