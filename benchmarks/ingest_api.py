"""API ingest throughput: one client posting batches of events over loopback.

Starts the API (uvicorn, one worker, as ``memberwise serve`` does) on a fresh embedded home
(SQLite + lake in a temp dir), creates a platform key, then posts ``--batches`` batches of
``--batch-size`` events over one keep-alive connection, one request at a time. As a
same-session baseline it also times the service functions alone (``read_batch`` and
``ingest_batch`` in-process, no HTTP) on the same kind of batches, and prints the ratio.
Median of ``--repeat`` runs.

    python benchmarks/ingest_api.py --batches 200 --batch-size 1000
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

import loadgen
from memberwise.app import tune_gc
from memberwise.config import Settings
from memberwise.events import service
from memberwise.kit.db import make_engine, transaction
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, KeyCreate, Role
from memberwise.runtime import Runtime
from memberwise.store import migrate


def _batch(run: int, b: int, size: int) -> bytes:
    """A batch as a platform sends it: the last hour's events of many members."""
    now = int(time.time())
    events: list[dict[str, Any]] = []
    for i in range(size):
        n = b * size + i
        events.append(
            {
                "event_id": f"r{run}-b{b}-{i}",
                "member_id": f"m{n % 20_000:07d}",
                "type": "view" if n % 10 else "purchase",
                "ts": now - n % 3600,
                "item_id": f"i{n % 50_000:07d}",
                "category_id": f"c{n % 120:03d}",
                "merchant_id": f"s{n % 300:04d}",
                "price": 1000 + n % 50_000,
                "channel": "app",
            }
        )
    return orjson.dumps({"events": events})


def _http_run(port: int, key: str, bodies: list[bytes]) -> float:
    """Post each body in turn on one keep-alive connection; seconds for all of them.

    The client is the standard library's http.client, so the figure is the server's and not
    a heavy client's (like wrk, but one request in flight at a time as the issue asks).
    """
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/v1/me", headers=headers)  # warm the key cache
    conn.getresponse().read()
    start = time.perf_counter()
    for body in bodies:
        conn.request("POST", "/v1/events", body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def _service_run(rt: Runtime, bodies: list[bytes]) -> float:
    start = time.perf_counter()
    for body in bodies:
        events, rejections = service.read_batch(body)
        with transaction(rt.engine) as conn:
            service.ingest_batch(
                conn, rt.lake, events, rejections, actor=SYSTEM, known_members=rt.known_members
            )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    events = args.batches * args.batch_size

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        env = {**os.environ, "MEMBERWISE_HOME": str(home), "MEMBERWISE_PII_KEY": "A" * 43 + "="}
        settings = Settings(home=home, pii_key="A" * 43 + "=")  # type: ignore[arg-type]
        home.mkdir(parents=True)
        engine = make_engine(settings.db_url)
        migrate(engine)
        with transaction(engine) as conn:
            key = privacy.create_key(conn, KeyCreate(role=Role.platform)).key
        engine.dispose()

        with loadgen.serve(env) as (port, _pid):
            http_secs = [
                _http_run(port, key, [_batch(r, b, args.batch_size) for b in range(args.batches)])
                for r in range(args.repeat)
            ]

        rt = Runtime.open(settings)
        tune_gc()  # as the server does at startup, so the baseline is like for like
        service_secs = [
            _service_run(rt, [_batch(100 + r, b, args.batch_size) for b in range(args.batches)])
            for r in range(args.repeat)
        ]
        rt.close()

    http_rate = events / statistics.median(http_secs)
    service_rate = events / statistics.median(service_secs)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"events per run: {events:,} in batches of {args.batch_size:,}; median of {args.repeat}")
    print(f"HTTP, one client over loopback : {http_rate:12,.0f} events/s")
    print(f"service function, no HTTP      : {service_rate:12,.0f} events/s")
    print(f"ratio HTTP / service           : {http_rate / service_rate:12.2f}")


if __name__ == "__main__":
    main()
