"""Bulk ingest as a user runs it: ``memberwise ingest FILE`` against DuckDB's own COPY.

Generates a realistic event file (INPUT_SCHEMA; Taobao-like type mix, ``--members`` members,
~1 M items, 120 days, time-ordered like an exported log) as Parquet, and the same rows as CSV
and JSON Lines (times as ISO-8601 text). Then, per format and as the median of ``--repeat``
interleaved runs, times:

(a) the ``memberwise ingest FILE --json`` command in a subprocess, on a home set up with
    ``memberwise init`` (SQLite, or a fresh PostgreSQL database with ``--database-url``) whose
    store knows none of the members, so start-up, validation, the lake files and the set-based
    registration of every member are all on the clock; and
(b) ``COPY (SELECT * FROM read_X(file)) TO 'out.parquet'`` in DuckDB (read_parquet, read_csv,
    read_json), the baseline, in this process (no start-up).

The ratio is (b) / (a): 0.5 means the command takes twice as long as DuckDB's COPY.

    python benchmarks/ingest_bulk.py --rows 5000000 --members 200000
    python benchmarks/ingest_bulk.py --database-url postgresql+psycopg://postgres@127.0.0.1:55432/x
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import create_engine, make_url, text

from memberwise.events.schemas import INPUT_SCHEMA

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


def _chunk(rng: np.random.Generator, n: int, t0: int, t1: int, members_n: int) -> pa.Table:
    """``n`` events of ``members_n`` members with times in [t0, t1) microseconds, by time."""
    types = rng.choice(list(TYPE_MIX), size=n, p=np.array(list(TYPE_MIX.values())))
    ts = np.sort(rng.integers(t0, t1, size=n))
    members = rng.integers(0, members_n, size=n)
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


def generate(path: Path, rows: int, *, members: int = 200_000, seed: int = 7) -> None:
    """Write ``rows`` synthetic events of ``members`` members to one Parquet file
    (INPUT_SCHEMA), in time order."""
    rng = np.random.default_rng(seed)
    t_start = int(START.timestamp() * 1_000_000)
    span = DAYS * 86_400 * 1_000_000
    chunks = max(1, -(-rows // CHUNK))
    with pq.ParquetWriter(path, INPUT_SCHEMA, compression="snappy") as writer:
        for i in range(chunks):
            n = min(CHUNK, rows - i * CHUNK)
            t0 = t_start + span * i // chunks
            t1 = t_start + span * (i + 1) // chunks
            writer.write_table(_chunk(rng, n, t0, t1, members), row_group_size=122_880)


#: Per format: the DuckDB table function reading it.
READERS = {"parquet": "read_parquet", "csv": "read_csv", "jsonl": "read_json"}


def write_text_formats(src: Path, formats: list[str]) -> dict[str, Path]:
    """The Parquet file's rows as CSV (with a header) and JSON Lines, times as ISO-8601."""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute("SET TimeZone = 'UTC'")
    rows = (
        f"SELECT * REPLACE (strftime(ts, '%Y-%m-%dT%H:%M:%S.%fZ') AS ts) FROM read_parquet('{src}')"
    )
    files = {"parquet": src}
    if "csv" in formats:
        files["csv"] = src.with_suffix(".csv")
        con.execute(f"COPY ({rows}) TO '{files['csv']}' (HEADER)")
    if "jsonl" in formats:
        files["jsonl"] = src.with_suffix(".jsonl")
        as_json = f"SELECT * REPLACE (json(properties) AS properties) FROM ({rows})"
        con.execute(f"COPY ({as_json}) TO '{files['jsonl']}' (FORMAT json)")
    con.close()
    return files


