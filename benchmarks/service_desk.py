"""Service desk figures: opening a ticket and reading the queue over HTTP at a fixed rate, and
the SLA sweep over a million open tickets.

``api``: a fresh embedded home (SQLite) with the demo program (``programs/demo.yaml``),
``--members`` members (``--black-card`` of them in the apass tier with account managers) and 20
desk agents; the API runs as ``memberwise serve`` runs it (uvicorn, one worker) and a separate
process drives, open loop at ``--rate`` requests a second for ``--seconds`` seconds:
``POST /v1/service/tickets`` (each opening reads the member's tier and benefits, starts the
clocks, routes and audits the ticket, then answers the full ticket), then
``GET /v1/service/queue?limit=50``. ``GET /health`` driven the same way is the baseline.

``sweep``: ``--tickets`` open tickets with two running clocks each (first response, resolution;
a third on business hours) whose next alerts are spread uniformly over the next ``--spread-hours``
hours, bulk-inserted into a fresh store (SQLite, or ``--db-url`` PostgreSQL); then
``sweeps.sweep`` at now + 1 minute, + 1 hour and + 6 hours (what comes due between two sweeps
run every minute, and a sweep after an hour-long outage). Baseline in the same run: one full
scan counting the clock rows.

    python benchmarks/service_desk.py api --rate 200 --seconds 15
    python benchmarks/service_desk.py sweep --tickets 1000000
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import Engine, func, select, text

import loadgen
from memberwise.config import Settings
from memberwise.kit.db import make_engine, transaction
from memberwise.kit.time import utcnow
from memberwise.members import service as members
from memberwise.membership import grants as membership_grants
from memberwise.membership import managers as membership_managers
from memberwise.membership.schemas import TierGrant
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, KeyCreate, Role, StaffCreate
from memberwise.program.service import load_program
from memberwise.service import agents, sweeps
from memberwise.service.schemas import AgentIn
from memberwise.service.tables import service_clocks
from memberwise.store import migrate

PII_KEY = "A" * 43 + "="
PROGRAM = Path(__file__).resolve().parent.parent / "programs" / "demo.yaml"


def _mid(i: int) -> str:
    return f"m{i:08d}"


def _machine() -> None:
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"load average before: {os.getloadavg()[0]:.1f}")


# -- api ----------------------------------------------------------------------------------------


def setup_api(home: Path, members_n: int, black_card: int) -> tuple[str, str]:
    settings = Settings(home=home, pii_key=PII_KEY)
    engine = make_engine(settings.db_url)
    migrate(engine)
    program = load_program(PROGRAM)
    with transaction(engine) as conn:
        members.ensure_members(conn, [_mid(i) for i in range(members_n)], actor=SYSTEM)
        platform_key = privacy.create_key(conn, KeyCreate(role=Role.platform)).key
        for n in range(3):
            staff_id = f"am-{n}"
            privacy.create_staff(
                conn, StaffCreate(staff_id=staff_id, name=staff_id, role=Role.service)
            )
            membership_managers.add_manager(conn, program, staff_id, 1000)
        for n in range(20):
            staff_id = f"cs-{n:02d}"
            privacy.create_staff(
                conn, StaffCreate(staff_id=staff_id, name=staff_id, role=Role.service)
            )
            skills = ["after_sales"] if n % 2 else []
            data = AgentIn(skills=skills, capacity=50)
            agents.put_agent(conn, program, staff_id, data, actor=SYSTEM)
        staff_key = privacy.create_key(conn, KeyCreate(role=Role.service, staff_id="cs-00")).key
    with transaction(engine) as conn:
        for i in range(black_card):
            grant = TierGrant(tier="apass", reason="benchmark")
            membership_grants.grant(conn, program, _mid(i), grant, actor=SYSTEM)
    engine.dispose()
    return platform_key, staff_key


def api(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir(parents=True)
        began = time.perf_counter()
        platform_key, staff_key = setup_api(home, args.members, args.black_card)
        print(f"set up {args.members:,} members in {time.perf_counter() - began:.1f} s")
        env = {
            **os.environ,
            "MEMBERWISE_HOME": str(home),
            "MEMBERWISE_PII_KEY": PII_KEY,
            "MEMBERWISE_PROGRAM_FILE": str(PROGRAM),
        }
        rng = random.Random(14)
        n = int(args.rate * args.seconds)
        kinds = ["inquiry", "complaint", "after_sales", "callback"]

        def opening(i: int) -> loadgen.Request:
            member = (
                _mid(rng.randrange(args.black_card))
                if rng.random() < 0.1
                else _mid(rng.randrange(args.black_card, args.members))
            )
            body = {
                "member_id": member,
                "channel": "app",
                "kind": kinds[i % len(kinds)],
                "subject": f"benchmark {i}",
                "body": "物流太慢了",
            }
            return ("POST", "/v1/service/tickets", json.dumps(body).encode())

        warm = [opening(i) for i in range(int(args.rate * 2))]
        opens = [opening(i) for i in range(len(warm), len(warm) + n)]
        _machine()
        platform_headers = {"Authorization": f"Bearer {platform_key}"}
        staff_headers = {"Authorization": f"Bearer {staff_key}"}
        with loadgen.serve(env) as (port, pid):
            check = httpx.post(
                f"http://127.0.0.1:{port}/v1/service/tickets",
                content=warm[0][2] if isinstance(warm[0], tuple) else b"",
                headers={**platform_headers, "Content-Type": "application/json"},
            )
            assert check.status_code == 201, check.text
            loadgen.run_load(port, warm[1:], args.rate, platform_headers)
            loadgen.run_load(port, ["/v1/service/queue?limit=50"] * 100, args.rate, staff_headers)
            p99s: dict[str, list[float]] = {"open": [], "queue": []}
            for run in range(1, args.runs + 1):
                health = loadgen.run_load(port, ["/health"] * n, args.rate, server_pid=pid)
                opened = loadgen.run_load(
                    port,
                    opens if run == 1 else [opening(10**6 * run + i) for i in range(n)],
                    args.rate,
                    platform_headers,
                    server_pid=pid,
                )
                queue = loadgen.run_load(
                    port,
                    ["/v1/service/queue?limit=50"] * n,
                    args.rate,
                    staff_headers,
                    server_pid=pid,
                )
                p99s["open"].append(opened["p99"])
                p99s["queue"].append(queue["p99"])
                print(
                    f"-- {args.rate:.0f} req/s, {args.seconds:.0f} s, run {run} "
                    f"(load {os.getloadavg()[0]:.1f})"
                )
                print(loadgen.line("GET /health (baseline)", health))
                print(loadgen.line("POST ticket", opened))
                print(loadgen.line("GET queue", queue))
                print(
                    f"ratio p99 open / health {opened['p99'] / health['p99']:.2f}, "
                    f"queue / health {queue['p99'] / health['p99']:.2f}"
                )
            print(
                f"== median p99: open {statistics.median(p99s['open']):.2f} ms, "
                f"queue {statistics.median(p99s['queue']):.2f} ms"
            )


# -- sweep --------------------------------------------------------------------------------------


def _bulk_insert(engine: Engine, n: int, now: datetime, spread: int, rng: random.Random) -> None:
    """``n`` open tickets with two running clocks each, through the driver's executemany (the
    fast path: a million rows in minutes, not an hour)."""
    sqlite = engine.dialect.name == "sqlite"

    def stamp(at: datetime) -> object:
        # SQLite stores naive UTC text (what UTCDateTime writes); PostgreSQL takes the value.
        return at.replace(tzinfo=None).isoformat(sep=" ") if sqlite else at

    far = stamp(datetime(2999, 1, 1, tzinfo=UTC))
    columns_t = (
        "ticket_id, member_id, channel, kind, priority, tier, tier_rank, state, subject, "
        "item_ids, source, assignee, policy, due_at, agent_replies, reopened, opened_by, "
        "opened_at, updated_at"
    )
    columns_c = (
        "ticket_id, metric, target_seconds, hours, elapsed_seconds, running, since, stopped, "
        "warned, breached, alert_at"
    )
    mark = "?" if sqlite else "%s"
    insert_t = f"INSERT INTO service_tickets ({columns_t}) VALUES ({', '.join([mark] * 19)})"
    insert_c = f"INSERT INTO service_clocks ({columns_c}) VALUES ({', '.join([mark] * 11)})"
    chunk = 50_000
    for start in range(0, n, chunk):
        tickets, clocks = [], []
        for i in range(start, min(start + chunk, n)):
            tid = f"t{i:012d}"
            opened = stamp(now - timedelta(minutes=rng.randrange(1, 600)))
            tickets.append(
                (
                    tid,
                    _mid(i % 5_000_000),
                    "app",
                    "inquiry",
                    "normal",
                    "member",
                    0,
                    "open",
                    "s",
                    "[]",
                    "member",
                    f"cs-{i % 200}",
                    "standard",
                    far,
                    0,
                    0,
                    "bench",
                    opened,
                    opened,
                )
            )
            for metric, hours, target in (
                ("first_response", "24x7", 4 * 3600),
                ("resolution", "business" if i % 2 else "24x7", 72 * 3600),
            ):
                alert = stamp(now + timedelta(seconds=rng.randrange(30, spread)))
                clocks.append((tid, metric, target, hours, 0, True, opened, False, 0, False, alert))
        with engine.begin() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            cursor = raw.cursor()
            cursor.executemany(insert_t, tickets)
            cursor.executemany(insert_c, clocks)
            cursor.close()


def sweep(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db_url or f"sqlite:///{tmp}/store.sqlite"
        engine = make_engine(url)
        migrate(engine)
        program = load_program(PROGRAM)
        now = utcnow().replace(microsecond=0)
        rng = random.Random(14)
        spread = int(args.spread_hours * 3600)
        began = time.perf_counter()
        _bulk_insert(engine, args.tickets, now, spread, rng)
        print(
            f"inserted {args.tickets:,} open tickets with {2 * args.tickets:,} running clocks "
            f"in {time.perf_counter() - began:.0f} s ({engine.dialect.name})"
        )
        _machine()
        with transaction(engine) as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("ANALYZE"))
            t = time.perf_counter()
            rows = conn.execute(select(func.count()).select_from(service_clocks)).scalar_one()
            scan = time.perf_counter() - t
        print(f"baseline: full scan counting {rows:,} clock rows: {scan:.2f} s")
        for label, offset in (("+1 min", 60), ("+1 h", 3600), ("+6 h", 6 * 3600)):
            at = now + timedelta(seconds=offset)
            t = time.perf_counter()
            with transaction(engine) as conn:
                out = sweeps.sweep(conn, program, at=at)
            took = time.perf_counter() - t
            print(
                f"sweep {label:7s}: {took:6.2f} s  warnings {out.warnings:,}  breaches "
                f"{out.breaches:,}  escalations {out.escalations:,}  "
                f"(load {os.getloadavg()[0]:.1f}, x{took / scan:.1f} the full scan)"
            )
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("api")
    a.add_argument("--members", type=int, default=20_000)
    a.add_argument("--black-card", type=int, default=200)
    a.add_argument("--rate", type=float, default=200.0)
    a.add_argument("--seconds", type=float, default=15.0)
    a.add_argument("--runs", type=int, default=1)
    s = sub.add_parser("sweep")
    s.add_argument("--tickets", type=int, default=1_000_000)
    s.add_argument("--spread-hours", type=float, default=168.0)
    s.add_argument("--db-url", default=None)
    args = parser.parse_args()
    api(args) if args.what == "api" else sweep(args)


if __name__ == "__main__":
    main()
