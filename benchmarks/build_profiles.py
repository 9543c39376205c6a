"""Benchmark the build: the profile stage against one hand-written DuckDB query, and the whole
``memberwise build`` (wall time, peak memory) on a demo platform.

    python benchmarks/build_profiles.py --events 100000000 --home /tmp/bench-build

The home is made once (demo generation, ingest, ``lake compact``, members import) and reused.
Then, alternating, ``--runs`` times each:

- ``hand SQL``: one DuckDB query over the lake's Parquet files computing RFM and the count
  features per member (counts per type and window, units, spend, hour and weekday histograms,
  first/last times, distinct orders per window, recency and the R/F/M quintile scores),
  written to Parquet;
- ``ibis RFM+counts``: the same features from the profile stage's own Ibis functions
  (``member_activity``, ``member_orders``, the quintile scores), written the same way;
- ``profile stage``: ``memberwise build --only profiles`` (all fields, details, breadth,
  affinity, price bands), in a subprocess.

Finally one full ``memberwise build`` in a subprocess, with its peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import ibis
import pyarrow.parquet as pq

from memberwise.kit.lake import EventLake
from memberwise.kit.warehouse import duckdb_backend, read_parquet, write_parquet
from memberwise.profiles import features as feat

BIN = Path(sys.executable).parent / "memberwise"
TYPES = feat.TYPE_STEMS


def run(cmd: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return done.stdout


def prepare(home: Path, events: int, env: dict[str, str]) -> None:
    if (home / ".bench-ready").exists():
        return
    demo = home / "demo"
    members = max(1, events // 100)
    print(f"preparing {home}: {members:,} members, ~{events:,} events", flush=True)
    run([str(BIN), "demo", "generate", "--members", str(members), "--out", str(demo)], env)
    run([str(BIN), "init"], env)
    run([str(BIN), "ingest", str(demo / "events"), "--json"], env)
    run([str(BIN), "lake", "compact"], env)
    run([str(BIN), "members", "import", str(demo / "members.parquet")], env)
    (home / ".bench-ready").touch()


def hand_sql(files: list[Path], as_of: datetime, offset_hours: int) -> str:
    """The hand-written query: one pass of conditional aggregates, distinct orders, quintiles."""
    listed = ", ".join(f"'{p}'" for p in files)
    clock = f"TIMESTAMPTZ '{as_of.isoformat()}'"
    aggs = []
    for days in (30, 90, 365):
        inside = f"age < {days}"
        aggs.append(f"count(*) FILTER (WHERE {inside}) AS events_{days}d")
        for stem, kind in TYPES.items():
            aggs.append(f"count(*) FILTER (WHERE {inside} AND type = '{kind}') AS {stem}_{days}d")
        bought = f"{inside} AND type = 'purchase'"
        aggs.append(f"coalesce(sum(units) FILTER (WHERE {bought}), 0) AS units_{days}d")
        aggs.append(f"coalesce(sum(amount) FILTER (WHERE {bought}), 0) AS spend_{days}d")
    for hour in range(24):
        aggs.append(f"count(*) FILTER (WHERE age < 90 AND hour = {hour}) AS h{hour}")
    for day in range(7):
        aggs.append(f"count(*) FILTER (WHERE age < 90 AND dow = {day}) AS d{day}")
    aggs += [
        "min(ts) AS first_seen",
        "max(ts) AS last_seen",
        "max(ts) FILTER (WHERE type = 'purchase') AS last_purchase",
        "count(*) AS lifetime_events",
    ]
    orders = ", ".join(
        f"count(*) FILTER (WHERE first_age < {d}) AS orders_{d}d" for d in (30, 90, 365)
    )
    return f"""
    WITH e AS (
        SELECT member_id, type, ts, coalesce(order_id, event_id) AS order_key,
               coalesce(quantity, 1)::BIGINT AS units,
               price::BIGINT * coalesce(quantity, 1) AS amount,
               (epoch({clock}) - epoch(ts))::BIGINT // 86400 AS age,
               hour(ts + INTERVAL {offset_hours} HOUR) AS hour,
               isodow(ts + INTERVAL {offset_hours} HOUR) - 1 AS dow
        FROM read_parquet([{listed}]) WHERE ts <= {clock}
    ),
    a AS (SELECT member_id, {", ".join(aggs)} FROM e GROUP BY member_id),
    o AS (
        SELECT member_id, {orders} FROM (
            SELECT member_id, order_key, min(age) AS first_age FROM e
            WHERE type = 'purchase' GROUP BY ALL
        ) GROUP BY member_id
    ),
    j AS (
        SELECT a.*, coalesce(o.orders_365d, 0) AS orders_365d_, o.* EXCLUDE (member_id),
               (epoch({clock}) - epoch(last_purchase))::BIGINT // 86400 AS recency_days
        FROM a LEFT JOIN o USING (member_id)
    )
    SELECT *,
        CASE WHEN orders_365d_ > 0 THEN least(5, 1 + floor(5 * percent_rank() OVER
            (PARTITION BY orders_365d_ > 0 ORDER BY -recency_days))) END AS r_score,
        CASE WHEN orders_365d_ > 0 THEN least(5, 1 + floor(5 * percent_rank() OVER
            (PARTITION BY orders_365d_ > 0 ORDER BY orders_365d_))) END AS f_score,
        CASE WHEN orders_365d_ > 0 THEN least(5, 1 + floor(5 * percent_rank() OVER
            (PARTITION BY orders_365d_ > 0 ORDER BY spend_365d))) END AS m_score
    FROM j
    """


def ibis_rfm(con: ibis.BaseBackend, lake: EventLake, as_of: datetime, offset: int) -> ibis.Table:
    """The same features from the profile stage's functions."""
    e = feat.prepare_events(lake.events_table(con), as_of=as_of, utc_offset=timedelta(hours=offset))
    a = feat.member_activity(e)
    orders = feat.member_orders(e)
    counts = orders.group_by("member_id").aggregate(**feat._window_counts(orders, "orders"))
    j = a.left_join(counts, "member_id").drop("member_id_right")
    j = j.mutate(
        orders_365d=j.orders_365d.fill_null(0),
        recency_days=feat._whole_days(feat._ts(as_of), j.last_purchase),
    )
    buyers = j.orders_365d > 0
    return j.mutate(
        r_score=feat._quintile(-j.recency_days, buyers),
        f_score=feat._quintile(j.orders_365d, buyers),
        m_score=feat._quintile(j.spend_365d, buyers),
    )


def timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def compare(times: dict[str, list[float]], files: list[Path], out: Path, as_of: datetime) -> None:
    """Check both outputs have every member, then print medians and ratios."""
    con = duckdb_backend()
    hand_rows = read_parquet(con, [out / "hand.parquet"]).count().to_pyarrow().as_py()
    ours_rows = read_parquet(con, [out / "ibis.parquet"]).count().to_pyarrow().as_py()
    assert hand_rows == ours_rows, (hand_rows, ours_rows)
    medians = {k: statistics.median(v) for k, v in times.items()}
    base = medians["hand SQL"]
    events = sum(pq.ParquetFile(p).metadata.num_rows for p in files)
    print(f"\n{events:,} events, {hand_rows:,} members, as of {as_of.isoformat()}")
    for name, value in medians.items():
        print(f"{name:>16}: median {value:6.1f} s   ratio to hand SQL {value / base:4.2f} x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--home", type=Path, default=Path("/tmp/bench-build"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-full", action="store_true", help="Skip the full build run.")
    args = parser.parse_args()
    home = args.home.absolute()
    env = {**os.environ, "MEMBERWISE_HOME": str(home)}
    # The demo program's tags make the tags stage do real work.
    program = Path(__file__).resolve().parents[1] / "programs" / "demo.yaml"
    env.setdefault("MEMBERWISE_PROGRAM_FILE", str(program))
    env.pop("MEMBERWISE_DATABASE_URL", None)
    prepare(home, args.events, env)
    lake = EventLake(home / "lake")
    latest = lake.latest_ts()
    assert latest is not None
    as_of = latest
    files = lake.files()
    out = home / "bench-out"
    out.mkdir(exist_ok=True)

    def hand() -> None:
        con = duckdb_backend(temp_dir=home / "tmp")
        sql = hand_sql(files, as_of, 8)
        con.con.execute(f"COPY ({sql}) TO '{out / 'hand.parquet'}' (FORMAT parquet)")
        con.disconnect()

    def ours() -> None:
        con = duckdb_backend(temp_dir=home / "tmp")
        write_parquet(con, ibis_rfm(con, lake, as_of, 8), out / "ibis.parquet")
        con.disconnect()

    def stage() -> None:
        cmd = [str(BIN), "build", "--only", "profiles", "--as-of", as_of.isoformat(), "--json"]
        run(cmd, env)

    times: dict[str, list[float]] = {"hand SQL": [], "ibis RFM+counts": [], "profile stage": []}
    for n in range(args.runs):
        times["hand SQL"].append(timed(hand))
        times["ibis RFM+counts"].append(timed(ours))
        times["profile stage"].append(timed(stage))
        print(f"run {n + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()))
    if args.runs:
        compare(times, files, out, as_of)
    if not args.skip_full:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        summary = json.loads(run([str(BIN), "build", "--as-of", as_of.isoformat(), "--json"], env))
        wall = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(f"\nfull build: {wall:.1f} s wall, peak RSS {max(peak, before) / 2**20:.2f} GiB")
        for stage_name, figures in summary["stages"].items():
            print(f"  {stage_name:<9} {figures['seconds']:7.1f} s  {figures['rows']:>12,} rows")


if __name__ == "__main__":
    main()
