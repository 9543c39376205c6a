"""Where a bulk ingest puts things before it publishes them: the staged Parquet files per UTC
day, the dead letter's temporary file, and the hashes of accepted ids (to find repeats)."""

from __future__ import annotations

import csv
import io
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memberwise.events.schemas import LAKE_SCHEMA
from memberwise.events.timeline import busy
from memberwise.kit.lake import (
    PARQUET_OPTIONS,
    ROW_GROUP_ROWS,
    day_of,
    fsync_dir,
    fsync_file,
    partition_name,
)

#: Accepted-id hashes held in memory (8 bytes each) before they move to a DuckDB table.
HASH_MEMORY_ROWS = 32_000_000
#: Good rows buffered across all days before the biggest buffers are written out.
_BUFFER_ROWS = 4 * ROW_GROUP_ROWS
#: Staged files open at once; past this the least recently used one is finished.
_MAX_OPEN = 128
_DEADLETTER_HEADER = ("row", "code", "field", "message", "raw")


class DeadLetter:
    """The refused rows of one file as CSV, written to a dot file and renamed when complete."""

    def __init__(self, directory: Path, name: str) -> None:
        self.final = directory / name
        self.tmp = directory / f".tmp-{name}"
        self.file: io.TextIOWrapper | None = None
        self.writer: Any = None
        self.rows = 0

    def reset(self) -> None:
        self.discard()
        self.rows = 0

    def write(self, rows: list[tuple[int, str, str, str, str]]) -> None:
        if not rows:
            return
        if self.file is None:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115
            self.writer = csv.writer(self.file)
            self.writer.writerow(_DEADLETTER_HEADER)
        self.writer.writerows(rows)
        self.rows += len(rows)

    def commit(self) -> Path | None:
        """Make the file durable under its final name; None when no row was refused."""
        if self.file is None:
            return None
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.file = None
        os.replace(self.tmp, self.final)
        fsync_dir(self.final.parent)
        return self.final

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.tmp.unlink(missing_ok=True)


