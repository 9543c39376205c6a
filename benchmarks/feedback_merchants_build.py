"""Time the feedback and merchants stages' analytics on a demo platform's events (DuckDB).

    python benchmarks/feedback_merchants_build.py DEMO_DIR [--repeat 3]

DEMO_DIR is the output of ``memberwise demo generate`` (its ``events/*.parquet``). Prints, as
medians of ``--repeat`` runs: a baseline scan (count events per type and merchant: the least any
per-event stage costs on these files), the DSR scorecards, the feedback topics (distinct texts
scored in Python once, the rest in DuckDB; jieba's one-off dictionary load is printed apart) and
the rising test; events per second and each
one's ratio to the baseline, and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path

import ibis
import pyarrow.parquet as pq

from memberwise.feedback.analysis import (
    complaint_counts,
    feedback_events,
    negative_mentions,
    rising,
    score_texts,
    topics,
)
from memberwise.feedback.sentiment import shipped_model
from memberwise.feedback.text import Segmenter
from memberwise.merchants.scorecard import counted_ratings, industries, scorecards, service_rates
from memberwise.program.merchants import MerchantSettings


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("demo", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    files = sorted((args.demo / "events").glob("*.parquet"))
    n_events = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    con = ibis.duckdb.connect()
    events = con.read_parquet([str(f) for f in files])
    parents = con.read_parquet(args.demo / "categories.parquet").select("category_id", "parent_id")
    as_of = events.ts.max().to_pyarrow().as_py().astimezone(UTC)
    settings = MerchantSettings()
    model = shipped_model()
    load_before = os.getloadavg()[0]

    def baseline() -> object:
        return con.to_pyarrow(events.group_by(["type", "merchant_id"]).aggregate(n=events.count()))

    def merchants() -> object:
        ratings = counted_ratings(events, as_of=as_of, settings=settings)
        rates = service_rates(events, as_of=as_of, days=30)
        industry = industries(events, parents, as_of=as_of, days=180)
        return con.to_pyarrow(scorecards(ratings, rates, industry, shrinkage=20.0))

    started = time.perf_counter()
    segmenter = Segmenter()  # once per build: jieba loads its dictionary
    setup = time.perf_counter() - started

    def feedback() -> object:
        fb = feedback_events(events, as_of=as_of, days=90)
        texts = con.to_pyarrow(fb.select("text").distinct()).column("text").to_pylist()
        scored = ibis.memtable(score_texts(sorted(texts), model, segmenter))
        return con.to_pyarrow(topics(negative_mentions(fb, scored)))

    def rising_test() -> object:
        return [
            rising(con.to_pyarrow(complaint_counts(events, as_of=as_of, level=level)))
            for level in ("item_id", "merchant_id")
        ]

    results = {}
    base = median_seconds(baseline, args.repeat)
    for name, run in (("merchants", merchants), ("feedback", feedback), ("rising", rising_test)):
        seconds = median_seconds(run, args.repeat)
        results[name] = {
            "median_s": round(seconds, 3),
            "events_per_s": round(n_events / seconds),
            "ratio_to_baseline": round(seconds / base, 2),
        }
    print(
        json.dumps(
            {
                "events": n_events,
                "as_of": as_of.isoformat(),
                "baseline_scan_s": round(base, 3),
                "segmenter_setup_s": round(setup, 3),
                "stages": results,
                "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "cores": os.cpu_count(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
