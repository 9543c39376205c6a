"""Benchmark the build's ``predictions`` stage on a demo platform and print the churn model's AUC.

    python benchmarks/predict_build.py --home /tmp/bench-predict            # default demo
    python benchmarks/predict_build.py --home /tmp/bench-predict --members 200000 --runs 3

The home is made once, as ``memberwise run`` makes it (demo generation with the same defaults:
20,000 members, 120 days, seed 7, ending today; ``init``, ingest, ``lake compact``, members
import) and reused. Then ``memberwise build --only profiles,predictions`` runs ``--runs``
times in this process with the demo program; each run prints the churn model's AUC on its
time split (the acceptance figure: above 0.75 on the default demo), its Brier score against
the base rate's, and the seconds of every part: reading purchases, the time-split snapshot
profiles, BG/NBD and Gamma-Gamma fits, the churn fit, and scoring. Medians close the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memberwise.config import Settings
from memberwise.jobs.build import run_build
from memberwise.program.service import load_program
from memberwise.runtime import Runtime

BIN = Path(sys.executable).parent / "memberwise"
PROGRAM = Path(__file__).resolve().parents[1] / "programs" / "demo.yaml"


def _run(cmd: list[str], env: dict[str, str]) -> None:
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)


def prepare(home: Path, *, members: int, days: int, seed: int, env: dict[str, str]) -> None:
    if (home / ".bench-ready").exists():
        return
    demo = home / "demo"
    end = datetime.now(UTC).date().isoformat()
    print(f"preparing {home}: {members:,} members over {days} days ...", flush=True)
    _run(
        [str(BIN), "demo", "generate", "--members", str(members), "--days", str(days),
         "--seed", str(seed), "--end", end, "--out", str(demo), "--json"],
        env,
    )  # fmt: skip
    _run([str(BIN), "init"], env)
    _run([str(BIN), "ingest", str(demo / "events"), "--json"], env)
    _run([str(BIN), "lake", "compact"], env)
    _run([str(BIN), "members", "import", str(demo / "members.parquet")], env)
    (home / ".bench-ready").write_text("ok\n")


def one_run(runtime: Runtime) -> dict[str, Any]:
    program = load_program(PROGRAM)
    result = run_build(runtime, program, only=["profiles", "predictions"])
    summary: dict[str, Any] = json.loads((result.directory / "predictions.json").read_text())
    stage = {s.name: s.seconds for s in result.stages}
    churn, bgnbd, gg = summary["churn"], summary["bgnbd"], summary["gammagamma"]
    return {
        "members": summary["members"],
        "customers": summary["customers"],
        "auc": churn.get("auc"),
        "auc_uncalibrated": churn.get("auc_uncalibrated"),
        "brier": churn.get("brier"),
        "brier_baseline": churn.get("brier_baseline"),
        "churn_status": churn["status"],
        "churn_members": churn.get("members"),
        "profiles_s": stage["profiles"],
        "predictions_s": stage["predictions"],
        "read_s": summary["timings"]["read_seconds"],
        "snapshot_s": summary["timings"]["snapshot_seconds"],
        "bgnbd_fit_s": bgnbd.get("fit_seconds"),
        "gammagamma_fit_s": gg.get("fit_seconds"),
        "churn_fit_s": churn.get("fit_seconds"),
        "clv_score_s": summary.get("score_seconds"),
        "churn_score_s": churn.get("score_seconds"),
        "gammagamma": gg["status"],
        "winsorized_at": gg.get("winsorized_at"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("/tmp/bench-predict"))
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    env = {**os.environ, "MEMBERWISE_HOME": str(args.home), "OPENBLAS_NUM_THREADS": "1"}
    prepare(args.home, members=args.members, days=args.days, seed=args.seed, env=env)
    runtime = Runtime.open(Settings(home=args.home))
    runs = []
    try:
        for k in range(args.runs):
            figures = one_run(runtime)
            runs.append(figures)
            print(f"run {k + 1}: " + json.dumps(figures), flush=True)
    finally:
        runtime.close()
    numeric = [k for k, v in runs[0].items() if isinstance(v, float)]
    print("median: " + json.dumps({k: statistics.median(r[k] for r in runs) for k in numeric}))


if __name__ == "__main__":
    main()
