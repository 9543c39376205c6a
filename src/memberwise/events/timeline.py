"""An ingest's phases on the clock, for profiling: with ``MEMBERWISE_INGEST_TRACE=1`` each
phase prints, to stderr, the seconds since the process started (wall), the process's CPU
seconds so far (all threads) and the calling thread's, so a phase's CPU / wall shows whether
it used one core or both, and the main thread's CPU is the length of the serial chain."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

TRACE_ENV = "MEMBERWISE_INGEST_TRACE"
_ENABLED = bool(os.environ.get(TRACE_ENV))


def _since_start() -> float:
    """Wall seconds since this process started (Linux: /proc; elsewhere since first use)."""
    try:
        with open("/proc/self/stat", "rb") as handle:
            started = int(handle.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as handle:
            uptime = float(handle.read().split()[0])
        return uptime - started / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter()


def mark(phase: str) -> None:
    """Print ``phase`` with the wall and CPU seconds so far, when tracing is on."""
    if _ENABLED:
        with _lock:
            threads = ", ".join(f"{k} {v:.2f}" for k, v in sorted(_busy.items()))
        print(
            f"[ingest] {_since_start():8.2f} s wall {time.process_time():8.2f} s CPU"
            f" ({threading.current_thread().name} {time.thread_time():.2f})  {phase}"
            + (f"  (thread CPU s: {threads})" if threads else ""),
            file=sys.stderr,
            flush=True,
        )


_busy: dict[str, float] = {}
_lock = threading.Lock()


@contextmanager
def busy(kind: str) -> Iterator[None]:
    """Count the CPU seconds this thread spends inside the block under ``kind`` (when tracing
    is on), e.g. validating, encoding, registering; :func:`mark` prints the totals so far."""
    if not _ENABLED:
        yield
        return
    started = time.thread_time()
    try:
        yield
    finally:
        spent = time.thread_time() - started
        with _lock:
            _busy[kind] = _busy.get(kind, 0.0) + spent
