"""The profile stage of two source trees alternated on one home: is a change slower?

    git archive BASE src | tar -x -C /tmp/base
    python benchmarks/build_before_after.py --home /tmp/bench-build-compacted \
        --base /tmp/base/src --new src --as-of 2026-12-05T15:59:57+00:00 --runs 3

Each run is ``memberwise build --only profiles`` in a subprocess with ``PYTHONPATH`` set to the
tree; the order alternates every round, so a load drift on a shared machine hits both. Prints
each run (wall, CPU of the command, the stage's own seconds) and the medians. The home is one
``benchmarks/build_profiles.py`` made (its ``-compacted`` copy is the steadier one).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--base", type=Path, required=True, help="src/ of the tree before")
    parser.add_argument("--new", type=Path, default=ROOT / "src", help="src/ of the tree after")
    parser.add_argument("--as-of", required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    trees = {"before": args.base.absolute(), "after": args.new.absolute()}
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in trees}
    binary = Path(sys.executable).parent / "memberwise"
    for round_ in range(args.runs):
        order = list(trees.items()) if round_ % 2 == 0 else list(trees.items())[::-1]
        for name, src in order:
            env = {
                **os.environ,
                "PYTHONPATH": f"{src}:{ROOT}",
                "MEMBERWISE_HOME": str(args.home),
                "MEMBERWISE_PROGRAM_FILE": str(ROOT / "programs" / "demo.yaml"),
            }
            env.pop("MEMBERWISE_DATABASE_URL", None)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            out = subprocess.run(
                [str(binary), "build", "--only", "profiles", "--as-of", args.as_of, "--json"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            stage = float(json.loads(out.stdout)["stages"]["profiles"]["seconds"])
            results[name].append((wall, cpu, stage))
            print(
                f"{name}: wall {wall:.1f} s, cpu {cpu:.1f} s, stage {stage:.1f} s, "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    medians = {
        name: [statistics.median(run[i] for run in runs) for i in range(3)]
        for name, runs in results.items()
    }
    for name, (wall, cpu, stage) in medians.items():
        print(f"{name:>6}: median wall {wall:.1f} s, cpu {cpu:.1f} s, stage {stage:.1f} s")
    print(f"after / before, stage: {medians['after'][2] / medians['before'][2]:.2f} x")


if __name__ == "__main__":
    main()
