"""Retention: old events dropped (kept only as anonymous daily counts) and inactive members
erased, as periodic jobs (``memberwise privacy retention-events`` / ``retention-members``).

Dropping works a whole UTC day at a time (the lake's partition): the days entirely older than
the cut-off go. Before they go, their counts per day, event type and category (no member, no
item) are written to ``<lake>/_aggregates/events_daily/<day>.parquet``, outside the event
partitions, so trend charts keep their history while nothing personal is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from memberwise.kit.lake import EventLake, atomic_write_bytes, drop_days

AGGREGATES_DIR = "_aggregates/events_daily"


@dataclass(frozen=True)
class EventRetention:
    """What one run dropped: days, files, rows; and the rows of counts kept instead."""

    days: int
    files: int
    rows: int
    aggregated_rows: int


def drop_old_events(
    lake: EventLake, *, older_than_days: int, now: datetime, aggregate: bool = True
) -> EventRetention:
    """Drop the days whose events are all older than ``older_than_days`` (aggregating first)."""
    cutoff = (now - timedelta(days=older_than_days)).date()
    days = [d for d in lake.partitions() if d < cutoff]
    aggregated = 0
    if aggregate:
        for day in days:
            aggregated += _aggregate_day(lake, day)
    dropped = drop_days(lake, days)
    return EventRetention(len(days), dropped.files_rewritten, dropped.rows_removed, aggregated)


def _aggregate_day(lake: EventLake, day: date) -> int:
    files = lake.data_files([day])  # (local paths, or an object store's committed URIs)
    if not files:
        return 0
    listed = "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in files) + "]"
    con = lake.connect()
    try:
        table = con.sql(
            f"SELECT DATE '{day.isoformat()}' AS day, type, category_id, "
            "count(DISTINCT event_id) AS events, "
            "sum(CASE WHEN type = 'purchase' THEN coalesce(price, 0) * coalesce(quantity, 1) "
            "ELSE 0 END) AS purchase_amount "
            f"FROM read_parquet({listed}, hive_partitioning = false) "
            "GROUP BY type, category_id ORDER BY type, category_id"
        ).to_arrow_table()
    finally:
        con.close()
    assert table is not None
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(
        lake.root / AGGREGATES_DIR / f"{day.isoformat()}.parquet", sink.getvalue().to_pybytes()
    )
    return int(table.num_rows)


def last_seen(lake: EventLake) -> dict[str, datetime]:
    """Each member's latest event time in the lake."""
    con = lake.connect()  # (a lake on an object store is registered on it)
    try:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.execute(
            f"SELECT member_id, max(ts) FROM ({lake.events_sql()}) GROUP BY member_id"
        ).fetchall()
    finally:
        con.close()
    return {str(m): ts for m, ts in rows}


def inactive_members(
    known: dict[str, datetime], seen: dict[str, datetime], *, cutoff: datetime
) -> list[str]:
    """Members (``known``: id -> last change of their record) with no event and no change of
    their record since ``cutoff``."""
    return sorted(
        m
        for m, changed in known.items()
        if changed < cutoff and (m not in seen or seen[m] < cutoff)
    )
