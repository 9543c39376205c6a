"""The event lake: atomic appends, the deduplicating readers, compaction, stats."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import ibis
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memberwise.events.schemas import LAKE_SCHEMA
from memberwise.kit.lake import EventLake, events_table

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rows(
    ids: list[str], *, ingested: int, day: int = 1, item: str | None = None, **extra: Any
) -> pa.Table:
    """Lake rows for ``ids`` on 2026-03-``day``, ingested ``ingested`` seconds after T0."""
    n = len(ids)
    data: dict[str, list[Any]] = {f.name: [None] * n for f in LAKE_SCHEMA}
    data["event_id"] = ids
    data["member_id"] = [f"m-{i}" for i in ids]
    data["type"] = ["view"] * n
    data["ts"] = [datetime(2026, 3, day, 8, tzinfo=UTC)] * n
    data["item_id"] = [item or f"i{ingested}"] * n
    data["ingested_at"] = [T0 + timedelta(seconds=ingested)] * n
    for key, value in extra.items():
        data[key] = [value] * n
    return pa.Table.from_pydict(data, schema=LAKE_SCHEMA)


def read(lake: EventLake) -> list[tuple[str, str]]:
    """(event_id, item_id) of every event the DuckDB reader returns, sorted."""
    con = duckdb.connect()
    got = (
        lake.events_relation(con).select("event_id, item_id").order("event_id, item_id").fetchall()
    )
    return [(str(a), str(b)) for a, b in got]


def stored(lake: EventLake) -> list[str]:
    """Every physically stored event_id (copies included), sorted."""
    files = [str(p) for p in lake.files()]
    if not files:
        return []
    sql = f"SELECT event_id FROM read_parquet({files!r}) ORDER BY 1"
    return [r[0] for r in duckdb.connect().sql(sql).fetchall()]


def test_append_writes_one_durable_file_per_day_and_reads_back_exactly(tmp_path: Path) -> None:
    lake = EventLake(tmp_path)
    table = pa.concat_tables([rows(["a", "b"], ingested=1, day=1), rows(["c"], ingested=1, day=2)])

    written = lake.append(table, prefix="api")

    assert sorted(p.parent.name for p in written) == ["date=2026-03-01", "date=2026-03-02"]
    assert all(p.name.startswith("api-") for p in written)
    assert all(pq.read_schema(p).equals(LAKE_SCHEMA) for p in written)
    assert read(lake) == [("a", "i1"), ("b", "i1"), ("c", "i1")]
    assert lake.partitions() == [date(2026, 3, 1), date(2026, 3, 2)]
    assert not list(tmp_path.rglob(".tmp-*"))


def test_append_of_nothing_writes_nothing(tmp_path: Path) -> None:
    lake = EventLake(tmp_path)
    assert lake.append(rows([], ingested=1), prefix="api") == []
    assert lake.files() == []


def test_a_crash_leftover_temp_file_is_ignored_by_readers_stats_and_compaction(
    tmp_path: Path,
) -> None:
    lake = EventLake(tmp_path)
    lake.append(rows(["a"], ingested=1), prefix="api")
    partition = lake.partition_dir(date(2026, 3, 1))
    (partition / ".tmp-deadbeef.parquet").write_bytes(b"PAR1 half a file")
    pq.write_table(rows(["ghost"], ingested=0), partition / ".tmp-whole.parquet")

    assert read(lake) == [("a", "i1")]
    assert lake.stats().files == 1
    lake.append(rows(["b"], ingested=2), prefix="api")
    result = lake.compact()

    assert (result.files_before, result.files_after) == (2, 1)
    assert read(lake) == [("a", "i1"), ("b", "i2")]
    assert (partition / ".tmp-deadbeef.parquet").exists()  # may be a write in progress
    hours_ago = time.time() - 2 * 3600
    os.utime(partition / ".tmp-deadbeef.parquet", (hours_ago, hours_ago))
    lake.compact()
    assert not (partition / ".tmp-deadbeef.parquet").exists()
    assert (partition / ".tmp-whole.parquet").exists()


def test_duplicates_across_files_are_hidden_and_the_first_ingested_copy_wins(
    tmp_path: Path,
) -> None:
    lake = EventLake(tmp_path)
    lake.append(rows(["a", "b"], ingested=5, item="late"), prefix="api")
    lake.append(rows(["b", "c"], ingested=2, item="early"), prefix="api")

    assert read(lake) == [("a", "late"), ("b", "early"), ("c", "early")]
    assert stored(lake) == ["a", "b", "b", "c"]


def test_an_id_reused_on_another_day_is_a_second_event_and_single_file_days_read_as_stored(
    tmp_path: Path,
) -> None:
    lake = EventLake(tmp_path)
    lake.append(rows(["a", "b"], ingested=5, item="first"), prefix="api")
    lake.append(rows(["a"], ingested=9, item="other-day", day=3), prefix="api")

    assert read(lake) == [("a", "first"), ("a", "other-day"), ("b", "first")]


def test_a_tie_on_ingested_at_resolves_by_the_rows_values_not_the_file_names(
    tmp_path: Path,
) -> None:
    lake = EventLake(tmp_path)
    lake.append(rows(["a"], ingested=1, item="zzz"), prefix="aaa")
    lake.append(rows(["a"], ingested=1, item="bbb"), prefix="zzz")

    assert read(lake) == [("a", "bbb")]


def test_the_ibis_reader_deduplicates_the_same_way(tmp_path: Path) -> None:
    lake = EventLake(tmp_path)
    lake.append(rows(["a", "b"], ingested=5, item="late"), prefix="api")
    lake.append(rows(["b", "c"], ingested=2, item="early"), prefix="api")

    table = events_table(ibis.duckdb.connect(), lake)
    got = table.select("event_id", "item_id").order_by("event_id").to_pyarrow().to_pylist()

    assert table.schema().names == tuple(LAKE_SCHEMA.names)
    assert got == [
        {"event_id": "a", "item_id": "late"},
        {"event_id": "b", "item_id": "early"},
        {"event_id": "c", "item_id": "early"},
    ]


def test_disjoint_files_of_a_day_are_read_plainly_and_the_check_is_recorded(
    tmp_path: Path,
) -> None:
    lake = EventLake(tmp_path)
    lake.append(rows(["a", "b"], ingested=5, item="x"), prefix="api")
    lake.append(rows(["c"], ingested=2, item="y"), prefix="api")
    lake.append(rows(["d"], ingested=2, item="z", day=2), prefix="api")

    plain, overlapping = lake.read_plan()

    assert (plain, overlapping) == (lake.files(), [])
    record = json.loads((tmp_path / "_manifest" / "overlaps.json").read_text())
    day = lake.partition_dir(date(2026, 3, 1))
    assert record == {
        "date=2026-03-01": {
            "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in lake.files()[:2]],
            "overlap": False,
        }
    }
    assert sorted(p.parent for p in plain[:2]) == [day, day]
    assert read(lake) == [("a", "x"), ("b", "x"), ("c", "y"), ("d", "z")]


def test_a_file_added_to_a_checked_day_is_checked_again_and_its_copies_hidden(
    tmp_path: Path,
) -> None:
    lake = EventLake(tmp_path)
    lake.append(rows(["a"], ingested=5, item="late"), prefix="api")
    lake.append(rows(["b"], ingested=5, item="late"), prefix="api")
    assert lake.read_plan()[1] == []
    lake.append(rows(["b"], ingested=2, item="early"), prefix="api")

    plain, overlapping = lake.read_plan()

    assert (plain, overlapping) == ([], [lake.files()])
    assert read(lake) == [("a", "late"), ("b", "early")]
    assert events_table(ibis.duckdb.connect(), lake).count().to_pyarrow().as_py() == 2
    record = json.loads((tmp_path / "_manifest" / "overlaps.json").read_text())
    assert record["date=2026-03-01"]["overlap"] is True


def test_a_stale_or_unreadable_overlap_record_is_never_trusted(tmp_path: Path) -> None:
    lake = EventLake(tmp_path)
    lake.append(rows(["a"], ingested=5, item="late"), prefix="api")
    lake.append(rows(["a"], ingested=2, item="early"), prefix="api")
    record = tmp_path / "_manifest" / "overlaps.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text('{"date=2026-03-01": {"files": [], "overlap": false}}')
    assert read(lake) == [("a", "early")]
    record.write_text("not json")
    assert read(lake) == [("a", "early")]


def test_an_empty_lake_reads_as_no_rows_with_the_lake_columns(tmp_path: Path) -> None:
    lake = EventLake(tmp_path / "nothing-here")

    relation = lake.events_relation(duckdb.connect())
    table = events_table(ibis.duckdb.connect(), lake)

    assert relation.columns == LAKE_SCHEMA.names
    assert relation.fetchall() == []
    assert table.schema().names == tuple(LAKE_SCHEMA.names)
    assert table.count().execute() == 0
    assert lake.stats().files == 0


def test_compact_merges_each_day_keeps_every_event_and_drops_stored_copies(
    tmp_path: Path,
) -> None:
    lake = EventLake(tmp_path)
    lake.append(rows(["a", "b"], ingested=5, item="late"), prefix="api")
    lake.append(rows(["b", "c"], ingested=2, item="early"), prefix="api")
    lake.append(rows(["d"], ingested=3, day=2), prefix="api")
    before = read(lake)

    result = lake.compact()

    assert result.partitions == 2
    assert (result.files_before, result.files_after) == (3, 2)
    assert (result.rows, result.duplicates_removed) == (4, 1)
    assert read(lake) == before == [("a", "late"), ("b", "early"), ("c", "early"), ("d", "i3")]
    assert stored(lake) == ["a", "b", "c", "d"]
    assert [p.name.split("-")[0] for p in lake.files()] == ["compact", "api"]
    assert all(pq.read_schema(p).equals(LAKE_SCHEMA) for p in lake.files())


def test_compact_of_selected_days_leaves_the_others(tmp_path: Path) -> None:
    lake = EventLake(tmp_path)
    for i in range(2):
        lake.append(rows([f"x{i}"], ingested=i, day=1), prefix="api")
        lake.append(rows([f"y{i}"], ingested=i, day=2), prefix="api")

    result = lake.compact(partitions=[date(2026, 3, 2)])

    assert (result.partitions, result.files_before, result.files_after) == (1, 2, 1)
    assert len(lake.files([date(2026, 3, 1)])) == 2


def test_compact_leaves_the_files_of_an_unfinished_bulk_ingest_alone(tmp_path: Path) -> None:
    lake = EventLake(tmp_path)
    lake.append(rows(["a"], ingested=1), prefix="api")
    lake.append(rows(["b"], ingested=2), prefix="api")
    partition = lake.partition_dir(date(2026, 3, 1))
    pq.write_table(rows(["a", "c"], ingested=0), partition / "part-0123abcd-0.parquet")

    result = lake.compact()

    assert (result.files_before, result.files_after) == (3, 2)
    assert (partition / "part-0123abcd-0.parquet").exists()
    assert lake.stats().uncommitted_files == 1
    assert stored(lake) == ["a", "a", "b", "c"]
    assert read(lake) == [("a", "i0"), ("b", "i2"), ("c", "i0")]

    lake.ingested_dir.mkdir(parents=True)
    (lake.ingested_dir / "0123abcd.json").write_text("{}")
    lake.compact()

    assert stored(lake) == ["a", "b", "c"]
    assert read(lake) == [("a", "i0"), ("b", "i2"), ("c", "i0")]


def test_a_compaction_interrupted_before_deleting_loses_nothing_and_the_next_one_cleans(
    tmp_path: Path,
) -> None:
    lake = EventLake(tmp_path)
    lake.append(rows(["a", "b"], ingested=1), prefix="api")
    lake.append(rows(["b", "c"], ingested=2), prefix="api")
    partition = lake.partition_dir(date(2026, 3, 1))
    # What a crash right after the rename leaves: the merged file next to the merged ones.
    merged = pa.concat_tables([rows(["a", "b"], ingested=1), rows(["c"], ingested=2)])
    pq.write_table(merged, partition / "compact-crashed.parquet")

    assert read(lake) == [("a", "i1"), ("b", "i1"), ("c", "i2")]
    result = lake.compact()

    assert result.duplicates_removed == 4
    assert stored(lake) == ["a", "b", "c"]
    assert read(lake) == [("a", "i1"), ("b", "i1"), ("c", "i2")]


def test_stats_count_partitions_files_stored_rows_and_bytes(tmp_path: Path) -> None:
    lake = EventLake(tmp_path)
    lake.append(rows(["a", "b"], ingested=1), prefix="api")
    lake.append(rows(["b"], ingested=2, day=2), prefix="api")

    stats = lake.stats()

    assert (stats.partitions, stats.files, stats.rows) == (2, 2, 3)
    assert stats.bytes == sum(p.stat().st_size for p in lake.files())


_appends = st.lists(
    st.lists(
        st.tuples(st.sampled_from("abcdefgh"), st.integers(1, 3), st.sampled_from("xyz")),
        min_size=1,
        max_size=6,
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(appends=_appends)
def test_any_appends_then_compact_read_as_the_first_ingested_copy_of_each_event_and_day(
    tmp_path_factory: Any, appends: list[list[tuple[str, int, str]]]
) -> None:
    lake = EventLake(tmp_path_factory.mktemp("lake"))
    first: dict[tuple[str, int], tuple[str, str]] = {}
    for n, batch in enumerate(appends):
        unique = {event_id: (day, item) for event_id, day, item in reversed(batch)}
        tables = [
            rows([event_id], ingested=n, day=day, item=item)
            for event_id, (day, item) in sorted(unique.items())
        ]
        lake.append(pa.concat_tables(tables), prefix="api")
        for event_id, (day, item) in unique.items():
            first.setdefault((event_id, day), (event_id, item))
    expected = sorted(first.values())

    assert read(lake) == expected
    lake.compact()
    assert read(lake) == expected
    assert stored(lake) == sorted(event_id for event_id, _ in first)
    lake.compact()
    assert read(lake) == expected
