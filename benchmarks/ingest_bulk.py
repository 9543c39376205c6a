"""Bulk ingest throughput: our end-to-end ``ingest_paths`` against a plain DuckDB Parquet COPY.

Generates a realistic Parquet event file (INPUT_SCHEMA; Taobao-like type mix, ~100 k members,
~1 M items, 120 days, time-ordered like an exported log), then times, as the median of
``--repeat`` interleaved runs: (a) ``ingest_paths`` into a fresh lake with a no-op member
callback, and (b) ``COPY (SELECT * FROM read_parquet(src)) TO 'out.parquet'``.

    python benchmarks/ingest_bulk.py --rows 10000000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memberwise.events.bulk import ingest_paths
from memberwise.events.schemas import INPUT_SCHEMA
from memberwise.kit.lake import EventLake

#: Taobao UserBehavior's mix (pv 89.6 %, cart 5.5 %, fav 2.9 %, buy 2.0 %) plus a little of the
#: other kinds a platform sends.
TYPE_MIX: dict[str, float] = {
    "view": 0.870,
    "cart": 0.053,
    "favorite": 0.028,
    "purchase": 0.019,
    "search": 0.020,
    "login": 0.005,
    "review": 0.002,
    "refund": 0.002,
    "service": 0.001,
}
CHANNELS = ("app", "web", "mini_program")
START = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 120
CHUNK = 1_000_000


def _hex_ids(rng: np.random.Generator, n: int, nbytes: int) -> pa.Array:
    """``n`` random lowercase hex strings of ``2 * nbytes`` characters (UUID-like ids)."""
    raw = rng.integers(0, 16, size=(n, 2 * nbytes), dtype=np.uint8)
    chars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[raw]
    return pa.array(chars.view(f"S{2 * nbytes}").ravel()).cast(pa.string())


def _prefixed(prefix: str, values: np.ndarray) -> pa.Array:
    """Numeric ids as strings with a prefix (``"m" + "1000123"``)."""
    return pc.binary_join_element_wise(prefix, pa.array(values).cast(pa.string()), "")


def _chunk(rng: np.random.Generator, n: int, t0: int, t1: int) -> pa.Table:
    """``n`` events with times in [t0, t1) microseconds, sorted by time."""
    types = rng.choice(list(TYPE_MIX), size=n, p=np.array(list(TYPE_MIX.values())))
    ts = np.sort(rng.integers(t0, t1, size=n))
    members = (rng.zipf(1.3, size=n) * 7919 + rng.integers(0, 100_000, size=n)) % 100_000
    items = (rng.zipf(1.2, size=n) * 104_729 + rng.integers(0, 1_000_000, size=n)) % 1_000_000
    is_item = ~np.isin(types, ["search", "login", "service"])
    is_order = np.isin(types, ["purchase", "refund"])
    with_price = np.isin(types, ["cart", "purchase", "refund"])
    price = np.where(with_price, (rng.lognormal(8.5, 1.2, size=n)).astype(np.int64), 0)
    quantity = np.where(with_price, rng.integers(1, 4, size=n), 0).astype(np.int32)
    rating = rng.integers(1, 6, size=n).astype(np.int32)
    brand = items % 20_000
    props_mask = rng.random(n) < 0.01

    def masked(values: pa.Array, keep: np.ndarray) -> pa.Array:
        return pc.if_else(pa.array(keep), values, pa.nulls(n, values.type))

    columns = {
        "event_id": _hex_ids(rng, n, 16),
        "member_id": _prefixed("m", members + 10_000_000),
        "type": pa.array(types).cast(pa.string()),
        "ts": pa.array(ts, type=pa.timestamp("us", tz="UTC")),
        "item_id": masked(_prefixed("", items + 500_000_000), is_item),
        "category_id": masked(_prefixed("c", items % 9_439 + 100_000), is_item),
        "brand": masked(_prefixed("b", brand), is_item & (brand % 5 != 0)),
        "merchant_id": masked(_prefixed("s", items % 50_000 + 1_000_000), is_item),
        "price": masked(pa.array(price), with_price),
        "quantity": masked(pa.array(quantity), with_price),
        "order_id": masked(_prefixed("o", rng.integers(10**15, 10**16, size=n)), is_order),
        "channel": pa.array(np.array(CHANNELS)[rng.integers(0, 3, size=n)]).cast(pa.string()),
        "query": masked(_prefixed("q", items % 5_000), types == "search"),
        "rating": masked(pa.array(rating), types == "review"),
        "text": masked(pa.array(np.full(n, "fast delivery, as described")), types == "review"),
        "region": _prefixed("CN-", rng.integers(11, 66, size=n)),
        "properties": masked(pa.array(np.full(n, '{"ab":"b","src":"push"}')), props_mask),
    }
    return pa.table(columns).cast(INPUT_SCHEMA)


def generate(path: Path, rows: int, *, seed: int = 7) -> None:
    """Write ``rows`` synthetic events to one Parquet file (INPUT_SCHEMA), in time order."""
    rng = np.random.default_rng(seed)
    t_start = int(START.timestamp() * 1_000_000)
    span = DAYS * 86_400 * 1_000_000
    chunks = max(1, -(-rows // CHUNK))
    with pq.ParquetWriter(path, INPUT_SCHEMA, compression="snappy") as writer:
        for i in range(chunks):
            n = min(CHUNK, rows - i * CHUNK)
            t0 = t_start + span * i // chunks
            t1 = t_start + span * (i + 1) // chunks
            writer.write_table(_chunk(rng, n, t0, t1), row_group_size=122_880)


def _time_ingest(src: Path, work: Path) -> float:
    lake_root = work / "lake"
    shutil.rmtree(lake_root, ignore_errors=True)
    shutil.rmtree(work / "deadletter", ignore_errors=True)
    os.sync()  # start each timed run without the previous run's dirty pages
    started = time.perf_counter()
    result = ingest_paths(
        [src], EventLake(lake_root), deadletter_dir=work / "deadletter", on_members=lambda _: None
    )
    elapsed = time.perf_counter() - started
    if result.failed_files or result.accepted == 0:
        raise SystemExit(f"ingest failed: {result}")
    return elapsed


def _time_copy(src: Path, work: Path) -> float:
    out = work / "out.parquet"
    out.unlink(missing_ok=True)
    os.sync()
    con = duckdb.connect()
    started = time.perf_counter()
    con.execute(f"COPY (SELECT * FROM read_parquet('{src}')) TO '{out}' (FORMAT parquet)")
    elapsed = time.perf_counter() - started
    con.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the generated file")
    args = parser.parse_args()

    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mw-bench-", dir=args.workdir))
    try:
        src = work / "events.parquet"
        started = time.perf_counter()
        generate(src, args.rows)
        size_mb = src.stat().st_size / 1e6
        print(
            f"generated {args.rows:,} rows ({size_mb:,.0f} MB) "
            f"in {time.perf_counter() - started:.1f} s; cpus={os.cpu_count()}"
        )
        # Interleaved, so both see the same machine (a shared VM's speed drifts over minutes).
        ours_runs, plain_runs = [], []
        for i in range(args.repeat):
            ours_runs.append(_time_ingest(src, work))
            plain_runs.append(_time_copy(src, work))
            print(f"run {i + 1}: ingest_paths {ours_runs[-1]:.2f} s, COPY {plain_runs[-1]:.2f} s")
        ours, plain = statistics.median(ours_runs), statistics.median(plain_runs)
        ours_rate, plain_rate = args.rows / ours, args.rows / plain
        print(f"ingest_paths : {ours:7.2f} s  {ours_rate:12,.0f} events/s")
        print(f"plain COPY   : {plain:7.2f} s  {plain_rate:12,.0f} rows/s")
        print(f"ratio        : {ours_rate / plain_rate:.2f} x plain COPY")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
