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
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx

import loadgen
from memberwise.config import Settings
from memberwise.kit.db import make_engine, transaction
from memberwise.kit.time import utcnow
from memberwise.ledger import benefits
from memberwise.ledger.benefits import ExpressRefundIn, ReturnCardIn
from memberwise.members import service as members
from memberwise.membership import grants as membership_grants
from memberwise.membership.schemas import TierGrant
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, KeyCreate, Role
from memberwise.program.service import load_program
from memberwise.store import migrate

PII_KEY = "A" * 43 + "="
PROGRAM = Path(__file__).parent.parent / "programs" / "demo.yaml"


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
                membership_grants.grant(conn, program, member, grant, actor=SYSTEM)
                # The read needs counters in use: the credit-level primitives take them
                # without the orders the API's after-sales calls require.
                held = benefits.entitled_now(conn, program, member, now)
                refund = ExpressRefundIn(refund_id=f"r{i}", order_id=f"o{i}", amount=25_000 + i)
                benefits.reserve_express_refund(
                    conn, program, member, held, refund, at=now, actor=SYSTEM
                )
                card = ReturnCardIn(use_id=f"c{i}", order_id=f"o{i}")
                benefits.use_return_card(conn, program, member, held, card, at=now, actor=SYSTEM)
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
    parser.add_argument("--runs", type=int, default=1, help="Runs at each rate (medians too).")
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
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
        print(f"load average before: {os.getloadavg()[0]:.1f}")
        print(f"{args.members:,} members ({args.black_card:,} black card); open loop")
        with loadgen.serve(env) as (port, pid):
            check = httpx.get(f"http://127.0.0.1:{port}{paths[0]}", headers=headers)
            assert check.status_code == 200, check.text
            print("one answer:", check.text[:300], "...")
            # Warm up: the key cache, the connections, SQLite's page cache.
            loadgen.run_load(port, paths[: int(args.rate[0] * 2)], args.rate[0], headers)
            for rate in args.rate:
                n = int(rate * args.seconds)
                p99s = []
                for run in range(1, args.runs + 1):
                    health = loadgen.run_load(port, ["/health"] * n, rate, server_pid=pid)
                    reads = loadgen.run_load(port, paths[:n], rate, headers, server_pid=pid)
                    p99s.append(reads["p99"])
                    load = os.getloadavg()[0]
                    print(f"-- {rate:.0f} req/s, {args.seconds:.0f} s, run {run} (load {load:.1f})")
                    print(loadgen.line("GET /health (baseline)", health))
                    print(loadgen.line("GET benefits", reads))
                    print(
                        f"ratio benefits / health: p50 {reads['p50'] / health['p50']:.2f}, "
                        f"p99 {reads['p99'] / health['p99']:.2f}"
                    )
                median = statistics.median(p99s)
                print(f"== {rate:.0f} req/s: median p99 of benefits {median:.2f} ms")


if __name__ == "__main__":
    main()
