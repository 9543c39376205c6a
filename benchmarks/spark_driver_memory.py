"""Peak memory of the Spark driver during a build, as the lake grows: the Python driver must stay
flat, because every artifact is written by Spark's executors and nothing member-sized is
collected (issue 19).

    python benchmarks/spark_driver_memory.py --events 1000000 5000000 20000000 --home /tmp/sdm

For each size a synthetic lake is written straight into a fresh home (one file per day,
``--members`` = events / 50 members, views, carts and purchases with prices; a fast vectorized
writer, not the demo generator), then ``memberwise build --only profiles,tags`` runs on Spark in
a child process, which reports at its end:

- the Python driver's peak RSS (``VmHWM`` of its own process, exact);
- the JVM's peak RSS (``VmHWM`` of the java child, sampled every 0.2 s) and its heap's peak use
  (the sum of the heap pools' peak usage, from the JVM's MXBeans). In local mode the JVM hosts
  the executors too, so its figure grows with the data by design; on a cluster that part moves
  to the executors' JVMs.

``--collect`` runs the same build with the pre-issue-19 write path (``to_pyarrow_batches``,
which calls ``toPandas()`` on the whole result) for the comparison; ``--duckdb`` adds the same
build on DuckDB (wall time) as the baseline engine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "programs" / "demo.yaml"
END = datetime(2026, 11, 20, tzinfo=UTC)


def write_lake(lake_root: Path, events: int, members: int, days: int, seed: int = 7) -> None:
    """``events`` synthetic events over ``days`` days, one Parquet file per day."""
    from memberwise.kit.lake import EventLake
    from memberwise.kit.lake_schema import LAKE_SCHEMA

    lake = EventLake(lake_root)
    rng = np.random.default_rng(seed)
    per_day = events // days
    start = END - timedelta(days=days)
    for d in range(days):
        n = per_day + (events - per_day * days if d == days - 1 else 0)
        base = d * per_day
        ids = pa.array(np.arange(base, base + n))
        member = rng.zipf(1.3, n) % members
        kind = rng.choice(
            np.array(["view", "cart", "favorite", "purchase"]), n, p=[0.8, 0.1, 0.04, 0.06]
        )
        item = rng.integers(0, 50_000, n)
        seconds = rng.integers(0, 86_400, n)
        day_start = int((start + timedelta(days=d)).timestamp() * 1_000_000)
        ts = pa.array(day_start + seconds * 1_000_000, pa.timestamp("us", tz="UTC"))
        purchase = kind == "purchase"
        price = np.where(purchase | (kind == "cart"), rng.integers(100, 100_000, n), 0)
        string = pc.cast(pa.array(member), pa.string())
        columns: dict[str, Any] = {
            "event_id": pc.binary_join_element_wise("e", pc.cast(ids, pa.string()), ""),
            "member_id": pc.binary_join_element_wise("m", string, ""),
            "type": pa.array(kind),
            "ts": ts,
            "item_id": pc.binary_join_element_wise("i", pc.cast(pa.array(item), pa.string()), ""),
            "category_id": pc.binary_join_element_wise(
                "c", pc.cast(pa.array(item % 300), pa.string()), ""
            ),
            "brand": pc.binary_join_element_wise(
                "b", pc.cast(pa.array(item % 900), pa.string()), ""
            ),
            "price": pa.array(price, pa.int64(), mask=price == 0),
            "quantity": pa.array(np.ones(n, np.int32), mask=~purchase),
            "order_id": pc.if_else(
                pa.array(purchase),
                pc.binary_join_element_wise("o", pc.cast(ids, pa.string()), ""),
                pa.scalar(None, pa.string()),
            ),
            "channel": pa.array(rng.choice(np.array(["app", "web", "mini"]), n)),
            "ingested_at": pa.array(
                np.full(n, int(END.timestamp() * 1e6)), pa.timestamp("us", tz="UTC")
            ),
        }
        table = pa.table(
            {f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in LAKE_SCHEMA},
            schema=LAKE_SCHEMA,
        )
        lake.append(table, prefix="bench")


def _vm_hwm(pid: int) -> int:
    """Peak resident set size of ``pid`` in bytes (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def child(home: Path, engine: str, collect: bool) -> None:
    """Run the build in this process and print one JSON line of figures."""
    from memberwise.config import Engine, Settings
    from memberwise.jobs.build import run_build
    from memberwise.kit import warehouse
    from memberwise.runtime import Runtime

    if collect:  # the pre-issue-19 path: the result through the driver into one file
        warehouse._spark_write = warehouse._arrow_write  # type: ignore[assignment]
    jvm_peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            for pid in _children(os.getpid()):
                jvm_peak[0] = max(jvm_peak[0], _vm_hwm(pid))

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    settings = Settings(home=home, engine=Engine(engine))
    runtime = Runtime.open(settings)
    program = runtime.program()
    started = time.perf_counter()
    result = run_build(
        runtime, program, only=["profiles", "tags"], as_of=END, engine=Engine(engine)
    )
    wall = time.perf_counter() - started
    heap = 0
    if engine == "spark":
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        assert session is not None
        factory = session._jvm.java.lang.management.ManagementFactory  # type: ignore[union-attr]
        for pool in factory.getMemoryPoolMXBeans():
            if str(pool.getType()) == "Heap memory":
                heap += int(pool.getPeakUsage().getUsed())
    done.set()
    print(
        json.dumps(
            {
                "engine": engine,
                "collect": collect,
                "wall_s": round(wall, 1),
                "stages": {s.name: round(s.seconds, 1) for s in result.stages},
                "members": result.members,
                "events_read": result.events_read,
                "python_peak_mib": round(_vm_hwm(os.getpid()) / 2**20),
                "jvm_peak_rss_mib": round(jvm_peak[0] / 2**20),
                "jvm_heap_peak_mib": round(heap / 2**20),
            }
        ),
        flush=True,
    )


def prepare(home: Path, events: int, days: int) -> None:
    if (home / ".bench-ready").exists():
        return
    env = {**os.environ, "MEMBERWISE_HOME": str(home)}
    subprocess.run(
        [sys.executable, "-m", "memberwise.cli", "init", "--program", str(PROGRAM)],
        env=env,
        check=True,
        capture_output=True,
    )
    write_lake(home / "lake", events, max(events // 50, 1), days)
    (home / ".bench-ready").write_text("ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--home", type=Path, default=Path("/tmp/bench-spark-driver"))
    parser.add_argument("--collect", action="store_true", help="Also run the old write path.")
    parser.add_argument("--duckdb", action="store_true", help="Also run the build on DuckDB.")
    parser.add_argument("--child", nargs=3, metavar=("HOME", "ENGINE", "COLLECT"))
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], args.child[2] == "1")
        return
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    for events in args.events:
        home = args.home.with_name(f"{args.home.name}-{events}")
        started = time.perf_counter()
        prepare(home, events, args.days)
        print(f"{events:,} events: lake ready in {time.perf_counter() - started:.0f} s")
        runs = [("spark", False)]
        if args.collect:
            runs.append(("spark", True))
        if args.duckdb:
            runs.append(("duckdb", False))
        for engine, collect in runs:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(home), engine, "1" if collect else "0"],
                check=True,
                capture_output=True,
                text=True,
            )
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps({"events": events, **figures}), flush=True)


if __name__ == "__main__":
    main()
