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

The pieces: :mod:`~memberwise.events.file_run` (one file's passes),
:mod:`~memberwise.events.member_feed` (registering members meanwhile),
:mod:`~memberwise.events.ingest_markers` (lock, pending marker, publication, cleanup) and
:mod:`~memberwise.events.bulk_results` (what is reported).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, cast

import duckdb
import orjson
import pyarrow as pa

from memberwise.events.bulk_results import BulkResult, FileResult, Progress, ProgressCallback
from memberwise.events.file_run import FileRun
from memberwise.events.ingest_markers import (
    Clock,
    cleanup,
    crash_point,
    file_lock,
    pending_clock,
    publish_staged,
)
from memberwise.events.member_feed import MembersCallback, RegistrationFailed
from memberwise.events.sources import Format, SourceError, detect_format
from memberwise.events.staging import DeadLetter
from memberwise.events.timeline import mark
from memberwise.events.validation_sql import SchemaMismatch
from memberwise.kit.lake import EventLake, atomic_write_bytes

BulkFormat = Literal["auto", "csv", "jsonl", "parquet", "taobao"]


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
    clock = Clock(now)
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


def _ingest_file(
    path: Path,
    fmt: Format | None,
    lake: EventLake,
    *,
    deadletter_dir: Path,
    on_members: MembersCallback | None,
    report: Callable[[int, float], None],
    clock: Clock,
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
    with file_lock(lake, fp) as locked:
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


def _ingest_locked(
    result: FileResult,
    lake: EventLake,
    *,
    deadletter_dir: Path,
    on_members: MembersCallback | None,
    report: Callable[[int, float], None],
    clock: Clock,
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
        cleanup(lake, fp, staging)
        return
    pending = pending_clock(lake, path, fmt, fp, clock)
    shutil.rmtree(staging, ignore_errors=True)
    deadletter = DeadLetter(deadletter_dir, f"{path.stem}-{fp}.csv")
    try:
        mark(f"{path.name}: start")
        run = FileRun(
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
        published = publish_staged(lake, fp, staged)
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
        cleanup(lake, fp, staging)
        mark("committed")
    except (SourceError, SchemaMismatch, RegistrationFailed) as exc:
        result.status = "failed"
        result.error = str(exc)
    except (OSError, pa.ArrowException, duckdb.Error, UnicodeError) as exc:
        result.status = "failed"
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        deadletter.discard()
        if result.status == "failed":
            shutil.rmtree(staging, ignore_errors=True)
