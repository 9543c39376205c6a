"""Bulk ingest: event files in, lake out, bad rows to a dead-letter file, exactly once.

For each source file (Parquet, CSV with a header, JSON Lines, or Taobao UserBehavior CSV):

1. Its fingerprint (resolved path, size, mtime, format) names everything the run writes. If
   ``_manifest/ingested/<fp>.json`` exists the file was fully ingested before and is skipped,
   so running the same ingest again changes nothing.
2. Batches are read in file order and checked by the contract's rules compiled to one DuckDB
   SELECT (:mod:`memberwise.events.validation_sql`), several batches at a time; good rows get
   the file's ``ingested_at`` and are written, per UTC day, to ``_staging/<fp>/``, bad rows to
   the dead letter's temporary file, with their row number and reason.
   While the batches are read, the members of the good rows are registered by a thread of
   their own (``on_members``, idempotent, set-based), which the pass waits for at its end.
3. The staged files are published into the lake as ``events/date=D/part-<fp>-<n>.parquet``
   (fsync, atomic rename, directory fsync), replacing files of the same name; then the dead
   letter is renamed into place; and only then the manifest is written.

Members are registered before their events are published, so a crash or a failed file may
leave members with no events yet: that is harmless (a member who signed up and has not acted
yet looks the same, and every reader of members tolerates it), and the re-run that publishes
the events registers nobody twice. For the same reason a member named only by rows that turn
out to repeat an earlier row's ``event_id`` (a conflicting copy, dropped as a duplicate) is
registered too: the file named them in a valid row.

A crash (even ``kill -9``) at any moment therefore leaves either nothing visible, or some of
this file's published files, which a re-run rewrites under the same names with the same rows:
the file's ``ingested_at`` and ``now`` are recorded in ``_manifest/pending/<fp>.json`` at the
start and reused, so a re-run is byte-for-byte the same decision. Compaction leaves the files of
an unfinished ingest alone, so after the re-run each event is stored once.

Within one file, a repeated ``event_id`` keeps its first good row; the others count as
duplicates. Repeats are found from a 64-bit hash of every accepted id (sorted runs in memory,
or a DuckDB table that spills to disk for very large files), and only a file that has some is
read a second time to drop them in file order. Across files and runs, copies of an event are
hidden by the lake's reader and removed by compaction.

Speed: Parquet is read and validated by DuckDB in slices of whole row groups (one DuckDB thread
per slice, several slices at once), and the good rows are encoded by pyarrow's Parquet writer
in a background thread, so decoding, checking and encoding overlap; CSV and Taobao files are
parsed by pyarrow's streaming CSV reader, then checked the same way; JSON Lines are split into
blocks of lines and parsed and checked by DuckDB in the same query, and only the lines that
fail to parse are parsed again (in Python) for the dead letter's reason. Good rows are encoded
by as many writer threads as there are validating workers (one per UTC day at a time). Members
are registered set-based while the file is read (``on_members`` gets up to MEMBER_CHUNK
distinct new ids at once, sorted), so the store's work overlaps DuckDB's.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from memberwise.events.schemas import EVENT_FIELDS, LAKE_SCHEMA, RejectCode
from memberwise.events.sources import (
    PARSED_JSON_SCHEMA,
    Batch,
    Format,
    JsonLines,
    Malformed,
    ParquetSlice,
    Source,
    SourceError,
    detect_format,
    malformed_json_message,
    open_source,
)
from memberwise.events.staging import DeadLetter, IdHashes, PartitionWriter, split_by_day
from memberwise.events.timeline import busy, mark
from memberwise.events.validation_sql import (
    INT_FIELDS,
    JSON_KEY_COUNT,
    ROW,
    SchemaMismatch,
    ValidationPlan,
    build_validation,
)
from memberwise.kit.lake import (
    BULK_FILE,
    EventLake,
    atomic_write_bytes,
    day_of,
    fsync_dir,
    utc_days,
)

BulkFormat = Literal["auto", "csv", "jsonl", "parquet", "taobao"]
MembersCallback = Callable[[list[str]], None]
#: Environment variable naming a stage at which the process kills itself (crash tests only).
CRASH_ENV = "MEMBERWISE_TEST_CRASH_AT"
#: Member ids handed to ``on_members`` per call (at most; the last call of a file gets the rest).
MEMBER_CHUNK = 50_000


@dataclass(frozen=True)
class Progress:
    """Where an ingest is: file ``index`` (1-based) of ``files``, rows read from it so far and
    the fraction of it done (by rows for Parquet, by bytes for text files)."""

    path: Path
    index: int
    files: int
    rows: int
    fraction: float


ProgressCallback = Callable[[Progress], None]


@dataclass
class FileResult:
    """What happened to one source file."""

    path: Path
    format: str
    fingerprint: str
    status: Literal["ingested", "skipped", "failed"]
    rows_read: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    files_written: int = 0
    deadletter: Path | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "rows_read": self.rows_read,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "files_written": self.files_written,
            "deadletter": str(self.deadletter) if self.deadletter else None,
            "error": self.error,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class BulkResult:
    """Per file and in total: rows read, accepted, duplicates, rejected; skipped and failed
    files; dead-letter paths; seconds."""

    files: list[FileResult]
    seconds: float

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def accepted(self) -> int:
        return sum(f.accepted for f in self.files)

    @property
    def duplicates(self) -> int:
        return sum(f.duplicates for f in self.files)

    @property
    def rejected(self) -> int:
        return sum(f.rejected for f in self.files)

    @property
    def skipped_files(self) -> list[Path]:
        return [f.path for f in self.files if f.status == "skipped"]

    @property
    def failed_files(self) -> list[tuple[Path, str]]:
        return [(f.path, f.error or "failed") for f in self.files if f.status == "failed"]

    @property
    def deadletter_paths(self) -> list[Path]:
        return [f.deadletter for f in self.files if f.deadletter and f.status == "ingested"]

    @property
    def ok(self) -> bool:
        """True when every file was ingested or skipped (bad rows are not a failure)."""
        return not self.failed_files

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": [f.to_dict() for f in self.files],
            "rows_read": self.rows_read,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "skipped_files": [str(p) for p in self.skipped_files],
            "failed_files": [{"path": str(p), "error": e} for p, e in self.failed_files],
            "deadletter_paths": [str(p) for p in self.deadletter_paths],
            "seconds": round(self.seconds, 3),
        }


def crash_point(stage: str) -> None:
    """Die here, as ``kill -9`` would, when the crash tests ask for this stage."""
    if os.environ.get(CRASH_ENV) == stage:
        os._exit(137)


def fingerprint(path: Path, fmt: str) -> str:
    """A short hash of the file's identity and version: resolved path, size, mtime, format."""
    stat = path.stat()
    key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{fmt}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def expand_paths(paths: Sequence[Path], fmt: BulkFormat) -> list[tuple[Path, Format | None]]:
    """Files to ingest with their formats; a directory means its event files, sorted.

    A file whose format cannot be told from its extension (with ``fmt="auto"``) comes with
    None, to be reported as failed.
    """
    found: list[tuple[Path, Format | None]] = []
    for path in paths:
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.is_file() and not child.name.startswith("."):
                    detected = detect_format(child)
                    if detected is not None:
                        found.append((child, detected if fmt == "auto" else fmt))
        else:
            found.append((path, detect_format(path) if fmt == "auto" else fmt))
    return found


