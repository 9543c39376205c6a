"""Benefits read latency: ``GET /v1/members/{id}/benefits`` from one uvicorn process, an
open-loop load generator at a fixed rate over loopback, p50/p99 and throughput.

Sets up a fresh embedded home (SQLite in a temp dir) with the demo program
(``programs/demo.yaml``), ``--members`` registered members of whom ``--black-card`` hold the
invitation-only ``apass`` tier granted by staff (six benefits: free shipping, member price,
priority service, account manager, express refund, return cards), each of those with an express
refund outstanding and today's return card used, so every read computes counters. Then it
starts the API as ``memberwise serve`` does (uvicorn, one worker); a separate process sends
the reads at ``--rate`` requests a second for ``--seconds`` seconds, open loop (a request is sent
at its scheduled time whether or not earlier ones answered; its latency counts from that time).
80 % of reads are of black-card members, 20 % of other members. As a baseline in the same run,
``GET /health`` (no key, one ``SELECT 1``) is driven the same way.

    python benchmarks/ledger_benefits_read.py --rate 500 --seconds 20
    python benchmarks/ledger_benefits_read.py --rate 100 250 500   # several rates, one setup
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import queue
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from memberwise.config import Settings
from memberwise.kit.db import make_engine, transaction
from memberwise.kit.time import utcnow
from memberwise.ledger import benefits
from memberwise.ledger.benefits import ExpressRefundIn, ReturnCardIn
from memberwise.members import service as members
from memberwise.membership import service as membership
from memberwise.membership.schemas import TierGrant
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, KeyCreate, Role
from memberwise.program.service import load_program
from memberwise.store import migrate

PII_KEY = "A" * 43 + "="
PROGRAM = Path(__file__).parent.parent / "programs" / "demo.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One HTTP/1.1 request on a kept-alive connection; the status (the body is read whole)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return int(head[9:12])


async def _drive(port: int, paths: list[str], rate: float, headers: dict[str, str]) -> list[float]:
    """Send ``paths`` at ``rate`` a second (open loop) over a pool of kept-alive connections;
    latencies in ms from the scheduled times (a failed request counts as 30 s, so failures
    cannot flatter the figures). A plain asyncio client: httpx costs a millisecond of CPU a
    request, which on a busy 2-core machine makes the client, not the server, the bottleneck."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened = 0
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def one(i: int, path: str) -> None:
        nonlocal opened
        at = start + i / rate
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if pool.empty() and opened < 256:
            opened += 1
            conn = await asyncio.open_connection("127.0.0.1", port)
        else:
            conn = await pool.get()
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()
        try:
            ok = await asyncio.wait_for(_send(*conn, request), 30) == 200
            pool.put_nowait(conn)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            ok = False
            conn[1].close()
            opened -= 1
        latencies.append((loop.time() - at) * 1000 if ok else 30_000.0)

    await asyncio.gather(*(one(i, p) for i, p in enumerate(paths)))
    while not pool.empty():
        pool.get_nowait()[1].close()
    return latencies


def _load_process(
    port: int, paths: list[str], rate: float, headers: dict[str, str], out: Any
) -> None:
    began = time.perf_counter()
    latencies = asyncio.run(_drive(port, paths, rate, headers))
    out.put((latencies, time.perf_counter() - began - 0.2))


def run_load(port: int, paths: list[str], rate: float, headers: dict[str, str]) -> dict[str, float]:
    """The load generator in its own process (so it does not share the server's GIL)."""
    context = mp.get_context("spawn")
    results: Any = context.Queue()
    proc = context.Process(target=_load_process, args=(port, paths, rate, headers, results))
    proc.start()
    try:
        latencies, seconds = results.get(timeout=len(paths) / rate + 120)
    except queue.Empty:
        proc.kill()
        raise RuntimeError("the load generator did not finish") from None
    proc.join()
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "failed": sum(1 for x in ordered if x >= 30_000.0),
        "p50": statistics.median(ordered),
        "p99": ordered[int(0.99 * (len(ordered) - 1))],
        "max": ordered[-1],
        "throughput": len(ordered) / seconds,
    }


