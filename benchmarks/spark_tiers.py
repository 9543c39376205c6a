"""The ``tiers`` stage on Spark against DuckDB (issue 19): stage time and the Python driver's
peak RSS, evaluated against tiers already held in the store.

    python benchmarks/spark_tiers.py --members 3000 --home /tmp/bench-tiers --runs 3 \\
        [--baseline /tmp/base/src]

The home is made once as in ``benchmarks/spark_stages.py`` (demo, ``init`` with
``programs/demo.yaml``, ingest, members, a DuckDB profiles build), then one whole DuckDB
build, published, stores every member's tier, so each measured run evaluates against
stored tiers as a production rebuild does. Each run is its own process (``memberwise build
--only tiers``), alternating engines; with ``--baseline`` (another checkout's ``src``, e.g.
``git archive`` of the commit before) both engines also run on that code: the DuckDB stage
to show the embedded path did not get slower, the Spark stage to show what the driver held when
it collected every member for the evaluation. Medians and ratios are printed last, with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spark_stages import one, prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("/tmp/bench-tiers"))
    parser.add_argument("--members", type=int, default=3_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None, help="an older checkout's src")
    args = parser.parse_args()
    env = {
        **os.environ,
        "MEMBERWISE_HOME": str(args.home),
        "OPENBLAS_NUM_THREADS": "1",
        "MEMBERWISE_SPARK_MASTER": os.environ.get("MEMBERWISE_SPARK_MASTER", "local[2]"),
    }
    prepare(args.home, args.members, env)
    if not (args.home / ".tiers-stored").exists():
        one(env, "duckdb", "")  # a whole build, published
        (args.home / ".tiers-stored").touch()
    variants: dict[str, tuple[str, dict[str, str]]] = {
        "duckdb": ("duckdb", env),
        "spark": ("spark", env),
    }
    if args.baseline is not None:
        path = os.pathsep.join([str(args.baseline), env.get("PYTHONPATH", "")])
        variants["duckdb-baseline"] = ("duckdb", {**env, "PYTHONPATH": path})
        variants["spark-baseline"] = ("spark", {**env, "PYTHONPATH": path})
    print(f"load: {os.getloadavg()}", flush=True)
    table: dict[str, list[dict[str, float]]] = {}
    for k in range(args.runs):
        for name, (engine, variant_env) in variants.items():
            figures: dict[str, Any] = one(variant_env, engine, "tiers")
            row = {"seconds": figures["stages"]["tiers"], "peak_mib": figures["peak_mib"]}
            table.setdefault(name, []).append(row)
            print(f"run {k + 1} {name}: {json.dumps(row)} members {figures['members']}", flush=True)
    medians = {
        name: {key: statistics.median(r[key] for r in rows) for key in ("seconds", "peak_mib")}
        for name, rows in table.items()
    }
    print(f"medians: {json.dumps(medians)}")
    base = medians["duckdb"]["seconds"]
    for name, figures in medians.items():
        print(f"{name} / duckdb time: {figures['seconds'] / max(base, 1e-9):.2f}x")
    print(f"load: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
