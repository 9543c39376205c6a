"""Benchmark order placement with one coupon and points (``POST /v1/orders`` semantics: tier
lookup, coupon pricing and redemption, points spend allocated to lots, pending earn, audit row,
one transaction per order).

    python benchmarks/ledger_orders.py sqlite --orders 3000
    python benchmarks/ledger_orders.py postgres \\
        --url postgresql+psycopg://postgres@127.0.0.1:55450/postgres --clients 4

The program has a tier multiplier, so each order also asks the member's tier (the membership
domain's statement, within the order's first read, as the endpoint does); ``BENCH_TIERS=0``
benchmarks a program without tier rules (no lookup).

SQLite (WAL, synchronous=NORMAL, the store's defaults): one writer, ``--runs`` batches of
``--orders`` orders; prints each batch's orders/s and the median.

PostgreSQL: ``--clients`` client processes (one connection each, as pgbench's clients), each
placing orders for its own members, against ``pgbench -b tpcb-like`` with the same client
count on the same server, alternating ``--runs`` times; prints the medians and the ratio.
pgbench's tables are made in the same database (``pgbench -i``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, make_url, text

from memberwise.kit.db import make_engine, transaction
from memberwise.kit.time import utcnow
from memberwise.ledger import coupons, orders, points
from memberwise.ledger import service as ledger
from memberwise.ledger.schemas import OrderIn, OrderItem
from memberwise.members.repository import insert_seen
from memberwise.program.schemas import Program
from memberwise.store import metadata, migrate

PROGRAM = Program.model_validate(
    {
        "name": "bench",
        "points": {"tier_multipliers": {"gold": 2}}
        if os.environ.get("BENCH_TIERS", "1") == "1"
        else {},
        "coupons": {"bench": {"kind": "amount_off", "amount": 1000, "valid_days": 30}},
    }
)
COUPONS_PER_MEMBER = 4
POINTS_PER_ORDER = 500


def seed(engine: Engine, members: list[str]) -> None:
    """Members with points and COUPONS_PER_MEMBER coupons each (in chunks of 1,000)."""
    at = utcnow() - timedelta(minutes=5)
    for i in range(0, len(members), 1000):
        chunk = members[i : i + 1000]
        with transaction(engine) as conn:
            insert_seen(conn, chunk, at)
            for m in chunk:
                points.adjust(
                    conn,
                    PROGRAM,
                    m,
                    POINTS_PER_ORDER * COUPONS_PER_MEMBER,
                    reason="bench",
                    key=f"bench-seed:{m}",
                    at=at,
                )
            for k in range(COUPONS_PER_MEMBER):
                coupons.issue(conn, PROGRAM, "bench", chunk, key=f"bench:{k}", at=at)


def coupon_ids(engine: Engine, members: list[str]) -> dict[str, list[str]]:
    from memberwise.ledger.tables import coupons as table

    out: dict[str, list[str]] = {m: [] for m in members}
    with transaction(engine) as conn:
        rows = conn.execute(
            table.select().where(table.c.status == "issued").order_by(table.c.coupon_id)
        ).mappings()
        for r in rows:
            if r["member_id"] in out:
                out[r["member_id"]].append(r["coupon_id"])
    return out


def place_orders(engine: Engine, plan: list[tuple[str, str, str]]) -> int:
    """Place each (order id, member, coupon) order, one transaction each; the orders placed."""
    placed = 0
    for order_id, member_id, coupon_id in plan:
        body = OrderIn(
            order_id=order_id,
            member_id=member_id,
            items=[OrderItem(item_id="sku-1", category="food", price=8_800, quantity=1)],
            coupon_ids=[coupon_id],
            points=POINTS_PER_ORDER,
        )

        def work(conn: Any, body: OrderIn = body) -> Any:
            return orders.place_now(conn, PROGRAM, body)  # as POST /v1/orders does

        out, created = ledger.write(engine, work)
        assert created and out.coupon_discount == 1000 and out.points_used == POINTS_PER_ORDER
        placed += 1
    return placed


def plan_for(
    members: list[str], ids: dict[str, list[str]], k: int, tag: str
) -> list[tuple[str, str, str]]:
    return [(f"{tag}-{m}-{k}", m, ids[m][k]) for m in members]


# -- SQLite ------------------------------------------------------------------------------------


def bench_sqlite(orders_per_run: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.sqlite'}")
        migrate(engine)
        members = [f"b{i:07d}" for i in range(orders_per_run)]
        t0 = time.perf_counter()
        seed(engine, members)
        print(f"seeded {len(members):,} members in {time.perf_counter() - t0:.1f} s", flush=True)
        ids = coupon_ids(engine, members)
        rates: list[float] = []
        cpus: list[float] = []
        floors: list[float] = []
        for run in range(min(runs, COUPONS_PER_MEMBER)):
            plan = plan_for(members, ids, run, f"s{run}")
            t0, c0 = time.perf_counter(), time.process_time()
            n = place_orders(engine, plan)
            rate = n / (time.perf_counter() - t0)
            cpu = (time.process_time() - c0) / n * 1000
            rates.append(rate)
            cpus.append(cpu)
            floor = raw_floor(Path(tmp) / "bench.sqlite", n)
            floors.append(floor)
            print(
                f"run {run + 1}: {n:,} orders in {n / rate:.2f} s = {rate:,.0f} orders/s "
                f"({cpu:.2f} CPU ms/order); raw sqlite3 10-insert transactions {floor:,.0f}/s",
                flush=True,
            )
        rate, cpu, floor = (statistics.median(x) for x in (rates, cpus, floors))
        print(
            f"SQLite (WAL) order placement, 1 writer: median {rate:,.0f} orders/s, "
            f"{cpu:.2f} CPU ms/order (= {1000 / cpu:,.0f} orders/s per free core); "
            f"raw floor {floor:,.0f} tx/s; ratio {rate / floor:.0%}"
        )
        engine.dispose()


def raw_floor(path: Path, n: int) -> float:
    """Transactions/s of the bare driver on the same file: 10 single-row inserts and a commit
    each (about the writes one order makes), no Python logic: the floor under our figure."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS bench_floor (k TEXT PRIMARY KEY, v INTEGER, t TEXT)")
    db.execute("DELETE FROM bench_floor")
    t0 = time.perf_counter()
    for i in range(n):
        db.execute("BEGIN")
        for j in range(10):
            db.execute("INSERT INTO bench_floor VALUES (?, ?, ?)", (f"{i}-{j}", i, "x" * 40))
        db.execute("COMMIT")
    rate = n / (time.perf_counter() - t0)
    db.close()
    return rate


