"""The serving benchmarks' shared parts: the API started as ``memberwise serve`` starts it (one
uvicorn process), and an open-loop HTTP load generator in its own process.

Open loop: request ``i`` is sent at ``start + i / rate`` whether or not earlier ones have
answered, over a pool of kept-alive connections (a new one is opened when all are busy, up to
:data:`MAX_CONNECTIONS`), and its latency counts from that scheduled time, so a stalled server is
not hidden by a waiting client. A failed request counts as :data:`FAILED_MS`, so failures cannot
flatter the figures. The client is plain asyncio streams: httpx costs about a millisecond of CPU
a request, which on a 2-core machine would make the client, not the server, the bottleneck.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import os
import queue
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

MAX_CONNECTIONS = 256
FAILED_MS = 30_000.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def serve(env: dict[str, str]) -> Iterator[tuple[int, int]]:
    """The API in one uvicorn process, as ``memberwise serve --no-access-log`` runs it,
    answering /health: (port, pid). Stopped when the block ends."""
    port = free_port()
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
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the API did not start")
        yield port, server.pid
    finally:
        server.terminate()
        server.wait()


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


Request = str | tuple[str, str, bytes]


def _request(path: Request, extra: str) -> bytes:
    """A GET of ``path``, or ``(method, path, json body)`` (e.g. a POST)."""
    if isinstance(path, str):
        return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()
    method, target, body = path
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _drive(
    port: int, paths: list[Request], rate: float, headers: dict[str, str]
) -> list[float]:
    """Send ``paths`` at ``rate`` a second; latencies in ms from the scheduled times."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened = 0
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def one(i: int, path: Request) -> None:
        nonlocal opened
        at = start + i / rate
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if pool.empty() and opened < MAX_CONNECTIONS:
            opened += 1
            conn = await asyncio.open_connection("127.0.0.1", port)
        else:
            conn = await pool.get()
        request = _request(path, extra)
        try:
            ok = await asyncio.wait_for(_send(*conn, request), FAILED_MS / 1000) in (200, 201)
            pool.put_nowait(conn)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            ok = False
            conn[1].close()
            opened -= 1
        latencies.append((loop.time() - at) * 1000 if ok else FAILED_MS)

    await asyncio.gather(*(one(i, p) for i, p in enumerate(paths)))
    while not pool.empty():
        pool.get_nowait()[1].close()
    return latencies


def _load_process(
    port: int, paths: list[Request], rate: float, headers: dict[str, str], out: Any
) -> None:
    # The client's own garbage collector is off during a run: with ten thousand requests in
    # flight its full collections took 50-140 ms (measured with gc.callbacks), and a paused
    # client counts as a slow server.
    gc.disable()
    began = time.perf_counter()
    latencies = asyncio.run(_drive(port, paths, rate, headers))
    out.put((latencies, time.perf_counter() - began - 0.2))


def run_load(
    port: int,
    paths: list[Request],
    rate: float,
    headers: dict[str, str] | None = None,
    *,
    server_pid: int | None = None,
) -> dict[str, float]:
    """Drive ``paths`` at ``rate`` from a separate process (so the client does not share the
    server's GIL): p50/p99/max ms, throughput, failures and, given the server's pid, its CPU
    milliseconds per request."""
    context = mp.get_context("spawn")
    results: Any = context.Queue()
    args = (port, paths, rate, headers or {}, results)
    proc = context.Process(target=_load_process, args=args)
    used = cpu_seconds(server_pid) if server_pid is not None else 0.0
    proc.start()
    try:
        latencies, seconds = results.get(timeout=len(paths) / rate + 120)
    except queue.Empty:
        proc.kill()
        raise RuntimeError("the load generator did not finish") from None
    proc.join()
    ordered = sorted(latencies)
    out = {
        "requests": len(ordered),
        "failed": sum(1 for x in ordered if x >= FAILED_MS),
        "p50": statistics.median(ordered),
        "p99": ordered[int(0.99 * (len(ordered) - 1))],
        "max": ordered[-1],
        "throughput": sum(1 for x in ordered if x < FAILED_MS) / seconds,
    }
    if server_pid is not None:
        out["cpu_ms"] = (cpu_seconds(server_pid) - used) * 1000 / len(paths)
    return out


def line(name: str, r: dict[str, float]) -> str:
    """One result as the benchmarks print it."""
    cpu = f"  server CPU {r['cpu_ms']:.2f} ms/req" if "cpu_ms" in r else ""
    return (
        f"{name:24s}: p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  max {r['max']:7.1f} ms  "
        f"{r['throughput']:6.0f} req/s  failed {r['failed']:.0f}{cpu}"
    )
