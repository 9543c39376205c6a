"""Server time per console page and member-center page on the `make run` demo home: p50/p95.

Uses a home made by ``memberwise run`` (``--home``, e.g. the ``memberwise-data`` that ``make run``
leaves), or makes one with ``memberwise run --members N --no-serve`` in a temporary directory.
On it, as the demo would have them: an admin staff account signed in to the console through the
sign-in form, one desk ticket, one data-subject request, one webhook endpoint with a delivered
message, and a signed member-center link of a member with a tier. Then every page is requested
``--requests`` times in turn (after ``--warmup`` untimed requests) in-process through the ASGI
app, sequentially, so the time measured is the server's (routing, auth, the domains' reads,
template rendering) plus an in-memory hop; ``GET /health`` (one ``SELECT 1``) is the baseline of
the same run. The target is p95 < 300 ms per page.

    python benchmarks/console_pages.py --home memberwise-data          # the make run home
    python benchmarks/console_pages.py --members 2000 --requests 30    # a fresh, smaller demo
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text

from memberwise.app import create_app
from memberwise.config import Settings
from memberwise.console import member_links
from memberwise.console import service as console
from memberwise.console.member_center import link_secret
from memberwise.kit.db import transaction
from memberwise.kit.outbox import emit
from memberwise.kit.time import utcnow
from memberwise.privacy import rights
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, DataRequestIn, RequestKind, Role, StaffCreate
from memberwise.program.desk import Channel, TicketKind
from memberwise.runtime import Runtime
from memberwise.service import service as desk
from memberwise.service.schemas import TicketOpen
from memberwise.webhooks import service as webhooks
from memberwise.webhooks.schemas import EndpointCreate
from memberwise.webhooks.sender import Sender

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "benchmark console password"
TARGET_MS = 300.0


def make_home(home: Path, members: int, days: int) -> None:
    """``memberwise run --no-serve`` on a fresh home (what ``make run`` does before serving)."""
    env = {**os.environ, "MEMBERWISE_HOME": str(home)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "memberwise.cli", "run", "--members", str(members),
           "--days", str(days), "--no-serve"]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    took = time.perf_counter() - started
    print(f"demo home: {members:,} members, {days} days, made in {took:.0f} s")


def seed(rt: Runtime) -> dict[str, str]:
    """The rows a working day leaves on each page; returns the ids the pages are opened with."""
    program = rt.program()
    with transaction(rt.engine) as conn:
        member = conn.execute(
            text("SELECT member_id FROM member_tiers ORDER BY score DESC, member_id LIMIT 1")
        ).scalar_one()
        merchant = conn.execute(
            text("SELECT merchant_id FROM merchant_scorecards ORDER BY merchant_id LIMIT 1")
        ).scalar_one_or_none()
        campaign = conn.execute(
            text("SELECT campaign_id FROM campaigns ORDER BY created_at LIMIT 1")
        ).scalar_one_or_none()
        if privacy.get_staff(conn, "bench-admin") is None:
            privacy.create_staff(
                conn, StaffCreate(staff_id="bench-admin", name="Bench Admin", role=Role.admin)
            )
        console.set_password(conn, "bench-admin", PASSWORD)
        opened = TicketOpen(member_id=member, channel=Channel.app, kind=TicketKind.inquiry,
                            subject="benchmark ticket", body="where is my parcel?")  # fmt: skip
        ticket = desk.open_ticket(conn, program, opened, actor=SYSTEM, key="bench-ticket")
        rights.submit(
            conn, rt.cipher, member,
            DataRequestIn(kind=RequestKind.access, idempotency_key="bench-dsr"),
            deadline=program.privacy.request_deadline, timezone=program.display_timezone,
            actor=SYSTEM,
        )  # fmt: skip
        if not webhooks.list_endpoints(conn):
            body = EndpointCreate(url="http://127.0.0.1:9/hook", event_types=["coupon.issued"])
            webhooks.create_endpoint(conn, rt.cipher, body, actor=SYSTEM)
        emit(conn, "coupon.issued", {"coupon_id": "bench"}, member_id=member)

    async def deliver() -> None:  # one attempt (it fails: nothing listens on :9), logged
        async with Sender(rt.engine, rt.cipher) as sender:
            await sender.run_once()

    asyncio.run(deliver())
    return {"member": member, "merchant": merchant or "", "campaign": campaign or "",
            "ticket": ticket.ticket_id}  # fmt: skip


def sign_in(client: TestClient) -> None:
    page = client.get("/console/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]*)"', page.text)
    assert token is not None
    done = client.post(
        "/console/sign-in",
        data={"staff_id": "bench-admin", "password": PASSWORD, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text


def pages(ids: dict[str, str], link: str) -> list[tuple[str, str]]:
    out = [
        ("overview", "/console/"),
        ("member 360", f"/console/members/{ids['member']}"),
        ("program", "/console/program"),
        ("desk queue", "/console/desk"),
        ("desk ticket", f"/console/desk/tickets/{ids['ticket']}"),
        ("merchants", "/console/merchants"),
        ("campaigns", "/console/campaigns"),
        ("webhooks", "/console/webhooks"),
        ("privacy requests", "/console/privacy"),
        ("bulk actions", "/console/bulk"),
        ("member center", f"/member-center?{link}"),
        ("member center privacy", f"/member-center/privacy?{link}"),
    ]
    if ids["merchant"]:
        out.insert(6, ("merchant", f"/console/merchants/{ids['merchant']}"))
    if ids["campaign"]:
        out.insert(-4, ("campaign results", f"/console/campaigns/{ids['campaign']}"))
    return out


def measure(client: TestClient, path: str, *, warmup: int, requests: int) -> list[float]:
    for _ in range(warmup):
        assert client.get(path, follow_redirects=False).status_code == 200, path
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(path, follow_redirects=False)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, help="a home made by `memberwise run`")
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        if args.home is None:
            make_home(home, args.members, args.days)
        rt = Runtime.open(Settings(home=home))
        ids = seed(rt)
        expires = int(utcnow().timestamp()) + 3000
        signed = member_links.sign(link_secret(rt), ids["member"], expires)
        link = f"member={signed.member_id}&expires={signed.expires}&sig={signed.sig}"
        with TestClient(create_app(runtime=rt), base_url="http://127.0.0.1") as client:
            sign_in(client)
            print(f"load average before: {os.getloadavg()[0]:.1f}")
            base = measure(client, "/health", warmup=args.warmup, requests=args.requests)
            print(f"{'page':<24}{'p50 ms':>9}{'p95 ms':>9}{'x /health p50':>15}")
            print(f"{'/health (baseline)':<24}{statistics.median(base):>9.1f}{p95(base):>9.1f}")
            worst = 0.0
            for name, path in pages(ids, link):
                times = measure(client, path, warmup=args.warmup, requests=args.requests)
                worst = max(worst, p95(times))
                ratio = statistics.median(times) / statistics.median(base)
                print(f"{name:<24}{statistics.median(times):>9.1f}{p95(times):>9.1f}{ratio:>15.1f}")
            print(f"load average after: {os.getloadavg()[0]:.1f}")
            verdict = "meets" if worst < TARGET_MS else "MISSES"
            print(f"worst p95 {worst:.1f} ms: {verdict} the {TARGET_MS:.0f} ms target")
        rt.close()


if __name__ == "__main__":
    main()
