"""Recommendation serving latency: one uvicorn process, an open-loop load generator at a fixed
rate over loopback, p50/p99 and throughput.

Sets up a fresh embedded home (SQLite + lake in a temp dir) with a published model made of
synthetic lists (``--members`` members x ``--list-length`` items over ``--items`` items, each
item with 20 similar items, fallback lists by region and category) and the item catalog, then
starts the API as ``memberwise serve`` does (uvicorn, one worker). A separate process sends
``GET /v1/members/{id}/recommendations?n=20`` at ``--rate`` requests a second for
``--seconds`` seconds: open loop (a request is sent at its scheduled time whether or not
earlier ones have answered, and its latency counts from that time, so a stalled server is not
hidden by a waiting client). Requests mix known members (home page), item pages
(``context=item:{id}``, the similar-items lift) and unknown members (the fallback chain). As a
baseline in the same run, ``GET /health`` (no key, one ``SELECT 1``) is driven the same way.

    python benchmarks/recommend_serving.py --rate 500 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import loadgen
from memberwise.config import Settings
from memberwise.kit.db import make_engine, transaction
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import KeyCreate, Role
from memberwise.recommend import publishing
from memberwise.recommend.catalog import import_items
from memberwise.store import migrate

PII_KEY = "A" * 43 + "="
REGIONS = [f"r{i:02d}" for i in range(30)]


def _mid(i: int) -> str:
    return f"m{i:08d}"


def _iid(i: int) -> str:
    return f"i{i:07d}"


def write_synthetic_build(directory: Path, *, members: int, items: int, length: int) -> None:
    """A build directory with the recommendations stage's artifacts, random but plausible."""
    rng = np.random.default_rng(7)
    directory.mkdir(parents=True)
    member = np.repeat(np.arange(members), length)
    item = rng.zipf(1.3, members * length) % items
    score = np.tile(np.linspace(1.0, 0.1, length), members)
    sources = np.array(["repeat", "als", "cooc", "popular", "new"])
    pq.write_table(
        pa.table(
            {
                "member_id": pa.array([_mid(int(m)) for m in member]),
                "rank": pa.array(np.tile(np.arange(1, length + 1), members), pa.int32()),
                "item_id": pa.array([_iid(int(i)) for i in item]),
                "score": score,
                "reason": pa.array(["bought every 2 weeks"] * len(member)),
                "source": pa.array(sources[rng.integers(0, 5, len(member))].tolist()),
            }
        ),
        directory / publishing.RECOMMENDATIONS,
    )
    base = np.repeat(np.arange(items), 20)
    pq.write_table(
        pa.table(
            {
                "item_id": pa.array([_iid(int(i)) for i in base]),
                "rank": pa.array(np.tile(np.arange(1, 21), items), pa.int32()),
                "similar_item_id": pa.array(
                    [_iid(int(i)) for i in (base + rng.integers(1, items, len(base))) % items]
                ),
                "score": np.tile(np.linspace(0.9, 0.1, 20), items),
            }
        ),
        directory / publishing.SIMILAR,
    )
    keys = ["all", "new"] + [f"region:{r}" for r in REGIONS]
    keys += [f"category:c{c:02d}" for c in range(16)]
    keys += [f"region:{r}|category:c{c:02d}" for r in REGIONS for c in range(16)]
    rows: dict[str, list[Any]] = {"key": [], "rank": [], "item_id": [], "score": [], "reason": []}
    for key in keys:
        for rank, i in enumerate(rng.choice(items, 50, replace=False), start=1):
            rows["key"].append(key)
            rows["rank"].append(rank)
            rows["item_id"].append(_iid(int(i)))
            rows["score"].append(float(51 - rank))
            rows["reason"].append("popular right now")
    pq.write_table(
        pa.table({**rows, "rank": pa.array(rows["rank"], pa.int32())}),
        directory / publishing.FALLBACKS,
    )
    pq.write_table(
        pa.table(
            {
                "member_id": [_mid(m) for m in range(members)],
                "region": [REGIONS[m % len(REGIONS)] for m in range(members)],
                "top_category": [f"c{m % 16:02d}" for m in range(members)],
                "peak_hour": pa.array([m % 24 for m in range(members)], pa.int64()),
            }
        ),
        directory / "profiles.parquet",
    )
    manifest = {
        "build_id": "bench",
        "as_of": "2026-11-20T00:00:00+00:00",
        publishing.SECTION: {"model_id": "bench", "metrics": {}, "config": {}},
    }
    (directory / "build.json").write_text(json.dumps(manifest))


def catalog(items: int) -> pa.Table:
    return pa.table(
        {
            "item_id": [_iid(i) for i in range(items)],
            "title": [f"item {i}" for i in range(items)],
            "category_id": [f"c{i % 16:02d}{i % 7:02d}" for i in range(items)],
            "parent_category_id": [f"c{i % 16:02d}" for i in range(items)],
            "price": pa.array([1000 + i for i in range(items)], pa.int64()),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--list-length", type=int, default=50)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=1, help="Runs (the median p99 too).")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir(parents=True)
        env = {**os.environ, "MEMBERWISE_HOME": str(home), "MEMBERWISE_PII_KEY": PII_KEY}
        settings = Settings(home=home, pii_key=PII_KEY)  # type: ignore[arg-type]
        engine = make_engine(settings.db_url)
        migrate(engine)
        began = time.perf_counter()
        build = Path(tmp) / "build"
        write_synthetic_build(
            build, members=args.members, items=args.items, length=args.list_length
        )
        with transaction(engine) as conn:
            import_items(conn, catalog(args.items))
            outcome = publishing.publish_build(conn, build)
            key = privacy.create_key(conn, KeyCreate(role=Role.platform)).key
        engine.dispose()
        assert outcome is not None and outcome.published
        print(f"published {outcome.members:,} lists in {time.perf_counter() - began:.1f} s")

        headers = {"Authorization": f"Bearer {key}"}
        rng = random.Random(7)
        count = int(args.rate * args.seconds)
        paths = []
        for _ in range(count):
            roll = rng.random()
            member = _mid(rng.randrange(args.members))
            if roll < 0.8:
                paths.append(f"/v1/members/{member}/recommendations?n=20")
            elif roll < 0.95:
                item = _iid(rng.randrange(args.items))
                paths.append(f"/v1/members/{member}/recommendations?n=20&context=item:{item}")
            else:
                paths.append(f"/v1/members/new{rng.randrange(10**6)}/recommendations?n=20")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
        print(f"load average before: {os.getloadavg()[0]:.1f}")
        print(
            f"{args.members:,} members x {args.list_length} items, {args.items:,} items; "
            f"{args.rate:.0f} req/s offered for {args.seconds:.0f} s, open loop"
        )
        with loadgen.serve(env) as (port, pid):
            # Warm up: the key cache, the connections, SQLite's page cache.
            loadgen.run_load(port, paths[: int(args.rate * 2)], args.rate, headers)
            p99s = []
            for run in range(1, args.runs + 1):
                health = loadgen.run_load(port, ["/health"] * count, args.rate, server_pid=pid)
                recs = loadgen.run_load(port, paths, args.rate, headers, server_pid=pid)
                p99s.append(recs["p99"])
                print(f"-- run {run} (load average {os.getloadavg()[0]:.1f})")
                print(loadgen.line("GET /health (baseline)", health))
                print(loadgen.line("GET recommendations", recs))
                print(f"ratio p50 recommendations / health: {recs['p50'] / health['p50']:.2f}")
        print(f"== median p99 of recommendations: {statistics.median(p99s):.2f} ms")


if __name__ == "__main__":
    main()
