"""Demo platform generation throughput: wall time, events/s and peak memory.

Generates a platform of ``--events / --events-per-member`` members (default 100 events each,
120 days) with :func:`memberwise.demo.generator.generate_platform` and prints the wall time,
the events per second and the peak resident memory of the generating processes (this one and
the largest worker).

    python benchmarks/demo_generate.py --events 100000000 --out /tmp/x
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from datetime import date
from pathlib import Path

from memberwise.demo.generator import generate_platform


def _peak_rss_mib() -> tuple[float, float]:
    """Peak RSS in MiB of this process and of its largest finished child process."""
    unit = 2**20 if platform.system() == "Darwin" else 2**10  # ru_maxrss: bytes on macOS, else KiB
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / unit
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / unit
    return own, child


def main() -> None:
    """Parse the arguments, run one generation, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000_000, help="events to generate")
    parser.add_argument("--events-per-member", type=float, default=100.0)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--end", type=date.fromisoformat, default=date(2024, 12, 1))
    parser.add_argument("--workers", type=int, default=None, help="default: up to 2")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args()

    members = max(1, round(args.events / args.events_per_member))
    began = time.perf_counter()
    summary = generate_platform(
        args.out,
        members=members,
        days=args.days,
        seed=args.seed,
        end=args.end,
        events_per_member=args.events_per_member,
        workers=args.workers,
    )
    wall = time.perf_counter() - began
    own, child = _peak_rss_mib()
    size = sum(p.stat().st_size for p in args.out.rglob("*.parquet")) / 2**30
    print(f"machine           {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"members           {summary.members:,}")
    print(f"events            {summary.events:,} in {summary.parts} part files ({size:.2f} GiB)")
    print(f"wall seconds      {wall:.1f}")
    print(f"events/s          {summary.events / wall:,.0f}")
    print(f"peak RSS (MiB)    main {own:,.0f} · largest worker {child:,.0f}")


if __name__ == "__main__":
    main()
