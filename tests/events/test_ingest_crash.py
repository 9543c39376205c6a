"""Bulk ingest is exactly once after ``kill -9``: kill the ingest process at every stage and at
random moments, run it again, and every good event is stored once, the dead letter is
complete and every member was registered."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memberwise.events.ingest_markers import CRASH_ENV
from memberwise.events.schemas import INPUT_SCHEMA
from memberwise.kit.lake import EventLake

pytestmark = pytest.mark.slow

ROWS = 300_000
DAYS = 30
START = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 3, 1, tzinfo=UTC)
STAGES = ["staged", "publishing", "published", "members", "deadletter", "manifest"]

SCRIPT = """
import os, sys
from datetime import datetime
from pathlib import Path
from memberwise.events.bulk import ingest_paths
from memberwise.kit.lake import EventLake

source, root, log = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

def register(member_ids):
    with open(log, "a") as f:
        f.write("\\n".join(member_ids) + "\\n")
        f.flush()
        os.fsync(f.fileno())

print("go", flush=True)  # imports done: the parent times its kill from here
result = ingest_paths(
    [source],
    EventLake(root / "lake"),
    deadletter_dir=root / "deadletter",
    on_members=register,
    now=datetime.fromisoformat(sys.argv[4]),
)
sys.exit(0 if result.ok else 3)
"""


class Expected:
    """What a correct ingest of the generated file ends with."""

    def __init__(self, good: set[str], members: set[str], bad: list[tuple[int, str]]) -> None:
        self.good = good
        self.members = members
        self.bad = bad


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Expected]:
    """300,000 events over 30 days: every 97th has a negative price, every 101st an unknown
    type, and rows 150,000.. repeat the ids of rows 0..99 (duplicates, the first is kept)."""
    path = tmp_path_factory.mktemp("crash") / "events.parquet"
    i = list(range(ROWS))
    ids = [f"ev-{n:07d}" if not 150_000 <= n < 150_100 else f"ev-{n - 150_000:07d}" for n in i]
    types = ["bogus" if n % 101 == 50 else ("purchase" if n % 5 == 0 else "view") for n in i]
    prices = [-1 if n % 97 == 13 else (n % 5000 if n % 5 == 0 else None) for n in i]
    members = [f"m{n % 5_003:05d}" for n in i]
    span = DAYS * 86_400
    ts = [START + timedelta(seconds=n * span // ROWS) for n in i]
    table = pa.table(
        {"event_id": ids, "member_id": members, "type": types, "ts": ts, "price": prices},
        schema=pa.schema(
            [INPUT_SCHEMA.field(n) for n in ("event_id", "member_id", "type", "ts", "price")]
        ),
    )
    pq.write_table(table, path, row_group_size=20_000)

    bad: list[tuple[int, str]] = []
    good: set[str] = set()
    good_members: set[str] = set()
    for n in i:
        if types[n] == "bogus":
            bad.append((n + 1, "unknown_event_type"))
        elif prices[n] == -1:
            bad.append((n + 1, "negative_price"))
        else:
            good.add(ids[n])
            good_members.add(members[n])
    return path, Expected(good, good_members, bad)


def _ingest(
    path: Path, root: Path, *, crash_at: str | None = None, kill_after: float | None = None
) -> tuple[int, float]:
    """Run the ingest in a new process; with ``kill_after``, SIGKILL it that many seconds after
    its imports are done (if it is still running). Returns the exit code (-9 when killed) and
    the seconds it ran after its imports."""
    root.mkdir(parents=True, exist_ok=True)
    script = root / "ingest.py"
    if not script.exists():
        script.write_text(SCRIPT)
    env = dict(os.environ)
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    command = [sys.executable, str(script), str(path), str(root), str(root / "members.log")]
    process = subprocess.Popen([*command, NOW.isoformat()], env=env, stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"go\n"
    started = time.perf_counter()
    if kill_after is not None:
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
    code = process.wait(timeout=600)
    return code, time.perf_counter() - started


def _assert_exactly_once(root: Path, expected: Expected) -> None:
    lake = EventLake(root / "lake")
    con = duckdb.connect()
    read = lake.events_relation(con).select("event_id").fetchall()
    assert len(read) == len(expected.good)
    assert {r[0] for r in read} == expected.good
    assert lake.stats().rows == len(expected.good)  # physically once, not only through the reader
    assert lake.stats().uncommitted_files == 0

    [letter] = list((root / "deadletter").glob("*.csv"))
    with open(letter, newline="") as f:
        rows = [(int(r["row"]), r["code"]) for r in csv.DictReader(f)]
    assert rows == expected.bad
    assert not list((root / "deadletter").glob(".tmp-*"))

    registered = set((root / "members.log").read_text().split())
    assert registered == expected.members
    assert not list((root / "lake" / "_staging").iterdir())
    assert not list((root / "lake" / "_manifest" / "pending").iterdir())


def test_a_crash_at_every_stage_then_a_rerun_stores_each_event_once(
    source: tuple[Path, Expected], tmp_path: Path
) -> None:
    path, expected = source
    for stage in STAGES:
        assert _ingest(path, tmp_path, crash_at=stage)[0] == 137, stage
    assert _ingest(path, tmp_path)[0] == 0

    _assert_exactly_once(tmp_path, expected)


def test_kill_9_at_random_moments_then_a_rerun_stores_each_event_once(
    source: tuple[Path, Expected], tmp_path: Path
) -> None:
    path, expected = source
    code, full = _ingest(path, tmp_path / "timing")
    assert code == 0
    moments = random.Random(7)
    codes = []
    for _ in range(6):
        # Early moments of a full run: on a busy shared machine a later one may find the run
        # already finished, after which further runs are no-ops and kill nothing.
        codes.append(_ingest(path, tmp_path, kill_after=moments.uniform(0.05, 0.6) * full)[0])
        if codes[-1] == 0:
            break
    assert codes.count(-signal.SIGKILL) >= 2, codes
    assert _ingest(path, tmp_path)[0] == 0
    assert _ingest(path, tmp_path)[0] == 0  # and once more: a no-op

    _assert_exactly_once(tmp_path, expected)
