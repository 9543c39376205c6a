"""Benchmark tier evaluation: the build's ``tiers`` stage (score, qualifications incl. net spend
over the lake, NumPy evaluation against the stored tiers, black-card ranking, tiers.parquet)
and its publish step, on the latest build of an existing home.

    MEMBERWISE_HOME=/tmp/mwdemo2 python benchmarks/tiers_evaluate.py --program programs/demo.yaml
    MEMBERWISE_HOME=/tmp/home100m python benchmarks/tiers_evaluate.py --program programs/demo.yaml

The home needs a build with profiles (``memberwise build``) and a migrated store. Each run
evaluates into a scratch directory; ``--publish`` also applies the result (the first publish
inserts every member's tier, the later ones update them), which changes the home's store.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import pyarrow.parquet as pq

from memberwise.builds import BuildContext, BuildResult, builds_root, previous_builds
from memberwise.config import Settings
from memberwise.kit.db import transaction
from memberwise.kit.warehouse import open_backend
from memberwise.membership import stage
from memberwise.program.service import load_program
from memberwise.runtime import Runtime
from memberwise.store import migrate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--program", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--publish", action="store_true", help="also apply each result")
    args = parser.parse_args()
    settings = Settings()
    rt = Runtime.open(settings)
    migrate(rt.engine)
    program = load_program(args.program)
    source = next(b for b in previous_builds(builds_root(rt)) if (b / "profiles.parquet").exists())
    members = pq.ParquetFile(source / "profiles.parquet").metadata.num_rows
    manifest = json.loads((source / "build.json").read_text())
    scratch = settings.home / "bench-tiers"
    print(f"home {settings.home}: build {source.name}, {members:,} members, cores {os.cpu_count()}")
    evaluate_s, publish_s = [], []
    for run in range(args.runs):
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        for name in ("profiles.parquet", "build.json"):
            os.link(source / name, scratch / name)
        result = BuildResult(
            build_id=manifest["build_id"],
            directory=scratch,
            engine="duckdb",
            as_of=__import__("datetime").datetime.fromisoformat(manifest["as_of"]),
        )
        started = time.perf_counter()
        with open_backend("duckdb", temp_dir=settings.home / "warehouse" / "tmp") as con:
            ctx = BuildContext(rt, program, con, scratch, result, lambda *a: None, {})
            rows = stage.run_stage(ctx)
        evaluate_s.append(time.perf_counter() - started)
        section = ctx.meta["sections"]["tiers"]
        line = f"run {run + 1}: evaluated {rows:,} members in {evaluate_s[-1]:.2f} s"
        if args.publish:
            started = time.perf_counter()
            with transaction(rt.engine) as conn:
                stage.publish(conn, scratch)
            publish_s.append(time.perf_counter() - started)
            line += f"; published in {publish_s[-1]:.2f} s"
        print(line, "; changes", section["changes"], flush=True)
    print(f"evaluate median {statistics.median(evaluate_s):.2f} s over {args.runs} runs")
    if publish_s:
        print(f"publish first {publish_s[0]:.2f} s, median {statistics.median(publish_s):.2f} s")
    shutil.rmtree(scratch, ignore_errors=True)
    rt.close()


if __name__ == "__main__":
    main()