def _mid(i: int) -> str:
    return f"m{i:08d}"


def setup(home: Path, members_n: int, black_card: int) -> str:
    """The store: members, black-card members with counters in use; a platform key."""
    settings = Settings(home=home, pii_key=PII_KEY)
    engine = make_engine(settings.db_url)
    migrate(engine)
    program = load_program(PROGRAM)
    now = utcnow()
    with transaction(engine) as conn:
        members.ensure_members(conn, [_mid(i) for i in range(members_n)], actor=SYSTEM)
        key = privacy.create_key(conn, KeyCreate(role=Role.platform)).key
    for start in range(0, black_card, 500):
        with transaction(engine) as conn:
            for i in range(start, min(start + 500, black_card)):
                member = _mid(i)
                grant = TierGrant(tier="apass", reason="benchmark")
                membership.grant(conn, program, member, grant, actor=SYSTEM)
                refund = ExpressRefundIn(refund_id=f"r{i}", amount=25_000 + i)
                benefits.express_refund(conn, program, member, refund, at=now, actor=SYSTEM)
                card = ReturnCardIn(use_id=f"c{i}", order_id=f"o{i}")
                benefits.return_card(conn, program, member, card, at=now, actor=SYSTEM)
    engine.dispose()
    return key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--black-card", type=int, default=2_000)
    parser.add_argument(
        "--rate", type=float, nargs="+", default=[500.0], help="One or more rates (req/s)."
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir(parents=True)
        began = time.perf_counter()
        key = setup(home, args.members, args.black_card)
        print(f"set up {args.members:,} members in {time.perf_counter() - began:.1f} s")
        env = {
            **os.environ,
            "MEMBERWISE_HOME": str(home),
            "MEMBERWISE_PII_KEY": PII_KEY,
            "MEMBERWISE_PROGRAM_FILE": str(PROGRAM),
        }
        port = _free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "memberwise.app:create_app",
                "--factory",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {key}"}
        rng = random.Random(7)
        count = int(max(args.rate) * args.seconds)
        paths = [
            "/v1/members/"
            + (
                _mid(rng.randrange(args.black_card))
                if rng.random() < 0.8
                else _mid(rng.randrange(args.black_card, args.members))
            )
            + "/benefits"
            for _ in range(count)
        ]
        load_before = f"{os.getloadavg()[0]:.1f}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            check = httpx.get(base + paths[0], headers=headers)
            assert check.status_code == 200, check.text
            print("one answer:", check.text[:300], "...")
            # Warm up: the key cache, the connections, SQLite's page cache.
            run_load(port, paths[: int(args.rate[0] * 2)], args.rate[0], headers)
            results = []
            for rate in args.rate:
                n = int(rate * args.seconds)
                health = run_load(port, ["/health"] * n, rate, {})
                reads = run_load(port, paths[:n], rate, headers)
                results.append((rate, health, reads, f"{os.getloadavg()[0]:.1f}"))
        finally:
            server.terminate()
            server.wait()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"load average before: {load_before}")
    print(f"{args.members:,} members ({args.black_card:,} black card); open loop")
    for rate, health, reads, load in results:
        print(f"-- {rate:.0f} req/s offered for {args.seconds:.0f} s (load average {load})")
        for name, r in (("GET /health (baseline)", health), ("GET benefits", reads)):
            print(
                f"{name:24s}: p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  "
                f"max {r['max']:7.1f} ms  {r['throughput']:6.0f} req/s  failed {r['failed']:.0f}"
            )
        print(
            f"ratio benefits / health: p50 {reads['p50'] / health['p50']:.2f}, "
            f"p99 {reads['p99'] / health['p99']:.2f}"
        )


if __name__ == "__main__":
    main()
