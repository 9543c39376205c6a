"""The staged day files: several writer threads, each day's rows in file order."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from memberwise.events.schemas import LAKE_SCHEMA
from memberwise.events.staging import PartitionWriter
from memberwise.kit.lake import day_of

START = datetime(2026, 5, 1, tzinfo=UTC)


def _rows(ids: list[str], day: int) -> pa.Table:
    ts = START + timedelta(days=day)
    rows = [
        {"event_id": i, "member_id": "m1", "type": "view", "ts": ts, "ingested_at": START}
        for i in ids
    ]
    return pa.Table.from_pylist(rows, schema=LAKE_SCHEMA)


def _day(n: int) -> int:
    """The writer's key of the n-th day after START (days since the epoch)."""
    return (date(2026, 5, 1) - date(1970, 1, 1)).days + n


def test_three_writers_keep_each_days_rows_in_order_and_finish_untouched_days_early(
    tmp_path: Path,
) -> None:
    writer = PartitionWriter(tmp_path, threads=3)
    batches = [
        [(0, ["a1", "a2"]), (1, ["b1"])],
        [(1, ["b2", "b3"]), (2, ["c1"]), (0, ["a3"])],  # random order: every day stays
        [(2, ["c2"]), (3, ["d1"])],  # days 0 and 1 are not touched: written out now
        [(3, ["d2"]), (4, ["e1"]), (2, ["c3"])],
    ]
    buffered_after = []
    for batch in batches:
        writer.add_batch((_day(n), _rows(ids, n)) for n, ids in batch)
        buffered_after.append(sorted(d - _day(0) for d in writer.buffers))
    staged = writer.close()
    writer.abort()

    assert buffered_after == [[0, 1], [0, 1, 2], [2, 3], [2, 3, 4]]
    read = {
        day - _day(0): [
            i for path in paths for i in pq.read_table(path).column("event_id").to_pylist()
        ]
        for day, paths in staged.items()
    }
    assert read == {
        0: ["a1", "a2", "a3"],
        1: ["b1", "b2", "b3"],
        2: ["c1", "c2", "c3"],
        3: ["d1", "d2"],
        4: ["e1"],
    }
    assert {day_of(d) for d in staged} == {date(2026, 5, 1) + timedelta(days=n) for n in range(5)}
    # A day written out early keeps its file open: a later row group goes to the same file.
    assert all(len(paths) == 1 for paths in staged.values())
