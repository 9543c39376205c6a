"""Webhook deliveries per second from one sender process to a local receiver.

The store is set up as ``memberwise init`` leaves it (SQLite by default, or ``--url`` for
PostgreSQL); N outbox messages for N/4 members are written in one transaction, one endpoint
subscribes to them, and the sender (``Sender.run_once`` passes, as ``memberwise webhooks send``
runs them) delivers until none is pending. The receiver is a separate uvicorn process answering
200 at once, so the figure is the sender's: fan-out, leases, signing, HTTP and the log.

    python benchmarks/webhooks_deliver.py --messages 20000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import cpu_seconds, free_port
from memberwise.config import Settings
from memberwise.kit.db import transaction
from memberwise.kit.outbox import emit_many, message_row
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime
from memberwise.store import migrate
from memberwise.webhooks import service
from memberwise.webhooks.schemas import EndpointCreate
from memberwise.webhooks.sender import Sender, SenderConfig

ACTOR = Principal(key_id="bench", role=Role.admin, name="bench")
RECEIVER = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
"""


def start_receiver(port: int, directory: Path) -> subprocess.Popen[bytes]:
    (directory / "receiver_app.py").write_text(RECEIVER)
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "receiver_app:app", "--port", str(port),
            "--no-access-log", "--log-level", "warning", "--loop", "uvloop", "--http", "httptools",
            "--backlog", "4096",
        ],
        cwd=directory,
    )  # fmt: skip
    for _ in range(200):
        try:
            httpx.post(f"http://127.0.0.1:{port}/", content=b"{}")
            return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("the receiver did not start")


def one_run(rt: Runtime, url: str, messages: int, config: SenderConfig) -> tuple[float, float]:
    """(deliveries/s, sender CPU ms a delivery) for ``messages`` fresh messages."""
    with transaction(rt.engine) as conn:
        endpoint = service.create_endpoint(
            conn, rt.cipher, EndpointCreate.model_validate({"url": url}), actor=ACTOR
        )
        members = max(1, messages // 4)
        rows = [
            message_row("coupon.issued", {"coupon_id": f"c{i}"}, member_id=f"m{i % members}")
            for i in range(messages)
        ]
        emit_many(conn, rows)

    async def deliver() -> int:
        done = 0
        async with Sender(rt.engine, rt.cipher, config) as sender:
            while True:
                report = await sender.run_once()
                done += report.delivered
                if report.attempted == 0 and report.dispatched == 0:
                    return done

    cpu0, t0 = cpu_seconds(os.getpid()), time.perf_counter()
    delivered = asyncio.run(deliver())
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(os.getpid()) - cpu0
    with transaction(rt.engine) as conn:
        service.update_endpoint(
            conn,
            endpoint.endpoint_id,
            service.EndpointUpdate(enabled=False),  # the next run's endpoint gets only its own
            actor=ACTOR,
        )
    assert delivered == messages, f"delivered {delivered} of {messages}"
    return messages / elapsed, cpu * 1000 / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--url", help="PostgreSQL URL (default: SQLite in a temporary home)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        settings = Settings(
            home=home,
            database_url=args.url,
            pii_key=base64.b64encode(os.urandom(32)).decode(),  # type: ignore[arg-type]
        )
        rt = Runtime.open(settings)
        migrate(rt.engine)
        port = free_port()
        receiver = start_receiver(port, Path(tmp))
        config = SenderConfig(batch=args.batch, concurrency=args.concurrency)
        try:
            rates, cpus = [], []
            for run in range(args.runs):
                rate, cpu = one_run(rt, f"http://127.0.0.1:{port}/hook", args.messages, config)
                rates.append(rate)
                cpus.append(cpu)
                print(f"run {run + 1}: {rate:,.0f} deliveries/s, {cpu:.2f} ms sender CPU each")
        finally:
            receiver.terminate()
            receiver.wait()
            rt.close()
    store = "PostgreSQL" if args.url else "SQLite"
    print(
        f"{store}: median {statistics.median(rates):,.0f} deliveries/s over {args.runs} runs of "
        f"{args.messages:,} (batch {args.batch}, {args.concurrency} in flight); "
        f"sender CPU {statistics.median(cpus):.2f} ms a delivery; load {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