def ingest_paths(
    paths: Sequence[Path],
    lake: EventLake,
    *,
    fmt: BulkFormat = "auto",
    deadletter_dir: Path,
    on_members: MembersCallback | None = None,
    progress: ProgressCallback | None = None,
    now: datetime | None = None,
    workers: int | None = None,
) -> BulkResult:
    """Ingest event files into ``lake``; see the module docstring for the guarantees.

    ``now`` fixes the validation clock (events later than ``now + 1 day`` are refused); by
    default the time each file starts. ``ingested_at`` is always the wall clock. A re-run
    after a crash reuses both values recorded when the interrupted run started. ``workers``
    is the number of batches validated at once (default: one per CPU; the DuckDB queries
    validating them are most of the work, the reader and the Parquet writer share the
    cores with them). A file that fails (unreadable, a required column missing, ``on_members``
    raising) is reported in the result and the other files still run.
    """
    started = time.perf_counter()
    clock = _Clock(now)
    files = expand_paths(paths, fmt)
    results = []
    for index, (path, file_fmt) in enumerate(files, start=1):

        def report(rows: int, fraction: float, path: Path = path, index: int = index) -> None:
            if progress is not None:
                progress(Progress(path, index, len(files), rows, fraction))

        results.append(
            _ingest_file(
                path,
                file_fmt,
                lake,
                deadletter_dir=deadletter_dir,
                on_members=on_members,
                report=report,
                clock=clock,
                workers=workers or max(2, os.cpu_count() or 2),
            )
        )
    return BulkResult(files=results, seconds=time.perf_counter() - started)


