"""Training and scoring time of the recommender on a synthetic platform.

Usage: ``python benchmarks/recommend_train.py [--members 1000000] [--items 100000]
[--per-member 20] [--n 20] [--seed 7] [--max-train-members 20000] [--scoring-threads 2]``

Makes a seeded synthetic event table (members with one of 500 taste clusters, items in
clusters with Zipf popularity, ~``per-member`` item events each over 90 days: 70 % views, 10 %
carts, 5 % favourites, 15 % purchases, 1,000 categories, 34 regions), then times
``from_events``, ``Recommender.fit`` (ranker on a time split + every source) and
``recommend`` for every member, and prints the figures as JSON: wall seconds and CPU seconds of
this process (all its threads; on a shared machine the CPU figure is the steadier one).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pyarrow as pa

from memberwise.recommend.interactions import from_events
from memberwise.recommend.model import Recommender, RecommenderConfig

CLUSTERS = 500
CATEGORIES = 1_000
REGIONS = 34
DAYS = 90
END = datetime(2026, 6, 1, tzinfo=UTC)


def synthetic_events(members: int, items: int, per_member: float, seed: int) -> pa.Table:
    """The synthetic event table (see the module docstring)."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(per_member, members)
    n = int(counts.sum())
    member = np.repeat(np.arange(members), counts)
    taste = rng.integers(0, CLUSTERS, members)
    item_cluster = rng.integers(0, CLUSTERS, items)
    by_cluster = np.argsort(item_cluster, kind="stable")
    starts = np.searchsorted(item_cluster[by_cluster], np.arange(CLUSTERS + 1))
    # Within a cluster, Zipf-like popularity: pick rank r with probability ~ 1 / (r + 1).
    size = np.diff(starts)[taste[member]]
    u = rng.random(n)
    rank = np.minimum((np.exp(u * np.log(size + 1.0)) - 1).astype(np.int64), size - 1)
    item = by_cluster[starts[taste[member]] + rank]
    stray = rng.random(n) < 0.2
    global_rank = np.minimum(
        (np.exp(rng.random(int(stray.sum())) * np.log(items + 1.0)) - 1).astype(np.int64),
        items - 1,
    )
    item[stray] = global_rank
    kind = rng.choice(
        np.array(["view", "cart", "favorite", "purchase"]), n, p=[0.70, 0.10, 0.05, 0.15]
    )
    end_us = int(END.timestamp() * 1_000_000)
    ts = end_us - (rng.random(n) * DAYS * 86_400_000_000).astype(np.int64)
    category = (item * 7919) % CATEGORIES
    price = 100 * (1 + (item * 31) % 500)
    region = rng.integers(0, REGIONS, members)[member]
    member_ids = pa.array([f"m{i:07d}" for i in range(members)]).take(pa.array(member))
    item_ids = pa.array([f"i{i:06d}" for i in range(items)]).take(pa.array(item))
    cat_ids = pa.array([f"c{i:04d}" for i in range(CATEGORIES)]).take(pa.array(category))
    region_ids = pa.array([f"r{i:02d}" for i in range(REGIONS)]).take(pa.array(region))
    return pa.table(
        {
            "member_id": member_ids,
            "type": pa.array(kind),
            "ts": pa.array(ts).cast(pa.timestamp("us", tz="UTC")),
            "item_id": item_ids,
            "category_id": cat_ids,
            "price": pa.array(price, pa.int64()),
            "region": region_ids,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--per-member", type=float, default=20.0)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--max-train-members",
        type=int,
        default=RecommenderConfig.max_train_members,
        help="Ranker training sample (default: RecommenderConfig's).",
    )
    parser.add_argument(
        "--scoring-threads",
        type=int,
        default=RecommenderConfig.scoring_threads,
        help="Batches scored at once (default: RecommenderConfig's).",
    )
    args = parser.parse_args()

    out: dict[str, object] = {"members": args.members, "items": args.items}
    began = time.perf_counter()
    events = synthetic_events(args.members, args.items, args.per_member, args.seed)
    out["events"] = events.num_rows
    out["generate_s"] = round(time.perf_counter() - began, 1)

    began, cpu = time.perf_counter(), time.process_time()
    data = from_events(events, now=END)
    out["from_events_s"] = round(time.perf_counter() - began, 1)
    out["from_events_cpu_s"] = round(time.process_time() - cpu, 1)
    del events

    config = RecommenderConfig(
        seed=args.seed,
        max_train_members=args.max_train_members,
        scoring_threads=args.scoring_threads,
    )
    began, cpu = time.perf_counter(), time.process_time()
    model = Recommender(config).fit(data)
    out["fit_s"] = round(time.perf_counter() - began, 1)
    out["fit_cpu_s"] = round(time.process_time() - cpu, 1)
    out["ranker"] = model.ranker.kind
    out["ranker_training_s"] = model.info["ranker_seconds"]
    out["sources_fit_s"] = round(model.info["fit_seconds"] - model.info["ranker_seconds"], 1)
    out["ranker_groups"] = model.ranker.train_info.get("groups")
    out["ranker_rounds"] = model.ranker.train_info.get("rounds")

    began, cpu = time.perf_counter(), time.process_time()
    recs = model.recommend(n=args.n)
    out["recommend_s"] = round(time.perf_counter() - began, 1)
    out["recommend_cpu_s"] = round(time.process_time() - cpu, 1)
    out["rows"] = recs.num_rows
    out["total_s"] = round(
        float(out["from_events_s"]) + float(out["fit_s"]) + float(out["recommend_s"]),
        1,  # type: ignore[arg-type]
    )
    out["cores"] = os.cpu_count()
    out["load_average_1m"] = round(os.getloadavg()[0], 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
