"""The event lake: append-only Parquet files partitioned by the UTC day of ``ts``.

Layout under ``root``::

    events/date=YYYY-MM-DD/<name>.parquet   visible data, every file with LAKE_SCHEMA
    events/date=YYYY-MM-DD/.tmp-*.parquet   a write in progress (or a crash's leftover): ignored
    _staging/<fp>/                          a bulk ingest's files before they are published
    _manifest/ingested/<fp>.json            a bulk ingest that finished (its files are committed)
    _manifest/pending/<fp>.json             a bulk ingest that started and has not finished

A file becomes visible only by an atomic rename after its bytes are fsynced, and the directory is
fsynced after the rename, so a crash never shows a partial file and a returned write is durable.
The same ``event_id`` may be stored more than once (client retries, a re-run bulk file,
compaction in progress); every reader here returns one row per ``event_id`` and day: the copy
ingested first, ties broken by the row's values so the answer never depends on file names.

Three facts keep reading cheap. No single file holds an ``event_id`` twice (the API claims a
receipt per id before writing, bulk ingest drops repeats within its source file, compaction
writes one copy), so a day stored in one file needs no deduplication at all. Copies of an
event carry its time, so they land in the same day: the readers deduplicate each day on its
own, never the whole lake at once. (A whole-lake ``row_number() OVER (PARTITION BY event_id)``
took 168 s and 20 GiB for 100 M events on 2 cores; reading a compacted lake takes a tenth of
that. An id a client reuses for an event on another day is kept on both days; the API still
refuses it as a duplicate through its receipts.) And the files of a day usually do not overlap
at all: ``memberwise ingest`` of N source files leaves N files in every day they cover (40 a
day for the 200,000-member demo), each with its own events. So before deduplicating a
multi-file day the readers check whether any id occurs twice in it, one hash aggregation of
the ids of all unchecked days at once, and record the answer in ``_manifest/overlaps.json``
keyed by the day's files (name, size, mtime): a day whose files are disjoint is read as plainly
as a compacted one, and the check runs again only when that day's files change.

Why a check at read time rather than compaction inside ``ingest`` (measured on the
200,000-member demo, 20 M events, 2 shared cores): compacting every touched day costs more than
the ingest itself (37 s for a 60 s ingest on a quiet machine), which issue 20's ingest target
cannot afford; the id check costs about one plain scan of ``event_id`` (a few seconds, once per
change), while the per-day ``row_number()`` over 40 files made every pass over the events about
twenty times slower than over the compacted lake. ``memberwise lake compact`` is still the way
to remove the copies of a day that does overlap.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memberwise.kit.lake_schema import LAKE_SCHEMA

if TYPE_CHECKING:
    import ibis

EVENTS_DIR = "events"
STAGING_DIR = "_staging"
MANIFEST_DIR = "_manifest"
PARTITION_PREFIX = "date="
#: Bulk ingest names its published files ``part-<fingerprint>-<n>.parquet``.
BULK_FILE = re.compile(r"^part-(?P<fp>[0-9a-f]+)-(?P<n>\d+)\.parquet$")

#: Parquet writer settings for every lake file (measured on 10 M synthetic events, 2 vCPUs):
#: zstd level 1 gives files ~40 % smaller than snappy or lz4 for about the same write CPU;
#: dictionaries only for the columns that are low-cardinality by nature (a dictionary attempt on
#: unique ids costs write time and saves nothing); statistics only on the times readers prune
#: by (``ts``, and ``ingested_at`` for incremental jobs) - min/max of random ids prune nothing.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 1,
    "use_dictionary": ["type", "channel", "region", "category_id", "brand", "merchant_id"],
    "write_statistics": ["ts", "ingested_at"],
}
#: The readers' record of which multi-file days hold an ``event_id`` twice (see the module doc).
OVERLAPS_FILE = "overlaps.json"
#: A temp file older than this is a crash's leftover, which compaction deletes.
STALE_TEMP_SECONDS = 3600
#: Rows per row group in lake files (big enough for fast scans, small enough to buffer).
ROW_GROUP_ROWS = 512 * 1024

_COLUMNS = ", ".join(f'"{name}"' for name in LAKE_SCHEMA.names)
#: Which copy of an ``event_id`` wins: the first ingested, then the smallest values, so two
#: identical copies (or a tie) resolve the same way whichever file they sit in.
_WINNER_ORDER = ", ".join(
    ["ingested_at"] + [f'"{n}" NULLS FIRST' for n in LAKE_SCHEMA.names if n != "ingested_at"]
)
_DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}


@dataclass(frozen=True)
class CompactResult:
    """What one compaction did: partitions merged, files before/after, rows kept, copies removed."""

    partitions: int
    files_before: int
    files_after: int
    rows: int
    duplicates_removed: int


@dataclass(frozen=True)
class LakeStats:
    """Physical size of the lake (rows count every stored copy, duplicates included)."""

    partitions: int
    files: int
    rows: int
    bytes: int
    uncommitted_files: int


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a closed file's bytes to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def partition_name(day: date) -> str:
    """Directory name of a day's partition (``date=YYYY-MM-DD``)."""
    return f"{PARTITION_PREFIX}{day.isoformat()}"