class _Clock:
    """Strictly increasing ``ingested_at`` values from the wall clock, one per file, so the
    files of one run are ordered (the earlier file's copy of an event wins)."""

    def __init__(self, now: datetime | None) -> None:
        self.fixed = now
        self.last: datetime | None = None

    def next(self) -> datetime:
        value = datetime.now(UTC)
        if self.last is not None and value <= self.last:
            value = self.last + timedelta(microseconds=1)
        self.last = value
        return value


def _ingest_file(
    path: Path,
    fmt: Format | None,
    lake: EventLake,
    *,
    deadletter_dir: Path,
    on_members: MembersCallback | None,
    report: Callable[[int, float], None],
    clock: _Clock,
    workers: int,
) -> FileResult:
    started = time.perf_counter()
    if fmt is None:
        return FileResult(
            path=path,
            format="unknown",
            fingerprint="",
            status="failed",
            error=f"cannot tell the format of {path.name} from its extension; pass --format",
        )
    try:
        fp = fingerprint(path, fmt)
    except OSError as exc:
        return FileResult(path, fmt, "", "failed", error=f"cannot read {path}: {exc}")
    result = FileResult(path=path, format=fmt, fingerprint=fp, status="ingested")
    with _file_lock(lake, fp) as locked:
        if not locked:
            result.status = "failed"
            result.error = f"another ingest of {path.name} is running"
        else:
            _ingest_locked(
                result,
                lake,
                deadletter_dir=deadletter_dir,
                on_members=on_members,
                report=report,
                clock=clock,
                workers=workers,
            )
    result.seconds = time.perf_counter() - started
    return result


