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

``--serving-days D`` then runs a whole ``memberwise build`` (every stage: a build of one
stage keeps the clock of the build it takes its inputs from) of each tree with the clock
``D`` days earlier, prints its total and per-stage seconds, and scores the lists it would
serve (``recommendations.parquet``, every member's) against what members bought in those
``D`` days of the lake: the serving model's own quality, which the stage's figures (those
of the model fitted for the evaluation) do not show.
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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
QUALITY = ("recall@10", "recall@20", "hit@10", "ndcg@10")


def last_as_of(home: Path) -> str:
    """The clock of the home's published build (so every run scores the same data)."""
    builds = home / "warehouse" / "builds"
    published = builds / "_published.json"
    if not published.is_file():
        raise SystemExit(f"no published build in {builds}: run `memberwise run --no-serve`")
    build_id = json.loads(published.read_text())["build_id"]
    return str(json.loads((builds / build_id / "build.json").read_text())["as_of"])


def run_once(
    tree: Path, home: Path, as_of: str, program: Path, *, whole: bool = False
) -> dict[str, Any]:
    """One ``build --only recommendations`` (``whole``: every stage) with ``tree`` first on
    the path."""
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
        [
            str(binary),
            "build",
            *([] if whole else ["--only", "recommendations"]),
            "--as-of",
            as_of,
            "--json",
        ],
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
        "directory": Path(summary["directory"]),
        "build": float(summary["seconds"]),
        "stages": {k: float(v["seconds"]) for k, v in summary["stages"].items()},
        **{q: metrics.get(q) for q in QUALITY},
    }


def serving_quality(directory: Path, home: Path, start: datetime, end: datetime) -> str:
    """Recall@10, Recall@20 and hit rate@10 of a build's lists against the distinct items each
    listed member bought in ``(start, end]`` (members who bought nothing are not counted)."""
    import duckdb

    bought = (
        duckdb.connect()
        .execute(
            "SELECT DISTINCT member_id, item_id FROM read_parquet(?, hive_partitioning = true) "
            "WHERE type = 'purchase' AND item_id IS NOT NULL AND ts > ? AND ts <= ?",
            [str(home / "lake" / "events" / "*" / "*.parquet"), start, end],
        )
        .to_arrow_table()
    )
    assert bought is not None
    lists = pq.read_table(
        directory / "recommendations.parquet", columns=["member_id", "rank", "item_id"]
    )
    truth: dict[str, set[str]] = {}
    for m, i in zip(
        bought.column("member_id").to_pylist(), bought.column("item_id").to_pylist(), strict=True
    ):
        truth.setdefault(m, set()).add(i)
    ranked: dict[str, list[tuple[int, str]]] = {}
    for m, r, i in zip(
        *(lists.column(c).to_pylist() for c in ("member_id", "rank", "item_id")), strict=True
    ):
        if m in truth:
            ranked.setdefault(m, []).append((r, i))
    scored: dict[str, list[float]] = {k: [] for k in ("recall@10", "recall@20", "hit@10")}
    for m, rows in ranked.items():
        items = [i for _, i in sorted(rows)]
        got10 = len(truth[m] & set(items[:10]))
        scored["recall@10"].append(got10 / len(truth[m]))
        scored["recall@20"].append(len(truth[m] & set(items[:20])) / len(truth[m]))
        scored["hit@10"].append(float(got10 > 0))
    means = ", ".join(f"{k} {statistics.fmean(v):.4f}" for k, v in scored.items() if v)
    return f"{means} over {len(ranked)} members who bought in the {(end - start).days} days"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a `memberwise run` home")
    parser.add_argument("--base", type=Path, help="src/ of the tree before (optional)")
    parser.add_argument("--new", type=Path, default=ROOT / "src", help="src/ of the tree after")
    parser.add_argument("--as-of", help="the build clock (default: the home's last build's)")
    parser.add_argument("--program", type=Path, default=ROOT / "programs" / "demo.yaml")
    parser.add_argument("--runs", type=int, default=3, help="0: only the --serving-days check")
    parser.add_argument("--serving-days", type=int, default=0, help="also score served lists")
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
        if not runs:
            continue
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
    if "before" in medians and "after" in medians:
        ratio = medians["before"]["stage"] / medians["after"]["stage"]
        print(f"before / after, stage: {ratio:.2f} x faster")
    if args.serving_days:
        end = datetime.fromisoformat(as_of)
        start = end - timedelta(days=args.serving_days)
        for name, tree in trees.items():
            r = run_once(tree, args.home, start.isoformat(), args.program.absolute(), whole=True)
            stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items())
            print(
                f"{name}: build as of {start:%Y-%m-%d %H:%M}: wall {r['wall']:.1f} s, "
                f"cpu {r['cpu']:.1f} s, build {r['build']:.1f} s ({stages}), load {r['load']:.1f}",
                flush=True,
            )
            quality = serving_quality(r["directory"], args.home, start, end)
            print(f"{name}: its lists: {quality}", flush=True)


if __name__ == "__main__":
    main()
