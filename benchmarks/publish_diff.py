"""Benchmark publishing by difference against the full rewrite it replaced, in one run.

    python benchmarks/publish_diff.py --store sqlite --tiers 1000000 --profiles 200000 --runs 3
    python benchmarks/publish_diff.py --store postgresql+psycopg://postgres@127.0.0.1:55432/postgres

For each table (the tiers of ``--tiers`` members, the profiles of ``--profiles`` members) and
each code (``baseline``: the publish of the commit before this change, exported with ``git
archive`` into a scratch directory; ``diff``: the working tree), into a fresh store:

1. first publish into the empty store;
2. republish unchanged: the same rows under a new build id, ``--runs`` times;
3. republish with ``--changed`` (1 %) of members changed (tiers: a higher score, a tenth of
   them an upgrade with its history, audit and outbox rows; profiles: another segment),
   ``--runs`` times, a different 1 % each time.

Every publish runs in a child process (``python -c``) with that code first on ``sys.path``,
as the build's publish step calls it: the baseline in one transaction, the diff code with a
commit after every batch. Prints seconds and rows written per run, medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test factories build the synthetic profiles

from tests.profiles.factories import write_synthetic_build  # noqa: E402

AS_OF = datetime(2026, 11, 20, tzinfo=UTC)
PROGRAM = {
    "name": "bench",
    "tiers": [
        {"name": "member"},
        {"name": "gold", "qualify": [{"score": 1000}]},
        {"name": "platinum", "qualify": [{"score": 5000}]},
    ],
    "score": {"parts": [{"name": "spend", "field": "spend_365d", "weight": 0.01, "max": 100000}]},
}

CHILD = r"""
import json, sys, time
from pathlib import Path
from sqlalchemy import create_engine
code, target, url, directory = sys.argv[1:5]
directory = Path(directory)
engine = create_engine(url)
from memberwise.membership import stage
from memberwise.profiles import service
def publish(conn, commit):
    if target == "tiers":
        return stage.publish(conn, directory, commit) if commit else stage.publish(conn, directory)
    if commit:
        r = service.publish_build(conn, directory, commit=commit)
        return r.written + r.removed
    return service.publish_build(conn, directory).members
started = time.perf_counter()
if code == "baseline":
    with engine.begin() as conn:
        written = publish(conn, None)
else:
    with engine.connect() as conn:
        written = publish(conn, conn.commit)
        conn.commit()