@contextmanager
def _file_lock(lake: EventLake, fp: str) -> Iterator[bool]:
    """An exclusive lock on one source file's ingest (two processes must not share a staging
    directory); yields False when another process holds it."""
    directory = lake.manifest_dir / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{fp}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ingest_locked(
    result: FileResult,
    lake: EventLake,
    *,
    deadletter_dir: Path,
    on_members: MembersCallback | None,
    report: Callable[[int, float], None],
    clock: _Clock,
    workers: int,
) -> None:
    path, fp, fmt = result.path, result.fingerprint, cast(Format, result.format)
    manifest = lake.ingested_dir / f"{fp}.json"
    staging = lake.staging_dir / fp
    if manifest.exists():
        result.status = "skipped"
        recorded = orjson.loads(manifest.read_bytes())
        if recorded.get("deadletter"):
            result.deadletter = Path(recorded["deadletter"])
        _cleanup(lake, fp, staging)
        return
    pending = _pending(lake, path, fmt, fp, clock)
    shutil.rmtree(staging, ignore_errors=True)
    deadletter = DeadLetter(deadletter_dir, f"{path.stem}-{fp}.csv")
    try:
        mark(f"{path.name}: start")
        run = _FileRun(
            path=path,
            fmt=fmt,
            fp=fp,
            staging=staging,
            ingested_at=pending["ingested_at"],
            now=pending["now"],
            deadletter=deadletter,
            report=report,
            workers=workers,
            on_members=on_members,
        )
        staged = run.execute()
        crash_point("members")
        crash_point("staged")
        published = _publish(lake, fp, staged)
        mark("published")
        result.files_written = len(published)
        crash_point("published")
        result.deadletter = deadletter.commit()
        crash_point("deadletter")
        result.rows_read = run.rows_read
        result.accepted = run.accepted
        result.duplicates = run.duplicates
        result.rejected = run.rejected
        result.warnings = run.warnings
        atomic_write_bytes(
            manifest,
            orjson.dumps(
                {
                    "source": str(path.resolve()),
                    "format": fmt,
                    "fingerprint": fp,
                    "rows_read": run.rows_read,
                    "accepted": run.accepted,
                    "duplicates": run.duplicates,
                    "rejected": run.rejected,
                    "files": [str(p.relative_to(lake.root)) for p in published],
                    "deadletter": str(result.deadletter) if result.deadletter else None,
                    "ingested_at": pending["ingested_at"].isoformat(),
                    "finished_at": datetime.now(UTC).isoformat(),
                },
                option=orjson.OPT_INDENT_2,
            ),
        )
        crash_point("manifest")
        _cleanup(lake, fp, staging)
        mark("committed")
    except (SourceError, SchemaMismatch, _RegistrationFailed) as exc:
        result.status = "failed"
        result.error = str(exc)
    except (OSError, pa.ArrowException, duckdb.Error, UnicodeError) as exc:
        result.status = "failed"
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        deadletter.discard()
        if result.status == "failed":
            shutil.rmtree(staging, ignore_errors=True)


class _RegistrationFailed(Exception):
    """``on_members`` raised: the file's events are not published and the file is not
    committed, so a re-run registers the members again."""


