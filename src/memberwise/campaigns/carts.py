"""Abandoned carts, read from the event lake when journeys run.

A cart is abandoned when the member's latest ``cart`` event of an item is at least ``hours``
old and no ``purchase`` of that item by them followed it. Only the day partitions of the last
``days`` (plus the waits of the journeys asking) are read -- the lake is partitioned by UTC day,
so the cost of a journey run is the recent days' events, not the whole history -- through
DuckDB, the warehouse engine, with duplicates (same ``event_id``) removed as everywhere.

Chosen over flagging carts on the ingest path: ingest (issue 20's bulk path especially) stays a
plain append, a late or replayed purchase is seen whatever order events arrive in, and one
query a run answers every member at once.

Each abandonment is one occurrence keyed by the item and the cart event (a later cart of the
same item after a purchase, or re-adding it days later, is a new one); it resolves when the
member buys the item.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date, datetime, timedelta

import duckdb
import pyarrow as pa

from memberwise.kit.lake import EventLake

_KEY_MAX = 128


def cart_key(item_id: str, event_id: str) -> str:
    """The enrollment key of one abandoned cart: readable when it fits the column."""
    key = f"cart:{item_id}:{event_id}"
    if len(key) <= _KEY_MAX:
        return key
    digest = hashlib.sha256(f"{item_id}\x1f{event_id}".encode()).hexdigest()
    return f"cart:#{digest[:40]}"


def _days(lake: EventLake, start: datetime, end: datetime) -> list[date]:
    first, last = start.date() - timedelta(days=1), end.date() + timedelta(days=1)
    return [d for d in lake.partitions() if first <= d <= last]


def _events_sql(lake: EventLake, days: Sequence[date]) -> str | None:
    files = lake.data_files(days)  # (local paths, or an object store's committed URIs)
    if not files:
        return None
    listed = ", ".join("'" + str(p).replace("'", "''") + "'" for p in files)
    return (
        "SELECT event_id, member_id, type, item_id, ts FROM read_parquet(["
        + listed
        + "], hive_partitioning = false) WHERE type IN ('cart', 'purchase') "
        "AND item_id IS NOT NULL "
        "QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY ts, member_id) = 1"
    )


def _connect(lake: EventLake) -> duckdb.DuckDBPyConnection:
    return lake.connect()  # UTC, and able to read a lake on an object store


def abandoned(lake: EventLake, now: datetime, *, hours: float, days: int) -> list[tuple[str, str]]:
    """(member, cart key) of every cart abandoned at ``now``: the latest cart of an item in
    the last ``days`` is ``hours`` old or more, with no purchase of the item since."""
    start = now - timedelta(days=days)
    sql = _events_sql(lake, _days(lake, start, now))
    if sql is None:
        return []
    con = _connect(lake)
    try:
        rows = con.execute(
            f"""
            WITH e AS ({sql}),
            latest AS (
                SELECT member_id, item_id, max(ts) AS ts, arg_max(event_id, ts) AS event_id
                FROM e WHERE type = 'cart' AND ts >= $start AND ts <= $now
                GROUP BY member_id, item_id
            )
            SELECT c.member_id, c.item_id, c.event_id FROM latest c
            WHERE c.ts <= $cutoff AND NOT EXISTS (
                SELECT 1 FROM e p WHERE p.type = 'purchase' AND p.member_id = c.member_id
                AND p.item_id = c.item_id AND p.ts >= c.ts AND p.ts <= $now
            )
            ORDER BY c.member_id, c.item_id
            """,
            {"start": start, "now": now, "cutoff": now - timedelta(hours=hours)},
        ).fetchall()
    finally:
        con.close()
    return [(m, cart_key(i, e)) for m, i, e in rows]


def bought(
    lake: EventLake, wanted: Sequence[tuple[str, str]], since: datetime, now: datetime
) -> set[tuple[str, str]]:
    """Of ``wanted`` (member, cart key) whose cart event is at or after ``since``, those whose
    member bought the item after that cart (the abandonment resolved)."""
    if not wanted:
        return set()
    sql = _events_sql(lake, _days(lake, since, now))
    if sql is None:
        return set()
    con = _connect(lake)
    try:
        con.register("wanted", pa.table({"member_id": sorted({m for m, _ in wanted})}))
        rows = con.execute(
            f"""
            WITH e AS ({sql})
            SELECT c.member_id, c.item_id, c.event_id FROM e c
            JOIN wanted w ON w.member_id = c.member_id
            WHERE c.type = 'cart' AND c.ts >= $since AND EXISTS (
                SELECT 1 FROM e p WHERE p.type = 'purchase' AND p.member_id = c.member_id
                AND p.item_id = c.item_id AND p.ts >= c.ts AND p.ts <= $now
            )
            """,
            {"since": since, "now": now},
        ).fetchall()
    finally:
        con.close()
    keys = set(wanted)
    return {(m, cart_key(i, e)) for m, i, e in rows} & keys