class IdHashes:
    """The 64-bit hashes of every accepted event id of a file, to tell whether any id repeats.

    Each batch's hashes arrive sorted (sorted by the worker that validated it); they stay in
    memory up to HASH_MEMORY_ROWS and then move to a DuckDB table, which spills to disk, so a
    file of any size fits. At the end a merge of the sorted runs (or a DuckDB aggregate) finds
    the repeated hashes.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.runs: list[np.ndarray[Any, Any]] = []
        self.held = 0
        self.spilled = False

    def add(self, run: np.ndarray[Any, Any]) -> None:
        if self.spilled:
            self._insert(run)
            return
        self.runs.append(run)
        self.held += len(run)
        if self.held > HASH_MEMORY_ROWS:
            for held in self.runs:
                self._insert(held)
            self.runs, self.held, self.spilled = [], 0, True

    def _insert(self, run: np.ndarray[Any, Any]) -> None:
        self.con.register("batch_hashes", pa.table({"h": run}))
        self.con.execute("INSERT INTO ids SELECT h FROM batch_hashes")
        self.con.unregister("batch_hashes")

    def repeated(self) -> pa.Array:
        """Hashes seen more than once (a repeated id, or - rarely - a hash collision)."""
        if self.spilled:
            self.con.execute(f"SET threads = {os.cpu_count() or 1}")  # the workers are done
            sql = "SELECT h FROM ids GROUP BY h HAVING count(*) > 1"
            return self.con.sql(sql).to_arrow_table().column("h").combine_chunks()
        if not self.runs:
            return pa.array([], pa.uint64())
        merged = np.concatenate(self.runs)
        merged.sort(kind="stable")  # a merge of the sorted runs
        repeated = merged[1:][merged[1:] == merged[:-1]]
        return pa.array(np.unique(repeated))


def split_by_day(good: pa.Table, days: pa.ChunkedArray) -> Iterator[tuple[int, pa.Table]]:
    """The rows of each UTC day, in file order; zero-copy slices when the batch is sorted by
    time (the usual export), a stable sort otherwise."""
    low, high = pc.min_max(days).values()
    if low == high:
        yield low.as_py(), good
        return
    flat = days.combine_chunks()
    ordered = pc.all(pc.less_equal(flat.slice(0, len(flat) - 1), flat.slice(1))).as_py()
    if not ordered:
        order = pc.sort_indices(flat)
        good = good.take(order)
        flat = flat.take(order)
    counts = pc.value_counts(flat)
    offset = 0
    for day, count in zip(
        counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
    ):
        yield day, good.slice(offset, count)
        offset += count


class PartitionWriter:
    """Good rows buffered per UTC day and written as row groups to staged files by background
    threads, so encoding overlaps reading and validating.

    Encoding and compressing Parquet is the heaviest step after validation, so it runs on
    ``threads`` writers (pyarrow releases the GIL while it encodes): a day always goes to the
    same writer (``day % threads``), whose queue is first in, first out, so each day's file
    gets its rows in file order, and consecutive days (a time-ordered file) go to different
    writers.
    """

    def __init__(self, directory: Path, threads: int = 1) -> None:
        self.directory = directory
        self.buffers: dict[int, list[pa.Table]] = {}
        self.buffered: dict[int, int] = {}
        self.total = 0
        self.threads = max(1, threads)
        # Per writer thread: its open files, least recently used first.
        self.open: list[dict[int, pq.ParquetWriter]] = [{} for _ in range(self.threads)]
        self.files: dict[int, list[Path]] = {}
        self.executors = [
            ThreadPoolExecutor(1, thread_name_prefix=f"stage-writer-{n}")
            for n in range(self.threads)
        ]
        self.pending: deque[Future[None]] = deque()

    def add_batch(self, parts: Iterable[tuple[int, pa.Table]]) -> None:
        """Add one batch's rows per day; then write out at once every buffered day that this
        batch did not touch. In a time-ordered file (the usual export) such a day is complete,
        so it is encoded while the pass goes on instead of at its end; a file in random order
        touches every day in every batch and stays buffered up to full row groups."""
        touched = set()
        for day, table in parts:
            touched.add(day)
            self.add(day, table)
        for day in [d for d in self.buffers if d not in touched]:
            self._flush(day)

    def add(self, day: int, table: pa.Table) -> None:
        self.buffers.setdefault(day, []).append(table)
        self.buffered[day] = self.buffered.get(day, 0) + table.num_rows
        self.total += table.num_rows
        if self.buffered[day] >= ROW_GROUP_ROWS:
            self._flush(day)
        while self.total > _BUFFER_ROWS:
            self._flush(max(self.buffered, key=self.buffered.__getitem__))

    def _flush(self, day: int) -> None:
        pieces = self.buffers.pop(day)
        self.total -= self.buffered.pop(day)
        slot = day % self.threads
        self.pending.append(self.executors[slot].submit(self._write, slot, day, pieces))
        while len(self.pending) > 4 * self.threads:
            self.pending.popleft().result()

    def _write(self, slot: int, day: int, pieces: list[pa.Table]) -> None:
        """Append ``pieces`` to the day's staged file (in writer thread ``slot``, the only one
        that touches this day)."""
        open_files = self.open[slot]
        writer = open_files.pop(day, None)
        if writer is None:
            if len(open_files) >= max(1, _MAX_OPEN // self.threads):
                oldest = next(iter(open_files))
                open_files.pop(oldest).close()
            paths = self.files.setdefault(day, [])
            directory = self.directory / partition_name(day_of(day))
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"{len(paths)}.parquet"
            paths.append(path)
            writer = pq.ParquetWriter(path, LAKE_SCHEMA, **PARQUET_OPTIONS)
        open_files[day] = writer  # re-inserted last: the dict order is least recently used first
        with busy("encode"):
            writer.write_table(pa.concat_tables(pieces), row_group_size=ROW_GROUP_ROWS)

    def close(self) -> dict[int, list[Path]]:
        """Write what is buffered, finish every file; returns the staged files per day."""
        for day in list(self.buffers):
            self._flush(day)
        while self.pending:
            self.pending.popleft().result()
        closing = [ex.submit(self._close_all, n) for n, ex in enumerate(self.executors)]
        for future in closing:
            future.result()
        # Flushed to disk now, several at once (waits on the disk that threads overlap), so
        # publishing them later only renames.
        with ThreadPoolExecutor(8, thread_name_prefix="stage-fsync") as pool:
            list(pool.map(fsync_file, [path for paths in self.files.values() for path in paths]))
        return self.files

    def _close_all(self, slot: int) -> None:
        """Finish this writer's files (in parallel with the other writers)."""
        open_files = self.open[slot]
        while open_files:
            open_files.popitem()[1].close()

    def abort(self) -> None:
        """Stop the writer threads (after close, or on an error)."""
        for executor in self.executors:
            executor.shutdown(wait=True, cancel_futures=True)
        for open_files in self.open:
            for writer in open_files.values():
                writer.close()
            open_files.clear()