class _MemberFeed:
    """Registers the members of a file's good rows while the file is read: the pass hands it
    each batch's distinct member ids (in file order); a thread of its own keeps those not seen
    before in this file and calls ``on_members`` with up to MEMBER_CHUNK of them at a time
    (sorted, so concurrent transactions lock rows in one order). The store's work (SQLite or
    PostgreSQL) then overlaps DuckDB's instead of following it. The first error of
    ``on_members`` stops the feed and is raised by :meth:`finish`."""

    def __init__(self, on_members: MembersCallback) -> None:
        self.on_members = on_members
        self.queue: queue.SimpleQueue[pa.Array | None] = queue.SimpleQueue()
        self.error: Exception | None = None
        self.stopped = False
        self.registered = 0
        self.thread = threading.Thread(target=self._run, name="register-members", daemon=True)
        self.thread.start()

    def put(self, members: pa.Array) -> None:
        if len(members) and self.error is None:
            self.queue.put(members)

    def finish(self) -> None:
        """Wait until every id handed over is registered; raise the first error."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise _RegistrationFailed(f"registering members failed: {self.error}") from self.error

    def stop(self) -> None:
        """The pass failed: register nothing more, wait for the thread, ignore its error."""
        self.stopped = True
        self.queue.put(None)
        self.thread.join()

    def _run(self) -> None:
        with busy("register"):  # SQLite works in this thread; a PostgreSQL server does not
            try:
                self._register()
            except Exception as exc:  # never expected; finish() fails the file with it
                self.error = exc

    def _register(self) -> None:
        seen: pa.Array = pa.array([], pa.string())
        fresh: list[pa.Array] = []
        waiting = 0
        while (members := self.queue.get()) is not None:
            if self.error is not None or self.stopped:
                continue  # drain: the pass still hands batches over until it ends
            new = members.filter(pc.invert(pc.is_in(members, value_set=seen)))
            if not len(new):
                continue
            seen = pa.concat_arrays([seen, new])
            fresh.append(new)
            waiting += len(new)
            # A full chunk goes at once; a smaller one when no batch is waiting, so the ids
            # left for the end of the pass (when everything else waits for them) are few.
            if waiting >= MEMBER_CHUNK or (waiting >= MEMBER_CHUNK // 10 and self.queue.empty()):
                self._send(fresh)
                fresh, waiting = [], 0
        if fresh and self.error is None and not self.stopped:
            self._send(fresh)

    def _send(self, fresh: list[pa.Array]) -> None:
        ids = sorted(pa.concat_arrays(fresh).to_pylist())
        try:
            for start in range(0, len(ids), MEMBER_CHUNK):
                self.on_members(ids[start : start + MEMBER_CHUNK])
                self.registered += min(MEMBER_CHUNK, len(ids) - start)
        except Exception as exc:  # the store's own error; the file stays uncommitted
            self.error = exc


def _pending(lake: EventLake, path: Path, fmt: str, fp: str, clock: _Clock) -> dict[str, Any]:
    """This file's clock: recorded by an earlier interrupted run, or started now."""
    marker = lake.pending_dir / f"{fp}.json"
    if marker.exists():
        try:
            recorded = orjson.loads(marker.read_bytes())
            return {
                "ingested_at": datetime.fromisoformat(recorded["ingested_at"]),
                "now": datetime.fromisoformat(recorded["now"]),
            }
        except (orjson.JSONDecodeError, KeyError, ValueError):
            pass  # a marker is written atomically, so this is a hand-edited file: start anew
    ingested_at = clock.next()
    now = clock.fixed or ingested_at
    atomic_write_bytes(
        marker,
        orjson.dumps(
            {
                "source": str(path.resolve()),
                "format": fmt,
                "ingested_at": ingested_at.isoformat(),
                "now": now.isoformat(),
            }
        ),
    )
    return {"ingested_at": ingested_at, "now": now}


