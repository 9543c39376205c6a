"""Spark against DuckDB on the stages that run on the cluster when the engine is Spark: the
``predictions`` stage (BG/NBD on the collapsed summary, scoring and churn in the executors)
and the ``segments`` stage (personas assigned in the executors), with the Python driver's
peak RSS for each, plus the whole build's time on each engine.

    python benchmarks/spark_stages.py --members 3000 --home /tmp/bench-spark --runs 3

The home is made once (``demo generate``, ``init`` with ``programs/demo.yaml``, ``ingest``,
``members import``) and one DuckDB build gives the profiles every later run reuses. Then,
alternating engines, each stage runs ``--runs`` times in its own process (``memberwise build
--only STAGE``), which prints the stage's seconds (Spark's start-up excluded: the build
clock starts after the session is up) and the process's peak RSS (``ru_maxrss`` of the
Python driver only; Spark's JVM is another process). Medians and the Spark / DuckDB ratio are
printed last, and finally one whole build on each engine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "memberwise"
#: Runs one build in this process and prints its stage timings and this process's peak RSS.
RUNNER = """
import json, resource, sys
from memberwise.config import Engine, Settings
from memberwise.jobs.build import run_build
from memberwise.program.service import current_program
from memberwise.runtime import Runtime
engine, only = Engine(sys.argv[1]), [s for s in sys.argv[2].split(",") if s]
runtime = Runtime.open(Settings())
program = current_program(runtime.settings.program_file)
result = run_build(runtime, program, only=only or None, engine=engine)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"stages": {s.name: s.seconds for s in result.stages}, "seconds":
    result.seconds, "peak_mib": peak, "members": result.members}))
"""


def run(cmd: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return done.stdout


def prepare(home: Path, members: int, env: dict[str, str]) -> None:
    if (home / ".bench-ready").exists():
        return
    demo = home.with_name(home.name + "-demo")
    run(
        [
            *(str(BIN), "demo", "generate", "--members", str(members), "--days", "120"),
            *("--out", str(demo), "--workers", "1"),
        ],
        env,
    )
    run([str(BIN), "init", "--program", str(ROOT / "programs" / "demo.yaml")], env)
    run([str(BIN), "ingest", str(demo / "events")], env)
    run([str(BIN), "members", "import", str(demo / "members.parquet")], env)
    one(env, "duckdb", "profiles")
    (home / ".bench-ready").touch()


def one(env: dict[str, str], engine: str, only: str) -> dict[str, Any]:
    out = run([sys.executable, "-c", RUNNER, engine, only], env)
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("/tmp/bench-spark"))
    parser.add_argument("--members", type=int, default=3_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stages", default="predictions,segments")
    args = parser.parse_args()
    env = {
        **os.environ,
        "MEMBERWISE_HOME": str(args.home),
        "OPENBLAS_NUM_THREADS": "1",
        "MEMBERWISE_SPARK_MASTER": os.environ.get("MEMBERWISE_SPARK_MASTER", "local[2]"),
    }
    prepare(args.home, args.members, env)
    print(f"load: {os.getloadavg()}", flush=True)
    table: dict[tuple[str, str], list[dict[str, float]]] = {}
    for k in range(args.runs):
        for stage in args.stages.split(","):
            for engine in ("duckdb", "spark"):
                figures = one(env, engine, stage)
                row = {"seconds": figures["stages"][stage], "peak_mib": figures["peak_mib"]}
                table.setdefault((stage, engine), []).append(row)
                print(f"run {k + 1} {stage} {engine}: {json.dumps(row)}", flush=True)
    for stage in args.stages.split(","):
        medians = {
            engine: {
                key: statistics.median(r[key] for r in table[stage, engine])
                for key in ("seconds", "peak_mib")
            }
            for engine in ("duckdb", "spark")
        }
        ratio = medians["spark"]["seconds"] / max(medians["duckdb"]["seconds"], 1e-9)
        print(f"median {stage}: {json.dumps(medians)} spark/duckdb time {ratio:.2f}x")
    for engine in ("duckdb", "spark"):
        everything = ",".join(
            ["profiles", "predictions", "tags", "segments", "tiers", "recommendations"]
        )
        figures = one(env, engine, everything)
        print(f"build {engine}: {json.dumps(figures)}", flush=True)
    print(f"load: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
