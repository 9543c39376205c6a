"""Benchmark the build: the profile stage against one hand-written DuckDB query, on the lake as
``memberwise ingest`` leaves it and on the same lake compacted, and the whole ``memberwise
build`` (wall time, peak memory) on a demo platform.

    python benchmarks/build_profiles.py --members 200000 --days 120 --home /tmp/bench-build

The home is made once, as a user would: ``demo generate``, ``init``, ``ingest`` of the demo's
event files (one lake file per source file and day: 40 a day for 200,000 members) and
``members import``. A copy of it, ``<home>-compacted``, then gets ``memberwise lake compact``.
Then, alternating, ``--runs`` times each:

- ``hand SQL``: one DuckDB query over a lake's Parquet files, ``DISTINCT ON (event_id)`` over
  the whole lake, computing RFM and the count features per member (counts per type and
  window, units, spend, hour and weekday histograms, first/last times, distinct orders per
  window, recency and the R/F/M quintile scores), written to Parquet;
- ``profile stage``: ``memberwise build --only profiles`` (all 93 fields, details, breadth,
  affinity, price bands), in a subprocess; on the fresh lake the readers' record of which days
  overlap is deleted first, so every run pays the check a first build after ingest pays;
- ``ibis RFM+counts`` (compacted lake only): the hand query's features from the profile
  stage's own Ibis functions, written the same way.

Both builds' profiles are compared (they must be identical). Finally one full
``memberwise build`` on the fresh home, with its peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import ibis
import pyarrow.parquet as pq

from memberwise.kit.lake import OVERLAPS_FILE, EventLake
from memberwise.kit.warehouse import duckdb_backend, write_parquet
from memberwise.profiles import features as feat

BIN = Path(sys.executable).parent / "memberwise"
TYPES = feat.TYPE_STEMS


def run(cmd: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return done.stdout


def prepare(home: Path, members: int, days: int, env: dict[str, str]) -> Path:
    """The fresh home (``ingest``, no compaction) and its compacted copy; made once."""
    compacted = home.with_name(home.name + "-compacted")
    if (home / ".bench-ready").exists() and (compacted / ".bench-ready").exists():
        return compacted
    demo = home / "demo"
    print(f"preparing {home}: {members:,} members, {days} days", flush=True)
    gen = ["demo", "generate", "--members", str(members), "--days", str(days), "--out", str(demo)]
    run([str(BIN), *gen], env)
    run([str(BIN), "init"], env)
    started = time.perf_counter()
    run([str(BIN), "ingest", str(demo / "events"), "--json"], env)
    print(f"ingest {time.perf_counter() - started:.1f} s", flush=True)
    run([str(BIN), "members", "import", str(demo / "members.parquet")], env)
    shutil.rmtree(compacted, ignore_errors=True)
    shutil.copytree(home, compacted, symlinks=True)
    started = time.perf_counter()
    run([str(BIN), "lake", "compact"], {**env, "MEMBERWISE_HOME": str(compacted)})
    print(f"lake compact {time.perf_counter() - started:.1f} s", flush=True)
    (home / ".bench-ready").touch()
    (compacted / ".bench-ready").touch()
    return compacted


def hand_sql(files: list[Path], as_of: datetime, offset_hours: int) -> str:
    """The hand-written query: the whole lake deduplicated by ``event_id`` (any copy), one pass
    of conditional aggregates, distinct orders, quintiles."""
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
        FROM (SELECT DISTINCT ON (event_id) * FROM read_parquet([{listed}]))
        WHERE ts <= {clock}
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
    orders = feat.member_orders(feat.member_purchases(e))
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


def same_profiles(one: Path, other: Path) -> None:
    """Two builds' profiles hold the same rows (compared in member order)."""
    tables = [pq.read_table(d / "profiles.parquet").sort_by("member_id") for d in (one, other)]
    assert tables[0].equals(tables[1]), f"{one} and {other} differ"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=None, help="Default: events / 100.")
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--days", type=int, default=120)
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
    members = args.members or max(1, args.events // 100)
    compacted = prepare(home, members, args.days, env)
    lakes = {"fresh": EventLake(home / "lake"), "compacted": EventLake(compacted / "lake")}
    latest = lakes["fresh"].latest_ts()
    assert latest is not None and latest == lakes["compacted"].latest_ts()
    as_of = latest
    files = {name: lake.files() for name, lake in lakes.items()}
    out = home / "bench-out"
    out.mkdir(exist_ok=True)
    builds: dict[str, Path] = {}

    def hand(name: str) -> None:
        con = duckdb_backend(temp_dir=home / "tmp")
        sql = hand_sql(files[name], as_of, 8)
        con.con.execute(f"COPY ({sql}) TO '{out / 'hand.parquet'}' (FORMAT parquet)")
        con.disconnect()

    def ours() -> None:
        con = duckdb_backend(temp_dir=home / "tmp")
        write_parquet(con, ibis_rfm(con, lakes["compacted"], as_of, 8), out / "ibis.parquet")
        con.disconnect()

    def stage(name: str) -> None:
        lake_home = home if name == "fresh" else compacted
        (lake_home / "lake" / "_manifest" / OVERLAPS_FILE).unlink(missing_ok=True)
        cmd = [str(BIN), "build", "--only", "profiles", "--as-of", as_of.isoformat(), "--json"]
        summary = json.loads(run(cmd, {**env, "MEMBERWISE_HOME": str(lake_home)}))
        builds[name] = Path(summary["directory"])

    jobs: dict[str, Any] = {
        "hand SQL, fresh": lambda: hand("fresh"),
        "stage, fresh": lambda: stage("fresh"),
        "hand SQL, compacted": lambda: hand("compacted"),
        "stage, compacted": lambda: stage("compacted"),
        "ibis RFM+counts, compacted": ours,
    }
    times: dict[str, list[float]] = {name: [] for name in jobs}
    loads: list[float] = []
    for n in range(args.runs):
        for name, job in jobs.items():
            times[name].append(timed(job))
        loads.append(os.getloadavg()[0])
        print(
            f"run {n + 1} (load {loads[-1]:.1f}): "
            + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()),
            flush=True,
        )
    if args.runs:
        same_profiles(builds["fresh"], builds["compacted"])
        counts = [
            pq.ParquetFile(out / n).metadata.num_rows for n in ("hand.parquet", "ibis.parquet")
        ]
        assert counts[0] == counts[1], counts
        medians = {k: statistics.median(v) for k, v in times.items()}
        events = sum(pq.ParquetFile(p).metadata.num_rows for p in files["compacted"])
        print(
            f"\n{events:,} events; {len(files['fresh']):,} files fresh, "
            f"{len(files['compacted']):,} compacted; as of {as_of.isoformat()}; "
            f"load {min(loads):.1f}-{max(loads):.1f}"
        )
        for name, value in medians.items():
            base = medians["hand SQL, fresh" if "fresh" in name else "hand SQL, compacted"]
            print(
                f"{name:>27}: median {value:6.1f} s   ratio to its hand SQL {value / base:4.2f} x"
            )
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
