"""Coupon targeting on Spark against the embedded path (issue 19): time, and how many rows
reach the Python driver, as the members grow.

    python benchmarks/spark_targeting.py --members 10000 100000 [--master local[2]]

For each size, a synthetic build (profiles, segments, tiers; the generator and the eight
campaigns of ``tests/recommend/test_targeting_spark.py``: tier, segment, category and uplift
limits, counts, budgets over fixed and per-member coupon values) is targeted by the embedded
:func:`memberwise.recommend.targeting.target` (which reads every member's profile into the
driver) and by :func:`memberwise.recommend.targeting_spark.target_on_spark` (members scored in
the executors, the driver reads what the executors wrote to the scratch: counted here). The
suggestions must be equal. ``--fixed`` keeps only the campaigns whose coupons have one value
(their choice is bounded by their counts and budgets alone). One Spark session serves every size
and is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402

from memberwise.kit.storage import Storage  # noqa: E402
from memberwise.kit.warehouse import spark_backend  # noqa: E402
from memberwise.recommend.targeting import target  # noqa: E402
from memberwise.recommend.targeting_spark import target_on_spark  # noqa: E402
from tests.recommend.test_targeting_spark import CAMPAIGNS, TEMPLATES, demo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument(
        "--fixed",
        action="store_true",
        help="only the campaigns whose coupons have one value (no uncapped percent coupon)",
    )
    args = parser.parse_args()
    campaigns = [
        c
        for c in CAMPAIGNS
        if not args.fixed
        or c.template not in TEMPLATES
        or TEMPLATES[c.template].kind != "percent_off"
        or TEMPLATES[c.template].max_discount is not None
    ]
    con = spark_backend(
        master=args.master,
        conf={"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "1g"},
    )
    read: list[int] = []
    original = Storage.read_table

    def counted(self: Storage, uri: Any, columns: Any = None) -> pa.Table:
        table = original(self, uri, columns)
        read.append(table.num_rows)
        return table

    Storage.read_table = counted  # type: ignore[method-assign]
    rows = []
    try:
        for members in args.members:
            with tempfile.TemporaryDirectory(prefix="bench-targeting-") as folder:
                directory = Path(folder)
                profiles, groups, tiers = demo(directory, members)
                began = time.perf_counter()
                expected, _ = target(profiles, campaigns, TEMPLATES, segments=groups, tiers=tiers)
                embedded = time.perf_counter() - began
                read.clear()
                began = time.perf_counter()
                got, _ = target_on_spark(con, directory, directory / "s", campaigns, TEMPLATES)
                spark = time.perf_counter() - began
                assert got.to_pylist() == expected.to_pylist(), "suggestions differ"
                rows.append((members, expected.num_rows, embedded, spark, sum(read), len(read)))
    finally:
        Storage.read_table = original  # type: ignore[method-assign]
        con._session.stop()
    print(
        f"load: {os.getloadavg()[0]:.1f} (1 min), master {args.master}, {len(campaigns)} campaigns"
    )
    print("| members | suggestions | embedded s | Spark s | rows read by the driver | reads |")
    print("| --- | --- | --- | --- | --- | --- |")
    for members, chosen, embedded, spark, total, reads in rows:
        print(f"| {members:,} | {chosen} | {embedded:.2f} | {spark:.1f} | {total:,} | {reads} |")


if __name__ == "__main__":
    main()