# -- PostgreSQL --------------------------------------------------------------------------------


def _client(url: str, plan: list[tuple[str, str, str]], start: Any, done: Any) -> None:
    engine = make_engine(url)
    with engine.connect():
        pass  # connect before the clock starts, as pgbench does
    start.wait()
    done.put(place_orders(engine, plan))
    engine.dispose()


def run_clients(url: str, plans: list[list[tuple[str, str, str]]]) -> float:
    ctx = mp.get_context("fork")
    start = ctx.Barrier(len(plans) + 1)
    done = ctx.Queue()
    procs = [ctx.Process(target=_client, args=(url, p, start, done)) for p in plans]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    total = sum(done.get() for _ in procs)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    return total / elapsed


def pgbench_connection(url: str) -> list[str]:
    """pgbench's options naming the server and user of ``url``."""
    u = make_url(url)
    return ["-h", u.host or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "postgres"]


def pgbench(binary: str, url: str, clients: int, seconds: int) -> float:
    u = make_url(url)
    out = subprocess.run(
        [
            binary,
            *pgbench_connection(url),
            "-b",
            "tpcb-like",
            "-c",
            str(clients),
            "-j",
            str(clients),
            "-T",
            str(seconds),
            "-n",
            u.database or "postgres",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    assert found, out
    return float(found.group(1))


def bench_postgres(
    url: str, clients: int, orders_per_client: int, runs: int, binary: str, scale: int
) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        exists = conn.execute(text("SELECT to_regclass('points_balances')")).scalar()
    if exists is None:
        migrate(engine)
    else:
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names}"))
    u = make_url(url)
    subprocess.run(
        [
            binary,
            "-i",
            "-s",
            str(scale),
            "-q",
            *pgbench_connection(url),
            u.database or "postgres",
        ],
        check=True,
        capture_output=True,
    )
    members = [f"b{i:07d}" for i in range(clients * orders_per_client)]
    t0 = time.perf_counter()
    seed(engine, members)
    print(f"seeded {len(members):,} members in {time.perf_counter() - t0:.1f} s", flush=True)
    ids = coupon_ids(engine, members)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    ours, theirs = [], []
    seconds = 10
    for run in range(min(runs, COUPONS_PER_MEMBER)):
        tps = pgbench(binary, url, clients, seconds)
        theirs.append(tps)
        plans = [plan_for(members[c::clients], ids, run, f"p{run}") for c in range(clients)]
        rate = run_clients(url, plans)
        ours.append(rate)
        print(
            f"run {run + 1}: pgbench tpcb-like {tps:,.0f} tps, "
            f"orders {rate:,.0f}/s ({rate / tps:.0%})",
            flush=True,
        )
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(
        f"PostgreSQL, {clients} clients: orders median {mo:,.0f}/s, pgbench tpcb-like median "
        f"{mt:,.0f} tps, ratio {mo / mt:.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="store", required=True)
    s = sub.add_parser("sqlite")
    s.add_argument("--orders", type=int, default=3000)
    s.add_argument("--runs", type=int, default=3)
    p = sub.add_parser("postgres")
    p.add_argument("--url", required=True)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--orders", type=int, default=1500, help="Orders per client per run.")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--scale", type=int, default=10, help="pgbench -i scale.")
    p.add_argument("--pgbench", default="/usr/lib/postgresql/15/bin/pgbench")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus", flush=True)
    if args.store == "sqlite":
        bench_sqlite(args.orders, args.runs)
    else:
        bench_postgres(args.url, args.clients, args.orders, args.runs, args.pgbench, args.scale)


if __name__ == "__main__":
    main()