def _cleanup(lake: EventLake, fp: str, staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    (lake.pending_dir / f"{fp}.json").unlink(missing_ok=True)


def _publish(lake: EventLake, fp: str, staged: dict[int, list[Path]]) -> list[Path]:
    """Move staged files into the lake under deterministic names, then delete files of this
    fingerprint that an interrupted earlier run published under names not reused now."""
    moves = [
        (path, lake.partition_dir(day_of(day)) / f"part-{fp}-{int(path.stem)}.parquet")
        for day in sorted(staged)
        for path in staged[day]
    ]

    def publish(move: tuple[Path, Path]) -> Path:
        lake.publish(*move)
        crash_point("publishing")
        return move[1]

    # The files are already on disk (fsynced when the pass closed them): what is left is a
    # rename and a directory fsync per file, waits on the disk that a few threads overlap. Any
    # order is safe: nothing counts as ingested before the manifest.
    with ThreadPoolExecutor(8, thread_name_prefix="publish") as pool:
        published = list(pool.map(publish, moves))
    keep = set(published)
    if lake.events_dir.is_dir():
        for stale in lake.events_dir.glob(f"date=*/part-{fp}-*.parquet"):
            if stale not in keep and BULK_FILE.match(stale.name):
                stale.unlink(missing_ok=True)
                fsync_dir(stale.parent)
    return published


@dataclass
class _Checked:
    """One validated batch: good rows (LAKE_SCHEMA), their id hashes and UTC days, bad rows."""

    good: pa.Table
    hashes: pa.ChunkedArray
    days: pa.ChunkedArray
    bad: pa.Table | None
    rows: int
    last_row: int
    members: pa.Array
    sorted_hashes: np.ndarray[Any, Any]
    keys: frozenset[str] = frozenset()
    #: The plan whose check numbers the bad rows carry, when not the source's own.
    plan: ValidationPlan | None = None


class _FileRun:
    """One source file's passes: read, validate, stage; then member registration."""

    def __init__(
        self,
        *,
        path: Path,
        fmt: Format,
        fp: str,
        staging: Path,
        ingested_at: datetime,
        now: datetime,
        deadletter: DeadLetter,
        report: Callable[[int, float], None],
        workers: int,
        on_members: MembersCallback | None = None,
    ) -> None:
        self.path = path
        self.fmt = fmt
        self.fp = fp
        self.staging = staging
        self.ingested_at = pa.scalar(ingested_at, pa.timestamp("us", tz="UTC"))
        self.now = now
        self.deadletter = deadletter
        self.report = report
        self.workers = workers
        self.con: duckdb.DuckDBPyConnection | None = None
        self.rows_read = self.accepted = self.duplicates = self.rejected = 0
        self.warnings: list[str] = []
        self._local = threading.local()
        self._candidates: pa.Array | None = None
        self._seen: set[str] = set()
        self.on_members = on_members
        self._feed: _MemberFeed | None = None

    def execute(self) -> dict[int, list[Path]]:
        """Stage the file's good rows per UTC day, registering their members meanwhile; a
        second pass only if ids repeat."""
        feed = self._feed = _MemberFeed(self.on_members) if self.on_members is not None else None
        try:
            staged = self._pass(candidates=None)
        except BaseException:
            if feed is not None:
                feed.stop()
            raise
        finally:
            self._feed = None
        mark(f"first pass done: {self.rows_read:,} rows, {self.accepted:,} accepted")
        if feed is not None:
            feed.finish()  # the store's error, if any, fails the file here
            mark(f"members registered: {feed.registered:,}")
        repeated = self._hashes.repeated()
        if len(repeated):
            staged = self._pass(candidates=repeated)
            mark("second pass done")
        if self.con is not None:
            self.con.close()
            self.con = None
        return staged

    # -- one pass ------------------------------------------------------------------------

    def _open_db(self) -> duckdb.DuckDBPyConnection:
        if self.con is not None:
            self.con.close()
        # One DuckDB thread per query: batches are validated in parallel by our workers, and a
        # single-threaded scan returns rows in input order (a parallel Arrow scan does not).
        config: dict[str, str | bool | int | float | list[str]] = {
            "temp_directory": str(self.staging / "duckdb.tmp"),
            "threads": 1,
        }
        con = duckdb.connect(config=config)
        con.execute("SET TimeZone = 'UTC'")
        con.execute("CREATE TABLE ids (h UBIGINT)")
        self.con = con
        self._hashes = IdHashes(con)
        self._local = threading.local()
        return con

    def _pass(self, candidates: pa.Array | None) -> dict[int, list[Path]]:
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        self.deadletter.reset()
        self.rows_read = self.accepted = self.duplicates = self.rejected = 0
        con = self._open_db()
        source = open_source(self.path, self.fmt)
        plan = build_validation(source.schema, now=self.now, raw_columns=source.raw_columns)
        # Parquet slices are read by DuckDB itself, which then exports every field.
        self._sliced_plan = build_validation(source.schema, now=self.now, export_all=True)
        # JSON Lines blocks that Arrow parsed whole arrive typed (JsonLines.parsed).
        self._parsed_plan = build_validation(PARSED_JSON_SCHEMA, now=self.now)
        self._candidates = candidates
        self._seen = set()
        self._keys: set[str] = set()
        writer = PartitionWriter(self.staging, self.workers)
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="validate") as pool:
                inflight: deque[Future[_Checked]] = deque()
                for batch in source.batches():
                    inflight.append(pool.submit(self._check, plan, batch))
                    while len(inflight) > self.workers:
                        self._consume(inflight.popleft().result(), plan, source, writer, con)
                while inflight:
                    self._consume(inflight.popleft().result(), plan, source, writer, con)
                mark("batches read and validated")
            staged = writer.close()
        finally:
            writer.abort()
        self._write_bad([], source.take_malformed(), plan)
        if self._keys:
            source.extra_columns = sorted(self._keys.difference(EVENT_FIELDS))
        if source.extra_columns:
            self.warnings = [
                "ignored column(s) not in the event contract: " + ", ".join(source.extra_columns)
            ]
        self.report(self.rows_read, 1.0)
        return staged

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None:
            assert self.con is not None
            cursor = self.con.cursor()
            cursor.execute("SET TimeZone = 'UTC'")
            self._local.cursor = cursor
        return cursor

    def _check(self, plan: ValidationPlan, batch: Batch) -> _Checked:
        """Validate one batch (in a worker thread): good rows in lake shape, bad rows apart."""
        with busy("validate"):
            return self._check_batch(plan, batch)

    def _check_batch(self, plan: ValidationPlan, batch: Batch) -> _Checked:
        cursor = self._cursor()
        if isinstance(batch, ParquetSlice):
            out = cursor.sql(self._sliced_plan.sql(batch.relation())).to_arrow_table()
            return self._assemble(out, out, self._sliced_plan)
        if isinstance(batch, JsonLines):
            name = f"lines_{threading.get_ident()}"
            parsed = batch.parsed(cursor)
            if parsed is not None:
                cursor.register(name, parsed.table)
                try:
                    out = cursor.sql(self._parsed_plan.sql(f'"{name}"')).to_arrow_table()
                finally:
                    cursor.unregister(name)
                if not out.column(ROW).equals(parsed.table.column(ROW)):
                    raise RuntimeError("validation changed the row order")  # never expected
                # The ids and texts come straight from Arrow's parse (already lake-typed).
                checked = self._assemble(out, parsed.table, self._parsed_plan)
                checked.keys = parsed.keys
                checked.plan = self._parsed_plan
                return checked
            cursor.register(name, batch.table)
            try:
                out = cursor.sql(self._sliced_plan.sql(batch.relation(name))).to_arrow_table()
                # A block whose bytes hold more '":' than its lines' contract keys may have
                # keys outside the contract: only then are its keys listed (for the warning).
                expected = pc.sum(out.column(JSON_KEY_COUNT)).as_py() or 0
                keys: frozenset[str] = frozenset()
                if batch.key_ends() != expected:
                    found = cursor.sql(batch.keys_sql(name)).to_arrow_table().column(0)
                    keys = frozenset(k for k in found.to_pylist() if k is not None)
            finally:
                cursor.unregister(name)
            checked = self._assemble(out, out, self._sliced_plan)
            checked.keys = keys
            return checked
        table = _strip_numbers(pa.Table.from_batches([batch]))
        name = f"batch_{threading.get_ident()}"
        cursor.register(name, table)
        try:
            out = cursor.sql(plan.sql(f'"{name}"')).to_arrow_table()
        finally:
            cursor.unregister(name)
        if not out.column(ROW).equals(table.column(ROW)):
            raise RuntimeError("validation changed the row order")  # never expected
        return self._assemble(out, table, plan)

    def _assemble(self, out: pa.Table, table: pa.Table, plan: ValidationPlan) -> _Checked:
        """Good rows in lake shape (exported or passed-through columns), bad rows apart."""
        n = table.num_rows
        columns = []
        for f in LAKE_SCHEMA:
            if f.name == "ingested_at":
                column: Any = pa.repeat(self.ingested_at, n)
            elif f.name in plan.exported:
                column = out.column(f.name)
            elif f.name in plan.passthrough:
                column = table.column(f.name)
            else:
                column = pa.nulls(n, f.type)
            if column.type != f.type:
                column = pc.cast(column, f.type)
            columns.append(column)
        good = pa.Table.from_arrays(columns, schema=LAKE_SCHEMA)
        hashes = out.column("__hash")
        check = out.column("__check")
        bad = None
        if check.null_count != n:
            ok = pc.is_null(check)
            good = good.filter(ok)
            hashes = hashes.filter(ok)
            bad = out.filter(pc.invert(ok)).select([ROW, "__check", "__message", "__raw"])
        last_row = table.column(ROW)[-1].as_py() if n else 0
        # Per-batch work that can run here, in parallel, rather than in the ordered main loop.
        members = pc.unique(good.column("member_id")) if good.num_rows else None
        sorted_hashes = np.sort(hashes.to_numpy()) if good.num_rows else None
        return _Checked(
            good,
            hashes,
            utc_days(good.column("ts")),
            bad,
            n,
            last_row,
            members if members is not None else pa.array([], pa.string()),
            sorted_hashes if sorted_hashes is not None else np.empty(0, np.uint64),
        )

    def _consume(
        self,
        checked: _Checked,
        plan: ValidationPlan,
        source: Source,
        writer: PartitionWriter,
        con: duckdb.DuckDBPyConnection,
    ) -> None:
        """Fold one validated batch into the pass, in file order (main thread)."""
        good, hashes, days = checked.good, checked.hashes, checked.days
        if self._candidates is not None and good.num_rows:
            good, hashes, days = self._drop_repeats(good, hashes, days)
        elif good.num_rows:
            self._hashes.add(checked.sorted_hashes)
        if self._feed is not None:
            self._feed.put(checked.members)
        if good.num_rows:
            writer.add_batch(split_by_day(good, days))
        self.rows_read += checked.rows
        self.accepted += good.num_rows
        self._keys |= checked.keys
        self._write_bad(
            checked.bad.to_pylist() if checked.bad is not None else [],
            source.take_malformed(before=checked.last_row),
            checked.plan or plan,
        )
        self.report(self.rows_read, source.position)

    def _drop_repeats(
        self,
        good: pa.Table,
        hashes: pa.ChunkedArray,
        days: pa.ChunkedArray,
    ) -> tuple[pa.Table, pa.ChunkedArray, pa.ChunkedArray]:
        """Second pass only: drop rows whose id was accepted earlier in the file."""
        seen = self._seen
        suspect = pc.is_in(hashes, value_set=self._candidates)
        if not pc.any(suspect).as_py():
            return good, hashes, days
        keep = pc.invert(suspect).to_pylist()
        ids = good.column("event_id")
        for i in pc.indices_nonzero(suspect).to_pylist():
            event_id = ids[i].as_py()
            if event_id not in seen:
                seen.add(event_id)
                keep[i] = True
        mask = pa.array(keep)
        dropped = len(keep) - sum(keep)
        self.duplicates += dropped
        return good.filter(mask), hashes.filter(mask), days.filter(mask)

    def _write_bad(
        self,
        rejected: list[dict[str, Any]],
        malformed: list[Malformed],
        plan: ValidationPlan | None,
    ) -> None:
        rows: list[tuple[int, str, str, str, str]] = []
        for r in rejected:
            assert plan is not None
            check = plan.checks[r["__check"] - 1]
            raw = r["__raw"].rstrip("\r\n")  # a JSON line comes with its newline
            if check.code is RejectCode.malformed_row:  # the second pass: failing lines only
                message = malformed_json_message(raw)
                raw = orjson.dumps(raw).decode()
                rows.append((r[ROW], check.code.value, check.field, message, raw))
            else:
                rows.append((r[ROW], check.code.value, check.field, r["__message"], raw))
        for m in malformed:
            rows.append((m.row, "malformed_row", "", m.message, orjson.dumps(m.raw).decode()))
        self.rows_read += len(malformed)
        self.rejected += len(rows)
        rows.sort(key=lambda r: r[0])
        self.deadletter.write(rows)


def _strip_numbers(table: pa.Table) -> pa.Table:
    """Strip surrounding whitespace from integers given as text (pydantic accepts ``" 12 "``)."""
    for name in INT_FIELDS:
        if name in table.column_names:
            column = table.column(name)
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                index = table.column_names.index(name)
                table = table.set_column(index, name, pc.utf8_trim_whitespace(column))
    return table