def utc_days(ts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Days since 1970-01-01 (int32) of UTC timestamps in microseconds."""
    micros = pc.cast(ts, pa.int64())
    return pc.cast(pc.floor(pc.divide(micros, 86_400_000_000.0)), pa.int32())


def day_of(days_since_epoch: int) -> date:
    """The date of a day number from :func:`utc_days`."""
    return date.fromordinal(date(1970, 1, 1).toordinal() + days_since_epoch)


def to_lake_table(table: pa.Table) -> pa.Table:
    """``table`` with exactly LAKE_SCHEMA (column order, types, nullability).

    Raises ValueError when a column is missing or a required one holds nulls.
    """
    missing = [n for n in LAKE_SCHEMA.names if n not in table.column_names]
    if missing:
        raise ValueError(f"lake rows lack column(s): {', '.join(missing)}")
    columns = []
    for field in LAKE_SCHEMA:
        column = table.column(field.name)
        if not field.nullable and column.null_count:
            raise ValueError(f"lake column {field.name} must not hold nulls")
        columns.append(column if column.type == field.type else pc.cast(column, field.type))
    return pa.Table.from_arrays(columns, schema=LAKE_SCHEMA)


def lake_days(table: pa.Table) -> Iterator[tuple[date, pa.Table]]:
    """``table``'s rows in lake shape (:func:`to_lake_table`), one part per UTC day of ``ts``,
    in the order the days first appear: what an append writes, one file a day."""
    table = to_lake_table(table)
    days = utc_days(table.column("ts"))
    for day_number in pc.unique(days).to_pylist():
        yield day_of(day_number), table.filter(pc.equal(days, day_number))


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write ``table`` (LAKE_SCHEMA) to ``path`` and fsync it; not atomic by itself."""
    with pq.ParquetWriter(path, LAKE_SCHEMA, **PARQUET_OPTIONS) as writer:
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
    fsync_file(path)


#: A lake's file handle: a local path, or a URI in an object store.
F = TypeVar("F")


def _empty_sql() -> str:
    casts = ", ".join(f'CAST(NULL AS {_DUCKDB_TYPES[f.type]}) AS "{f.name}"' for f in LAKE_SCHEMA)
    return f"SELECT {casts} WHERE false"


def _sql_list(paths: Sequence[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _read_sql(paths: Sequence[Path]) -> str:
    return f"read_parquet({_sql_list(paths)}, hive_partitioning = false)"


def deduplicated_sql(
    plain: Sequence[F], overlapping: Sequence[Sequence[F]], read: Callable[[Sequence[F]], str]
) -> str:
    """DuckDB SQL of the events of a lake's files (LAKE_SCHEMA columns): the ``plain`` files
    as they are, and of each group of ``overlapping`` files (they may share events) one row
    per ``event_id`` (the first ingested wins). ``read`` turns files into a table source."""
    if not plain and not overlapping:
        return _empty_sql()
    parts = [f"SELECT {_COLUMNS} FROM {read(plain)}"] if plain else []
    parts += [
        f"SELECT {_COLUMNS} FROM {read(group)} QUALIFY row_number() OVER "
        f"(PARTITION BY event_id ORDER BY {_WINNER_ORDER}) = 1"
        for group in overlapping
    ]
    return "\nUNION ALL\n".join(f"({part})" for part in parts)


class EventLake:
    """An event lake rooted at a directory (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.events_dir = self.root / EVENTS_DIR
        self.staging_dir = self.root / STAGING_DIR
        self.manifest_dir = self.root / MANIFEST_DIR
        self.ingested_dir = self.manifest_dir / "ingested"
        self.pending_dir = self.manifest_dir / "pending"

    # -- writing ---------------------------------------------------------------------------

    def partition_dir(self, day: date) -> Path:
        """The directory of one day's partition."""
        return self.events_dir / partition_name(day)

    def append(self, table: pa.Table, *, prefix: str) -> list[Path]:
        """Store ``table`` (LAKE_SCHEMA columns), one new file per UTC day touched.

        Each file is written under a dot name, fsynced, renamed to ``<prefix>-<uuid>.parquet``
        and its directory fsynced, so when this returns the rows are durable and a crash
        before that leaves nothing visible. Returns the new files.
        """
        if table.num_rows == 0:
            return []
        written = []
        for day, part in lake_days(table):
            directory = self.partition_dir(day)
            directory.mkdir(parents=True, exist_ok=True)
            name = uuid.uuid4().hex
            tmp = directory / f".tmp-{name}.parquet"
            write_parquet(part, tmp)
            final = directory / f"{prefix}-{name}.parquet"
            os.replace(tmp, final)
            fsync_dir(directory)
            written.append(final)
        return written

    def publish(self, staged: Path, final: Path) -> None:
        """Move a finished staged file into the lake: fsync, atomic rename, fsync the directory.

        Replaces ``final`` if it exists (a re-run of the same bulk file writes the same rows
        under the same name).
        """
        fsync_file(staged)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)
        fsync_dir(final.parent)

    # -- listing ---------------------------------------------------------------------------

    def partitions(self) -> list[date]:
        """Days that have a partition directory, in order."""
        if not self.events_dir.is_dir():
            return []
        days = []
        for entry in self.events_dir.iterdir():
            if entry.is_dir() and entry.name.startswith(PARTITION_PREFIX):
                try:
                    days.append(date.fromisoformat(entry.name[len(PARTITION_PREFIX) :]))
                except ValueError:
                    continue
        return sorted(days)

    def files(self, partitions: Sequence[date] | None = None) -> list[Path]:
        """Visible data files (dot files are writes in progress and never count), sorted."""
        days = self.partitions() if partitions is None else partitions
        found: list[Path] = []
        for day in days:
            directory = self.partition_dir(day)
            if directory.is_dir():
                found.extend(
                    p
                    for p in directory.iterdir()
                    if p.suffix == ".parquet" and not p.name.startswith(".")
                )
        return sorted(found)

    def data_files(self, partitions: Sequence[date] | None = None) -> list[str]:
        """The visible data files of the given days as strings DuckDB reads on a connection
        from :meth:`connect` (local paths here, URIs on an object store)."""
        return [str(p) for p in self.files(partitions)]

    def signatures(self) -> list[str]:
        """One line per visible data file (name relative to the root, size, mtime): what
        changes whenever the lake's content may have (for "has anything changed" checks)."""
        lines = []
        for path in self.files():
            stat = path.stat()
            lines.append(f"{path.relative_to(self.root)}|{stat.st_size}|{stat.st_mtime_ns}")
        return lines

    def is_committed(self, path: Path) -> bool:
        """False for a bulk ingest's file whose ingest has not finished (see bulk ingest)."""
        match = BULK_FILE.match(path.name)
        return match is None or (self.ingested_dir / f"{match['fp']}.json").exists()

    # -- reading ---------------------------------------------------------------------------

    def files_by_day(self) -> list[list[Path]]:
        """The visible files grouped by day partition (days without files left out)."""
        groups = [self.files([day]) for day in self.partitions()]
        return [group for group in groups if group]

    def read_plan(self) -> tuple[list[Path], list[list[Path]]]:
        """How to read the deduplicated events now: (files read as they are, groups of files
        to deduplicate together).

        Single-file days and multi-file days whose files share no ``event_id`` are read as
        they are; every other day is one group. Multi-file days not checked before (or whose
        files changed since) are checked now, all in one query, and the answers recorded.
        """
        groups = self.files_by_day()
        plain = [group[0] for group in groups if len(group) == 1]
        multi = [group for group in groups if len(group) > 1]
        if not multi:
            return plain, []
        known = self._read_overlaps()
        answers: dict[str, bool] = {}
        unchecked = []
        for group in multi:
            day, signature = group[0].parent.name, _signature(group)
            entry = known.get(day)
            if entry is not None and entry.get("files") == signature:
                answers[day] = bool(entry["overlap"])
            else:
                unchecked.append(group)
        if unchecked:
            found = _overlapping_days(unchecked)
            for group in unchecked:
                day = group[0].parent.name
                answers[day] = day in found
                known[day] = {"files": _signature(group), "overlap": day in found}
            self._write_overlaps(known)
        overlapping = []
        for group in multi:
            if answers[group[0].parent.name]:
                overlapping.append(group)
            else:
                plain.extend(group)
        return sorted(plain), overlapping

    def _read_overlaps(self) -> dict[str, Any]:
        path = self.manifest_dir / OVERLAPS_FILE
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return recorded if isinstance(recorded, dict) else {}

    def _write_overlaps(self, known: dict[str, Any]) -> None:
        """Record the checks (only for days that still exist); a read-only lake just checks
        again next time."""
        live = {partition_name(day) for day in self.partitions()}
        kept = {day: entry for day, entry in sorted(known.items()) if day in live}
        with contextlib.suppress(OSError):
            atomic_write_bytes(self.manifest_dir / OVERLAPS_FILE, json.dumps(kept).encode("utf-8"))

    def events_sql(self) -> str:
        """DuckDB SQL for the deduplicated events (LAKE_SCHEMA columns), over today's files.

        The file list is taken now: files added later are not seen by this SQL text.
        """
        plain, overlapping = self.read_plan()
        return deduplicated_sql(plain, overlapping, _read_sql)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A new DuckDB connection in UTC that can read this lake's files (an object-store
        lake registers its file system on it): run :meth:`events_sql` on it."""
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        self.register(con)
        return con

    def register(self, con: duckdb.DuckDBPyConnection) -> None:
        """Let ``con`` read this lake's files (nothing to do for local files)."""
        return None

    def events_relation(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyRelation:
        """The deduplicated events as a DuckDB relation (set the connection's TimeZone to UTC
        before comparing ``ts`` with naive literals)."""
        return con.sql(self.events_sql())

    def events_table(self, con: ibis.BaseBackend) -> ibis.Table:
        """The deduplicated events as an Ibis table, read with the backend's ``read_parquet``."""
        return events_table(con, self)

    def latest_ts(self) -> datetime | None:
        """Time of the latest stored event, from the newest day's Parquet statistics (no scan).

        Lake files carry min/max statistics on ``ts``; a file without them is read instead.
        """
        for day in reversed(self.partitions()):
            latest: datetime | None = None
            for path in self.files([day]):
                metadata = pq.ParquetFile(path).metadata
                column = metadata.schema.names.index("ts")
                for group in range(metadata.num_row_groups):
                    stats = metadata.row_group(group).column(column).statistics
                    if stats is None or not stats.has_min_max:
                        values = pq.read_table(path, columns=["ts"]).column("ts")
                        found = pc.max(values).as_py()
                    else:
                        found = stats.max
                    if found is not None:
                        found = found if found.tzinfo else found.replace(tzinfo=UTC)
                        latest = found if latest is None else max(latest, found)
            if latest is not None:
                return latest
        return None

    # -- maintenance -----------------------------------------------------------------------

    def compact(self, *, partitions: Sequence[date] | None = None) -> CompactResult:
        """Merge each partition's committed files into one, keeping the first-ingested copy of
        every ``event_id`` in it.

        The merged file is written, fsynced and renamed before the files it replaces are
        deleted (only those listed at the start, so concurrent appends are untouched), and the
        files of a bulk ingest that has not committed are left alone. Temp files older than an
        hour (a crashed writer's leftovers) are deleted. A crash leaves at worst
        both old and new files, which the readers hide and the next compaction removes.
        Compactions are serialized by a lock file. A duplicate ``event_id`` whose copies carry
        different ``ts`` days lives in two partitions; it stays in both (see the module docstring).
        """
        days = self.partitions() if partitions is None else sorted(partitions)
        totals = [0, 0, 0, 0, 0]
        with self._compact_lock():
            for day in days:
                before, after, rows, removed = self._compact_partition(day)
                totals[0] += 1 if before else 0
                totals[1] += before
                totals[2] += after
                totals[3] += rows
                totals[4] += removed
        return CompactResult(*totals)

    def _compact_partition(self, day: date) -> tuple[int, int, int, int]:
        directory = self.partition_dir(day)
        self._remove_stale_temp_files(directory)
        all_files = self.files([day])
        merge = [p for p in all_files if self.is_committed(p)]
        kept = len(all_files) - len(merge)
        stored = sum(pq.ParquetFile(p).metadata.num_rows for p in merge)
        if len(merge) <= 1:
            return len(all_files), len(all_files), stored, 0
        name = uuid.uuid4().hex
        tmp = directory / f".tmp-{name}.parquet"
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            sql = (
                f"SELECT {_COLUMNS} FROM read_parquet({_sql_list(merge)}, "
                "hive_partitioning = false) QUALIFY row_number() OVER "
                f"(PARTITION BY event_id ORDER BY {_WINNER_ORDER}) = 1 ORDER BY ts, event_id"
            )
            rows = 0
            with pq.ParquetWriter(tmp, LAKE_SCHEMA, **PARQUET_OPTIONS) as writer:
                for batch in con.sql(sql).to_arrow_reader(ROW_GROUP_ROWS):
                    table = to_lake_table(pa.Table.from_batches([batch]))
                    writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
                    rows += table.num_rows
        finally:
            con.close()
        fsync_file(tmp)
        os.replace(tmp, directory / f"compact-{name}.parquet")
        fsync_dir(directory)
        for path in merge:
            path.unlink(missing_ok=True)
        fsync_dir(directory)
        return len(all_files), kept + 1, rows, stored - rows

    @staticmethod
    def _remove_stale_temp_files(directory: Path) -> None:
        """Delete temp files a crashed writer left behind (old enough not to be in progress)."""
        if not directory.is_dir():
            return
        cutoff = time.time() - STALE_TEMP_SECONDS
        for path in directory.glob(".tmp-*"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    @contextmanager
    def _compact_lock(self) -> Iterator[None]:
        self.manifest_dir.mkdir(parents=True, exist_ok=True)
        with open(self.manifest_dir / "compact.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def remove_where(self, where: str, params: Sequence[Any] = ()) -> RemoveResult:
        """Rewrite every file holding rows that match ``where`` (DuckDB SQL over LAKE_SCHEMA
        columns, ``?`` parameters) without them; used to forget a member."""
        return _remove_local(self, where, params)

    def drop(self, days: Sequence[date]) -> RemoveResult:
        """Delete whole day partitions (retention)."""
        return _drop_local(self, days)

    def scrub_beside(self, member_ids: Sequence[str]) -> int:
        """Rewrite the data files kept beside the lake on its store (builds, models) without
        the rows of ``member_ids``; the files rewritten. Nothing here: beside a local lake is
        the home directory, which erasure walks itself."""
        return 0

    def collect_garbage(self, *, older_than_seconds: float = STALE_TEMP_SECONDS) -> list[str]:
        """Delete writes that never finished: dot-named temp files older than
        ``older_than_seconds`` (a local lake renames, so nothing else is ever unlisted)."""
        cutoff = time.time() - older_than_seconds
        deleted = []
        for day in self.partitions():
            for path in sorted(self.partition_dir(day).glob(".tmp-*")):
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        deleted.append(str(path))
        return deleted

    def stats(self) -> LakeStats:
        """Partitions, visible files, stored rows (copies included), bytes, uncommitted files."""
        files = self.files()
        return LakeStats(
            partitions=len({p.parent for p in files}),
            files=len(files),
            rows=sum(pq.ParquetFile(p).metadata.num_rows for p in files),
            bytes=sum(p.stat().st_size for p in files),
            uncommitted_files=sum(not self.is_committed(p) for p in files),
        )


def events_table(con: ibis.BaseBackend, lake: EventLake) -> ibis.Table:
    """The lake's deduplicated events as an Ibis table on ``con`` (any backend with
    ``read_parquet``): one row per ``event_id`` and day, the first-ingested copy."""
    import ibis

    plain, overlapping = lake.read_plan()
    if not plain and not overlapping:
        return ibis.memtable(LAKE_SCHEMA.empty_table())

    from memberwise.kit.warehouse import read_parquet

    def read(paths: list[Path]) -> ibis.Table:
        return read_parquet(con, paths, expand=False).select(*LAKE_SCHEMA.names)

    parts = [read(plain)] if plain else []
    for group in overlapping:
        raw = read(group)
        order = [raw.ingested_at] + [
            raw[name].asc(nulls_first=True) for name in LAKE_SCHEMA.names if name != "ingested_at"
        ]
        rank = ibis.row_number().over(group_by="event_id", order_by=order)
        ranked = raw.mutate(_rank=rank)
        parts.append(ranked.filter(ranked._rank == 0).select(*LAKE_SCHEMA.names))
    return parts[0] if len(parts) == 1 else ibis.union(*parts)


@dataclass(frozen=True)
class RemoveResult:
    """What :func:`remove_rows` did: files rewritten and rows removed from them."""

    files_rewritten: int
    rows_removed: int


def remove_rows(lake: EventLake, where: str, params: Sequence[Any] = ()) -> RemoveResult:
    """Remove the lake's rows matching ``where`` (:meth:`EventLake.remove_where`: in place on
    a local lake, by manifest and garbage collection on an object store)."""
    return lake.remove_where(where, params)


def drop_days(lake: EventLake, days: Sequence[date]) -> RemoveResult:
    """Delete the lake's day partitions ``days`` (:meth:`EventLake.drop`)."""
    return lake.drop(days)


def _remove_local(lake: EventLake, where: str, params: Sequence[Any] = ()) -> RemoveResult:
    """Rewrite every visible lake file holding rows that match ``where`` (DuckDB SQL over the
    LAKE_SCHEMA columns, with ``?`` parameters) without those rows; used to forget a member.

    Crash-safe like every lake write: each file is rewritten under a dot name, fsynced and
    renamed over the original (readers see the old file or the new one, never a mix), then the
    directory is fsynced. A file left with no rows is deleted. Rewrites are serialized with
    compaction by the same lock, so the two never replace the same file. A crash part-way
    leaves some files rewritten and the others untouched: running it again finishes the job.
    """
    rewritten = removed = 0
    with lake._compact_lock():
        files = lake.files()
        if not files:
            return RemoveResult(0, 0)
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            hits = con.execute(
                f"SELECT filename, count(*) FROM read_parquet({_sql_list(files)}, "
                f"hive_partitioning = false, filename = true) WHERE {where} GROUP BY filename",
                list(params),
            ).fetchall()
            for name, count in sorted(hits):
                path = Path(name)
                tmp = path.with_name(f".tmp-{uuid.uuid4().hex}.parquet")
                kept = con.sql(
                    f"SELECT {_COLUMNS} FROM {_read_sql([path])} WHERE NOT ({where})",
                    params=list(params),
                ).to_arrow_table()
                assert kept is not None
                if kept.num_rows:
                    write_parquet(to_lake_table(kept), tmp)
                    os.replace(tmp, path)
                else:
                    path.unlink()
                fsync_dir(path.parent)
                rewritten += 1
                removed += int(count)
        finally:
            con.close()
    return RemoveResult(rewritten, removed)


def _drop_local(lake: EventLake, days: Sequence[date]) -> RemoveResult:
    """Delete the day partitions ``days`` (retention); returns files deleted and rows in them.

    Serialized with compaction and :func:`remove_rows` by their lock. Each file's unlink is
    durable once its directory is fsynced; a crash part-way leaves the day partly deleted, and
    running it again finishes it (readers then simply see fewer old events).
    """
    files = rows = 0
    with lake._compact_lock():
        for day in days:
            directory = lake.partition_dir(day)
            if not directory.is_dir():
                continue
            for path in sorted(directory.iterdir()):
                if path.suffix == ".parquet" and not path.name.startswith("."):
                    rows += pq.ParquetFile(path).metadata.num_rows
                    files += 1
                path.unlink()
            fsync_dir(directory)
            directory.rmdir()
            fsync_dir(directory.parent)
    return RemoveResult(files, rows)


def _signature(files: Sequence[Path]) -> list[list[Any]]:
    """What identifies a day's files for the overlap record: name, size and mtime of each."""
    signature = []
    for path in files:
        stat = path.stat()
        signature.append([path.name, stat.st_size, stat.st_mtime_ns])
    return signature


def _overlapping_days(groups: Sequence[Sequence[Path]]) -> set[str]:
    """Partition names (``date=...``) of the groups in which some ``event_id`` occurs twice.

    One aggregation of 64-bit id hashes per day over all the groups' files: cheaper than
    grouping the strings, and a hash collision only marks a day for deduplication it did not
    need.
    """
    scans = " UNION ALL ".join(
        f"SELECT {index} AS day, hash(event_id) AS h FROM {_read_sql(group)}"
        for index, group in enumerate(groups)
    )
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = false")
        found = con.sql(
            f"SELECT DISTINCT day FROM ({scans}) GROUP BY day, h HAVING count(*) > 1"
        ).fetchall()
    finally:
        con.close()
    return {groups[index][0].parent.name for (index,) in found}
