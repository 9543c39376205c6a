"""What finding abandoned carts costs at journey time, and why it reads only recent days.

Writes a lake of ``--days`` days with ``--events`` events a day (views, carts, purchases of
``--members`` members over ``--items`` items), then times, in the same process and alternating:

- ``recent``: :func:`memberwise.campaigns.carts.abandoned`, which reads only the day partitions
  of the trigger's window (7 days by default);
- ``whole lake``: the same query over every day of the lake (what a trigger reading
  ``lake.events_sql()`` would cost), the baseline.

Prints each run, the medians and their ratio; both must find the same carts.

    python benchmarks/journeys_carts.py --days 60 --events 100000 --runs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from memberwise.campaigns import carts
from memberwise.events.schemas import LAKE_SCHEMA
from memberwise.kit.lake import EventLake

END = datetime(2026, 12, 1, tzinfo=UTC)


def write_lake(lake: EventLake, days: int, per_day: int, members: int, items: int) -> None:
    rng = np.random.default_rng(17)
    for d in range(days):
        start = END - timedelta(days=days - d)
        n = per_day
        kinds = rng.choice(["view", "cart", "purchase"], n, p=[0.8, 0.15, 0.05])
        seconds = np.sort(rng.integers(0, 86_400, n))
        ts = [start + timedelta(seconds=int(s)) for s in seconds]
        data = {f.name: pa.nulls(n, f.type) for f in LAKE_SCHEMA}
        data["event_id"] = pa.array([f"e{d}-{i}" for i in range(n)])
        data["member_id"] = pa.array([f"m{m}" for m in rng.integers(0, members, n)])
        data["type"] = pa.array(kinds.tolist())
        data["item_id"] = pa.array([f"i{i}" for i in rng.integers(0, items, n)])
        data["ts"] = pa.array(ts, pa.timestamp("us", tz="UTC"))
        data["ingested_at"] = data["ts"]
        lake.append(pa.Table.from_pydict(data, schema=LAKE_SCHEMA), prefix="api")


def whole_lake(lake: EventLake, now: datetime, hours: float, days: int) -> list[tuple[str, str]]:
    """The same query over every partition (the baseline)."""
    original = carts._days
    try:
        carts._days = lambda lake_, start, end: lake_.partitions()  # type: ignore[assignment]
        return carts.abandoned(lake, now, hours=hours, days=days)
    finally:
        carts._days = original  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--events", type=int, default=100_000, help="events a day")
    parser.add_argument("--members", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lake = EventLake(Path(tmp))
        started = time.perf_counter()
        write_lake(lake, args.days, args.events, args.members, args.items)
        print(
            f"lake: {args.days} days x {args.events:,} events "
            f"({args.days * args.events:,}) written in {time.perf_counter() - started:.1f} s"
        )
        now = END
        times: dict[str, list[float]] = {"recent": [], "whole lake": []}
        found: dict[str, int] = {}
        for run in range(1, args.runs + 1):
            for name, fn in (
                ("recent", lambda: carts.abandoned(lake, now, hours=24, days=7)),
                ("whole lake", lambda: whole_lake(lake, now, 24, 7)),
            ):
                t0 = time.perf_counter()
                rows = fn()
                times[name].append(time.perf_counter() - t0)
                found[name] = len(rows)
                print(f"run {run} {name}: {times[name][-1]:.2f} s, {len(rows):,} abandoned carts")
        assert found["recent"] == found["whole lake"], found
        recent = statistics.median(times["recent"])
        whole = statistics.median(times["whole lake"])
        load = os.getloadavg()[0]
        print(
            f"median: recent days {recent:.2f} s, whole lake {whole:.2f} s "
            f"(x{whole / recent:.1f}); {found['recent']:,} carts; load {load:.1f}"
        )


if __name__ == "__main__":
    main()
