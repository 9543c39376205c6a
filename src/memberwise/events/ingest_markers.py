"""What makes one file's bulk ingest happen exactly once, on disk under the lake's
``_manifest``: the file's lock, its pending marker (the clock an interrupted run re-uses), the
publication of its staged files under names derived from its fingerprint, and the cleanup
after the ingested marker is written. The crash tests stop the process at the named points.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from memberwise.kit.lake import BULK_FILE, EventLake, atomic_write_bytes, day_of, fsync_dir

#: Environment variable naming a stage at which the process kills itself (crash tests only).
CRASH_ENV = "MEMBERWISE_TEST_CRASH_AT"


def crash_point(stage: str) -> None:
    """Die here, as ``kill -9`` would, when the crash tests ask for this stage."""
    if os.environ.get(CRASH_ENV) == stage:
        os._exit(137)


class Clock:
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


@contextmanager
def file_lock(lake: EventLake, fp: str) -> Iterator[bool]:
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


def pending_clock(lake: EventLake, path: Path, fmt: str, fp: str, clock: Clock) -> dict[str, Any]:
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


def cleanup(lake: EventLake, fp: str, staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    (lake.pending_dir / f"{fp}.json").unlink(missing_ok=True)


def publish_staged(lake: EventLake, fp: str, staged: dict[int, list[Path]]) -> list[Path]:
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
