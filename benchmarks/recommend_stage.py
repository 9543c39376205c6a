"""The build's ``recommendations`` stage alone, on a demo home, optionally against an older tree.

    MEMBERWISE_HOME=/tmp/rp/home20k memberwise run --no-serve    # the `make run` demo, once
    git archive BASE src | tar -x -C /tmp/base
    python benchmarks/recommend_stage.py --home /tmp/rp/home20k --base /tmp/base/src --runs 3

Each run is ``memberwise build --only recommendations --as-of T --json`` in a subprocess with
``PYTHONPATH`` set to a tree (the home's other stages' outputs are linked from its last build,
as the command does); with ``--base`` the two trees alternate every round, so a load drift on
the shared machine hits both. Printed per run: wall time, CPU of the command (all threads),
the stage's own seconds, its phases (when the tree records them in ``build.json``), the load
average, and the published method's held-out Recall@10, Recall@20 and hit rate@10 (the time
split the stage evaluates: what the quality must keep). Then the medians and the ratio.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUALITY = ("recall@10", "recall@20", "hit@10", "ndcg@10")


def last_as_of(home: Path) -> str:
    """The clock of the home's newest committed build (so every run scores the same data)."""
    builds = home / "warehouse" / "builds"
    manifests = sorted(builds.glob("*/build.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(manifests):
        meta = json.loads(path.read_text())
        if meta.get("status", "committed") == "committed":
            return str(meta["as_of"])
    raise SystemExit(f"no committed build in {builds}: run `memberwise run --no-serve` first")


def run_once(tree: Path, home: Path, as_of: str, program: Path) -> dict[str, Any]:
    """One ``build --only recommendations`` with ``tree`` first on the path."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{tree}:{ROOT}",
        "MEMBERWISE_HOME": str(home),
        "MEMBERWISE_PROGRAM_FILE": str(program),
    }
    env.pop("MEMBERWISE_DATABASE_URL", None)
    binary = Path(sys.executable).parent / "memberwise"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    out = subprocess.run(
        [str(binary), "build", "--only", "recommendations", "--as-of", as_of, "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads(out.stdout)
    section = json.loads((Path(summary["directory"]) / "build.json").read_text())["recommendations"]
    metrics = section.get("metrics", {})
    return {
        "wall": wall,
        "cpu": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
        "stage": float(summary["stages"]["recommendations"]["seconds"]),
        "phases": section.get("phases", {}),
        "load": (load + os.getloadavg()[0]) / 2,
        "method": metrics.get("published_method"),
        **{q: metrics.get(q) for q in QUALITY},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a `memberwise run` home")
    parser.add_argument("--base", type=Path, help="src/ of the tree before (optional)")
    parser.add_argument("--new", type=Path, default=ROOT / "src", help="src/ of the tree after")
    parser.add_argument("--as-of", help="the build clock (default: the home's last build's)")
    parser.add_argument("--program", type=Path, default=ROOT / "programs" / "demo.yaml")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    as_of = args.as_of or last_as_of(args.home)
    trees = {"after": args.new.absolute()}
    if args.base is not None:
        trees = {"before": args.base.absolute(), **trees}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    print(f"home {args.home}, as of {as_of}, {os.cpu_count()} cores", flush=True)
    for round_ in range(args.runs):
        order = list(trees.items()) if round_ % 2 == 0 else list(trees.items())[::-1]
        for name, tree in order:
            r = run_once(tree, args.home, as_of, args.program.absolute())
            results[name].append(r)
            phases = ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items())
            quality = ", ".join(f"{q} {r[q]}" for q in QUALITY)
            print(
                f"{name}: wall {r['wall']:.1f} s, cpu {r['cpu']:.1f} s, stage {r['stage']:.1f} s, "
                f"load {r['load']:.1f}; {quality} ({r['method']})"
                + (f"\n    phases: {phases}" if phases else ""),
                flush=True,
            )
    medians: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        medians[name] = {
            key: statistics.median(float(r[key]) for r in runs)
            for key in ("wall", "cpu", "stage", "load")
        }
        names = runs[0]["phases"].keys()
        laps = {p: statistics.median(float(r["phases"][p]) for r in runs) for p in names}
        m = medians[name]
        print(
            f"{name:>6}: median wall {m['wall']:.1f} s, cpu {m['cpu']:.1f} s, "
            f"stage {m['stage']:.1f} s (load {m['load']:.1f})"
            + ("; phases " + ", ".join(f"{k} {v:.1f}" for k, v in laps.items()) if laps else "")
        )
    if "before" in medians:
        ratio = medians["before"]["stage"] / medians["after"]["stage"]
        print(f"before / after, stage: {ratio:.2f} x faster")


if __name__ == "__main__":
    main()