print("RESULT " + json.dumps({"seconds": time.perf_counter() - started, "written": written}))
"""


def changed_in(n: int, changed: float, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """Members changed by round ``rounds`` (cumulative: each round changes another
    ``changed`` share of the members, so a round differs from the one before in exactly
    ``n * changed`` members), and those changed in that round itself."""
    k = int(n * changed)
    rank = np.random.default_rng(7).permutation(n)
    if rounds < 0:
        return np.zeros(n, bool), np.zeros(n, bool)
    return rank < (rounds + 1) * k, (rank >= rounds * k) & (rank < (rounds + 1) * k)


def tiers_table(n: int, changed: float, rounds: int) -> pa.Table:
    """``n`` members' tier rows as the tiers stage writes them. By round ``rounds`` (-1: none)
    the members changed so far score 1 higher, a tenth of them one tier up (an upgrade in the
    round that made it, with its history, audit and outbox rows)."""
    ids = np.char.add("t", np.char.zfill(np.arange(n).astype(str), 8))
    base = np.random.default_rng(0).integers(0, 10_000, n)
    so_far, now = changed_in(n, changed, rounds)
    score = base + so_far
    tier = np.where(base >= 5000, "platinum", np.where(base >= 1000, "gold", "member"))
    moves = so_far & (np.arange(n) % 10 == 0) & (tier != "platinum")
    before = tier.copy()
    tier[moves] = np.where(before[moves] == "gold", "platinum", "gold")
    change = np.where(moves & now, "upgrade", "kept")
    since = pa.array(np.full(n, int(AS_OF.timestamp() * 1e6)), pa.int64()).cast(
        pa.timestamp("us", tz="UTC")
    )
    until_us = int((AS_OF + timedelta(days=365)).timestamp() * 1e6)
    until = pa.array([None if t == "member" else until_us for t in tier], pa.int64()).cast(
        pa.timestamp("us", tz="UTC")
    )
    details = [
        f'{{"parts":{{"spend":[{s * 100}.0,{s}.0]}},"metrics":{{"net_spend_365d":{s * 100}}},'
        f'"fees":{{}},"notice":null}}'
        for s in score
    ]
    return pa.table(
        {
            "member_id": pa.array(ids, pa.string()),
            "tier": pa.array(tier, pa.string()),
            "source": pa.array(np.full(n, "auto"), pa.string()),
            "since": since,
            "until": until,
            "score": pa.array(score, pa.int64()),
            "change": pa.array(change, pa.string()),
            "from_tier": pa.array(before, pa.string()),
            "reason": pa.array(np.full(n, "benchmark"), pa.string()),
            "details": pa.array(details, pa.string()),
        }
    )


def tiers_build(root: Path, build_id: str, n: int, changed: float, rounds: int) -> Path:
    directory = root / build_id
    directory.mkdir(parents=True)
    pq.write_table(tiers_table(n, changed, rounds), directory / "tiers.parquet")
    (directory / "program.json").write_text(json.dumps(PROGRAM))
    manifest = {"build_id": build_id, "as_of": AS_OF.isoformat()}
    (directory / "build.json").write_text(json.dumps(manifest))
    return directory


def profiles_build(root: Path, build_id: str, source: Path, changed: float, rounds: int) -> Path:
    """A copy of ``source`` under ``build_id``; the members changed by round ``rounds`` in
    another segment."""
    directory = root / build_id
    shutil.copytree(source, directory)
    manifest = json.loads((directory / "build.json").read_text())
    manifest["build_id"] = build_id
    (directory / "build.json").write_text(json.dumps(manifest))
    if rounds >= 0:
        segments = pq.read_table(directory / "segments.parquet")
        so_far, _ = changed_in(segments.num_rows, changed, rounds)
        names = np.array(segments.column("segment").to_pylist(), dtype=object)
        names[so_far] = np.where(names[so_far] == "active", "at_risk", "active")
        segments = segments.set_column(1, "segment", pa.array(names, pa.string()))
        pq.write_table(segments, directory / "segments.parquet")
    return directory


def fresh_store(url: str, scratch: Path, code_path: Path) -> str:
    """An empty migrated store (SQLite file, or a new PostgreSQL database)."""
    if url == "sqlite":
        target = f"sqlite:///{scratch / 'store.sqlite'}"
        (scratch / "store.sqlite").unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            (scratch / f"store.sqlite{suffix}").unlink(missing_ok=True)
    else:
        name = f"bench_publish_{os.getpid()}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        target = url.rsplit("/", 1)[0] + f"/{name}"
    migrate = (
        "import sys; from memberwise.kit.db import make_engine; from memberwise.store import "
        "migrate; migrate(make_engine(sys.argv[1]))"
    )
    subprocess.run([sys.executable, "-c", migrate, target], check=True, env=env(code_path))
    return target


def env(code_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{code_path}:{ROOT}/clients/python"}


def child(code: str, code_path: Path, target: str, url: str, directory: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, code, target, url, str(directory)],
        check=True,
        capture_output=True,
        text=True,
        env=env(code_path),
    )
    # (The baseline's DuckDB may leave a progress bar without a newline before the result.)
    line = next(x for x in reversed(out.stdout.splitlines()) if "RESULT " in x)
    result: dict[str, Any] = json.loads(line.split("RESULT ", 1)[1])
    return result


def load() -> str:
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="sqlite", help="sqlite, or a PostgreSQL server URL")
    parser.add_argument("--tiers", type=int, default=1_000_000, help="members (0: skip)")
    parser.add_argument("--profiles", type=int, default=200_000, help="members (0: skip)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--baseline", default="bfd9ee0", help="commit of the full rewrite")
    parser.add_argument("--codes", default="baseline,diff")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="publish-diff-"))
    try:
        baseline_src = scratch / "baseline"
        baseline_src.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.baseline, "src"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(baseline_src)], input=archive, check=True)
        codes = {"baseline": baseline_src / "src", "diff": ROOT / "src"}
        print(
            f"store {args.store.split('@')[-1]}, cores {os.cpu_count()}, baseline "
            f"{args.baseline}, load {load()} at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        )
        summary: dict[tuple[str, str, str], float] = {}
        for target, n in (("tiers", args.tiers), ("profiles", args.profiles)):
            if not n:
                continue
            builds = scratch / f"builds-{target}"
            builds.mkdir()
            source = (
                write_synthetic_build(builds / "source", "source", n, seed=0)
                if target == "profiles"
                else None
            )

            def make(
                build_id: str, rounds: int, builds: Path = builds, source: Path | None = source
            ) -> Path:
                if source is None:
                    return tiers_build(builds, build_id, args.tiers, args.changed, rounds)
                return profiles_build(builds, build_id, source, args.changed, rounds)

            steps = {
                "first": [make("b0", -1)],
                "unchanged": [make(f"u{r}", -1) for r in range(args.runs)],
                f"{args.changed:.0%} changed": [make(f"c{r}", r) for r in range(args.runs)],
            }
            for code in args.codes.split(","):
                url = fresh_store(args.store, scratch, codes[code])
                for step, dirs in steps.items():
                    times = []
                    for directory in dirs:
                        began = time.perf_counter()
                        r = child(code, codes[code], target, url, directory)
                        wall = time.perf_counter() - began
                        print(
                            f"  {target:8} {code:8} {step:12} {directory.name:3} "
                            f"{r['seconds']:8.2f} s publish ({wall:6.2f} s with start-up), "
                            f"{r['written']:>9,} rows written, load {load()}",
                            flush=True,
                        )
                        times.append(r["seconds"])
                    summary[(target, code, step)] = statistics.median(times)
        print("\nmedians (seconds) and ratio baseline / diff")
        for (target, code, step), seconds in summary.items():
            if code != "diff":
                continue
            base = summary.get((target, "baseline", step))
            ratio = f"{base / seconds:6.1f}x" if base else ""
            base_s = f"{base:8.2f}" if base else "       -"
            print(f"  {target:8} {step:12} baseline {base_s}  diff {seconds:8.2f}  {ratio}")
        print(f"load {load()}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if args.store != "sqlite":
            admin = create_engine(args.store, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "bench_publish_{os.getpid()}"'))
            admin.dispose()


if __name__ == "__main__":
    main()