class Home:
    """A memberwise home for one timed run: a fresh lake and SQLite file, or a fresh
    PostgreSQL database named after ``--database-url``."""

    def __init__(
        self, root: Path, command: list[str], database_url: str | None, trace: bool = False
    ) -> None:
        self.root = root
        self.command = command
        self.database_url = database_url
        self.trace = trace

    def env(self) -> dict[str, str]:
        env = {**os.environ, "MEMBERWISE_HOME": str(self.root)}
        if self.trace:
            env["MEMBERWISE_INGEST_TRACE"] = "1"
        if self.database_url:
            env["MEMBERWISE_DATABASE_URL"] = self.database_url
        return env

    def reset(self) -> None:
        """An empty home, set up as a user would (``memberwise init``)."""
        shutil.rmtree(self.root, ignore_errors=True)
        if self.database_url:
            url = make_url(self.database_url)
            admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{url.database}"'))
            admin.dispose()
        subprocess.run([*self.command, "init"], env=self.env(), check=True, capture_output=True)

    def members(self) -> int:
        url = self.database_url or f"sqlite:///{self.root / 'memberwise.sqlite'}"
        engine = create_engine(url)
        with engine.connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM members")).scalar_one()
        engine.dispose()
        return int(count)


class StoreCpu:
    """CPU seconds of the PostgreSQL backends serving ``database`` while a command runs, when
    the server runs on this machine (its processes under /proc): the store's share of the two
    cores, which the command's own CPU does not count. Sampled every 0.2 s (a backend's last
    fraction of a second after the final sample is missed; registration ends before the pass).
    """

    def __init__(self, database: str) -> None:
        self.tag = f" {database} ".encode()
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.tick = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> StoreCpu:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())

    def _poll(self) -> None:
        while not self.stop.wait(0.2):
            self._sample()

    def _sample(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                if pid not in self.seen:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if not (cmdline.startswith(b"postgres: ") and self.tag in cmdline):
                        continue
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone, or not ours to read
                continue
            self.seen[pid] = (int(fields[11]) + int(fields[12])) / self.tick


def _local_pg(database_url: str | None) -> str | None:
    """The database name when ``database_url`` is a PostgreSQL server on this machine."""
    if not database_url:
        return None
    url = make_url(database_url)
    local = url.host in ("127.0.0.1", "localhost", "::1", None)
    return url.database if local and Path("/proc/self/stat").exists() else None


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def time_command(
    home: Home, path: Path, rows: int, members: int
) -> tuple[float, float, float | None]:
    """Seconds (wall, CPU, the local PostgreSQL server's CPU or None) of ``memberwise ingest
    PATH --json`` on a fresh home; checks what it did."""
    home.reset()
    os.sync()  # start each timed run without the previous run's dirty pages
    database = _local_pg(home.database_url)
    store = StoreCpu(database) if database else None
    cpu = _cpu(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with store if store is not None else contextlib.nullcontext():
        done = subprocess.run(
            [*home.command, "ingest", str(path), "--json"],
            env=home.env(),
            capture_output=True,
            text=True,
        )
    elapsed = time.perf_counter() - started
    cpu = _cpu(resource.RUSAGE_CHILDREN) - cpu
    if done.returncode != 0:
        raise SystemExit(f"ingest failed ({done.returncode}): {done.stdout}{done.stderr}")
    result = json.loads(done.stdout)
    if home.trace:  # the command's phase timeline (memberwise.events.timeline)
        print("".join(f"    {line}\n" for line in done.stderr.splitlines() if "[ingest]" in line))
    registered = home.members()
    if result["accepted"] != rows or registered != members:
        raise SystemExit(
            f"{path.name}: accepted {result['accepted']:,} of {rows:,} rows, "
            f"registered {registered:,} of {members:,} members"
        )
    return elapsed, cpu, store.seconds if store is not None else None


def time_copy(fmt: str, path: Path, work: Path) -> tuple[float, float]:
    """Seconds (wall, CPU) of DuckDB reading ``path`` with its reader and writing one Parquet
    file."""
    out = work / "copy.parquet"
    out.unlink(missing_ok=True)
    os.sync()
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    cpu = _cpu(resource.RUSAGE_SELF)
    started = time.perf_counter()
    con.execute(f"COPY (SELECT * FROM {READERS[fmt]}('{path}')) TO '{out}' (FORMAT parquet)")
    elapsed = time.perf_counter() - started
    cpu = _cpu(resource.RUSAGE_SELF) - cpu
    con.close()
    out.unlink(missing_ok=True)
    return elapsed, cpu


def load() -> str:
    """The 1, 5 and 15 minute load averages (the machine may be shared)."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--members", type=int, default=200_000)
    parser.add_argument("--formats", default="parquet,csv,jsonl")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="PostgreSQL (dropped, recreated)")
    parser.add_argument(
        "--command",
        default=None,
        help="the memberwise command (default: `python -m memberwise`, which runs "
        "memberwise.entry:main like the console script pyproject.toml declares; a console "
        "script installed before that entry point existed imports the whole CLI, seconds of "
        "start-up)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="print each command run's phase timeline (wall, CPU, per-thread CPU)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="generate the files into this directory, or reuse them if it holds them already",
    )
    args = parser.parse_args()
    formats = [f for f in args.formats.split(",") if f]

    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mw-bench-", dir=args.workdir))
    try:
        started = time.perf_counter()
        if args.data is not None:
            args.data.mkdir(parents=True, exist_ok=True)
            src = args.data / f"events-{args.rows}-{args.members}.parquet"
            if not src.exists():
                generate(src, args.rows, members=args.members)
            files = {f: src.with_suffix(".csv" if f == "csv" else f".{f}") for f in formats}
            missing = [f for f in formats if not files[f].exists()]
            if missing:
                files.update(write_text_formats(src, missing))
        else:
            src = work / "events.parquet"
            generate(src, args.rows, members=args.members)
            files = write_text_formats(src, formats)
        con = duckdb.connect()
        [(members,)] = con.sql(f"SELECT count(DISTINCT member_id) FROM '{src}'").fetchall()
        con.close()
        store = make_url(args.database_url).get_backend_name() if args.database_url else "sqlite"
        print(
            f"generated {args.rows:,} rows of {members:,} members "
            f"({', '.join(f'{f} {files[f].stat().st_size / 1e6:,.0f} MB' for f in formats)}) "
            f"in {time.perf_counter() - started:.0f} s; cpus={os.cpu_count()}; store={store}; "
            f"load {load()}"
        )
        command = [args.command] if args.command else [sys.executable, "-m", "memberwise"]
        home = Home(work / "home", command, args.database_url, args.trace)
        ours: dict[str, list[tuple[float, float]]] = {f: [] for f in formats}
        plain: dict[str, list[tuple[float, float]]] = {f: [] for f in formats}
        served: dict[str, list[float]] = {f: [] for f in formats}  # the local server's CPU
        # Interleaved, so both see the same machine (a shared VM's speed drifts over minutes).
        for i in range(args.repeat):
            for fmt in formats:
                wall, cpu, store_cpu = time_command(home, files[fmt], args.rows, members)
                ours[fmt].append((wall, cpu))
                plain[fmt].append(time_copy(fmt, files[fmt], work))
                (a, a_cpu), (b, b_cpu) = ours[fmt][-1], plain[fmt][-1]
                store = ""
                if store_cpu is not None:
                    served[fmt].append(store_cpu)
                    store = f" + PostgreSQL {store_cpu:4.1f} s CPU"
                print(
                    f"run {i + 1} {fmt:8}: memberwise ingest {a:6.2f} s ({a_cpu:5.1f} s CPU"
                    f"{store}), COPY {b:6.2f} s ({b_cpu:5.1f} s CPU)  load {load()}",
                    flush=True,
                )
        # Medians of wall time (what the issue asks) and of CPU time (steadier when the
        # machine is shared: it does not count the time other processes held the cores).
        print(
            f"{'format':8} {'ingest s':>9} {'events/s':>11} {'COPY s':>8} {'ratio':>6}"
            f" {'ingest CPU s':>13} {'COPY CPU s':>11} {'CPU ratio':>10}"
            + (f" {'PostgreSQL CPU s':>17}" if any(served.values()) else "")
        )
        for fmt in formats:
            a, b = (statistics.median(w for w, _ in runs) for runs in (ours[fmt], plain[fmt]))
            ac, bc = (statistics.median(c for _, c in runs) for runs in (ours[fmt], plain[fmt]))
            print(
                f"{fmt:8} {a:9.2f} {args.rows / a:11,.0f} {b:8.2f} {b / a:6.2f}x"
                f" {ac:13.1f} {bc:11.1f} {bc / ac:9.2f}x"
                + (f" {statistics.median(served[fmt]):17.1f}" if served[fmt] else "")
            )
        print(f"load at the end {load()}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
