"""The whole build on a Spark standalone cluster over a local S3 server, against DuckDB on the
same lake: per-stage seconds, Spark jobs / stages / tasks per build stage, the Python driver's
peak RSS and the driver JVM's.

    python benchmarks/spark_cluster_build.py --members 2000 --runs 1
    python benchmarks/spark_cluster_build.py --members 500 --conf-b "spark.sql.shuffle.partitions=8"

Starts, and stops on exit (also on Ctrl-C or an error), everything it uses: a moto S3 server
(a child process on ``--port``, in memory), a master and ``--workers`` workers (one core and
``--worker-memory`` each) from the pyspark install. The demo (``demo generate``) is made once
under ``--dir``; the home (``init`` with ``programs/demo.yaml``, a bulk ingest into the lake on
``s3://``, ``members import``) is made each run, the S3 server being in memory. Each build runs
in its own process (``python -c``): every stage but publish by default (both engines see the
same store),
DuckDB then Spark, ``--runs`` times, medians last. ``--conf-b`` adds a second Spark
configuration measured alternately with the first in the same session (a before/after of
settings, e.g. the old defaults against the new).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent / "memberwise"
BUCKET = "memberwise-bench"
STAGES = "profiles,predictions,tags,segments,tiers,recommendations,feedback,merchants"
#: One build in this process: stage seconds, Spark jobs/stages/tasks per build stage (a job
#: group per stage), the Python driver's peak RSS and the driver JVM's (VmHWM).
RUNNER = """
import json, resource, sys
from memberwise.config import Engine, Settings
from memberwise.jobs.build import run_build
from memberwise.program.service import current_program
from memberwise.runtime import Runtime
engine, only = Engine(sys.argv[1]), [s for s in sys.argv[2].split(",") if s]
runtime = Runtime.open(Settings())
program = current_program(runtime.settings.program_file)
context = None
if engine == Engine.spark:
    from memberwise.kit.warehouse import open_backend
    with open_backend("spark", **runtime.settings.backend_options()) as con:
        context = con._session.sparkContext
    order = []
    def on_stage(stage):
        order.append(stage.name)
        context.setJobGroup(f"after-{len(order)}", "memberwise build")
    context.setJobGroup("after-0", "memberwise build")
else:
    on_stage = None
result = run_build(runtime, program, only=only or None, engine=engine, on_stage=on_stage)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {"stages": {s.name: s.seconds for s in result.stages}, "seconds": result.seconds,
    "peak_mib": peak, "members": result.members, "events": result.events_read}
if context is not None:
    tracker, spark = context.statusTracker(), {}
    for k, name in enumerate(order):
        jobs = tracker.getJobIdsForGroup(f"after-{k}")
        found = [tracker.getJobInfo(j) for j in jobs]
        stage_ids = [s for info in found if info is not None for s in info.stageIds]
        infos = [tracker.getStageInfo(s) for s in stage_ids]
        spark[name] = {"jobs": len(jobs), "stages": len(stage_ids),
            "tasks": sum(i.numTasks for i in infos if i is not None)}
    out["spark"] = spark
    pid = context._gateway.proc.pid
    status = open(f"/proc/{pid}/status").read().split("\\n")
    hwm = [line for line in status if line.startswith("VmHWM")][0].split()[1]
    out["jvm_peak_mib"] = int(hwm) / 1024
    context.stop()
print(json.dumps(out))
"""


#: Bulk ingest of the demo's events into the home's lake (on S3 here).
INGEST = """
import sys
from pathlib import Path
from memberwise.config import Settings
from memberwise.events.bulk import ingest_paths
from memberwise.runtime import Runtime
runtime = Runtime.open(Settings())
result = ingest_paths([Path(sys.argv[1])], runtime.lake,
    deadletter_dir=runtime.settings.home / "deadletter")
assert result.ok, result.failed_files
runtime.close()
"""


def run(cmd: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed:\n{done.stderr[-4000:]}")
    return done.stdout


def wait_port(port: int, seconds: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"nothing listens on {port}")


def prepare(directory: Path, members: int, days: int, env: dict[str, str]) -> None:
    """The demo once; the home (store, program, S3 lake, members) every run."""
    demo = directory / f"demo-{members}-{days}"
    if not (demo / ".ready").exists():
        shutil.rmtree(demo, ignore_errors=True)
        run(
            [
                *(str(BIN), "demo", "generate", "--members", str(members), "--days", str(days)),
                *("--out", str(demo), "--workers", "1"),
            ],
            env,
        )
        (demo / ".ready").touch()
    run([str(BIN), "init", "--program", str(ROOT / "programs" / "demo.yaml")], env)
    # ``memberwise ingest``'s engine, on the runtime's lake (the one on the storage URI).
    run([sys.executable, "-c", INGEST, str(demo / "events")], env)
    run([str(BIN), "members", "import", str(demo / "members.parquet")], env)


def one(env: dict[str, str], engine: str, stages: str) -> dict[str, Any]:
    out = run([sys.executable, "-c", RUNNER, engine, stages], env)
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench-spark-cluster"))
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--stages", default=STAGES)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-memory", default="1g")
    parser.add_argument(
        "--port", type=int, default=8124, help="the S3 server's port (0: any free one)"
    )
    parser.add_argument("--conf", default="", help="extra MEMBERWISE_SPARK_CONF pairs")
    parser.add_argument("--conf-b", default=None, help="a second Spark configuration")
    parser.add_argument("--no-duckdb", action="store_true")
    args = parser.parse_args()

    from memberwise.kit.storage import Storage
    from tests.jobs.test_spark_cluster import standalone_cluster

    if args.port == 0:  # any free port (two benchmarks side by side)
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            args.port = int(probe.getsockname()[1])
    args.dir.mkdir(parents=True, exist_ok=True)
    home = args.dir / "home"
    options = {
        "endpoint_url": f"http://127.0.0.1:{args.port}",
        "key": "testing",
        "secret": "testing",
    }
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(args.port)],
        stdout=(args.dir / "moto.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(args.port)
        with standalone_cluster(
            args.dir / "cluster", workers=args.workers, memory=args.worker_memory
        ) as cluster:
            base = (
                "spark.executor.memory=640m,spark.executor.cores=1,"
                f"spark.cores.max={args.workers},spark.driver.host=127.0.0.1"
            )
            confs = {"a": ",".join(p for p in (base, args.conf) if p)}
            if args.conf_b is not None:
                confs["b"] = ",".join(p for p in (base, args.conf_b) if p)
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
                "MEMBERWISE_HOME": str(home),
                "MEMBERWISE_STORAGE_URI": f"s3://{BUCKET}/bench/",
                "MEMBERWISE_STORAGE_OPTIONS": json.dumps(options),
                "MEMBERWISE_SPARK_MASTER": cluster.url,
                "SPARK_LOCAL_IP": "127.0.0.1",
                "OPENBLAS_NUM_THREADS": "1",
            }
            results: dict[str, list[dict[str, Any]]] = {}
            for k in range(args.runs):
                storage = Storage(options)
                shutil.rmtree(home, ignore_errors=True)
                if storage.fs("s3://").exists(BUCKET):
                    storage.fs("s3://").rm(BUCKET, recursive=True)
                storage.fs("s3://").mkdir(BUCKET)
                prepare(args.dir, args.members, args.days, env)
                print(f"load before run {k + 1}: {os.getloadavg()}", flush=True)
                order = [] if args.no_duckdb else [("duckdb", "")]
                order += [("spark", name) for name in confs]
                for engine, name in order:
                    env["MEMBERWISE_SPARK_CONF"] = confs.get(name, confs["a"])
                    figures = one(env, engine, args.stages)
                    label = engine + (f"-{name}" if engine == "spark" else "")
                    figures["load"] = os.getloadavg()[0]
                    results.setdefault(label, []).append(figures)
                    print(f"run {k + 1} {label}: {json.dumps(figures)}", flush=True)
    finally:
        moto.terminate()
        try:
            moto.wait(timeout=20)
        except subprocess.TimeoutExpired:
            moto.kill()
    summary(results)


def summary(results: dict[str, list[dict[str, Any]]]) -> None:
    """Medians per stage and engine, and each Spark configuration's ratio to DuckDB."""
    medians: dict[str, dict[str, float]] = {}
    for label, runs in results.items():
        stages = runs[0]["stages"]
        row = {s: statistics.median(r["stages"][s] for r in runs) for s in stages}
        row["total"] = statistics.median(r["seconds"] for r in runs)
        row["peak_mib"] = statistics.median(r["peak_mib"] for r in runs)
        if "jvm_peak_mib" in runs[0]:
            row["jvm_peak_mib"] = statistics.median(r["jvm_peak_mib"] for r in runs)
        medians[label] = row
        print(f"median {label}: {json.dumps({k: round(v, 2) for k, v in row.items()})}")
    if "duckdb" in medians:
        for label, row in medians.items():
            if label != "duckdb":
                ratio = row["total"] / max(medians["duckdb"]["total"], 1e-9)
                print(f"{label} / duckdb total time: {ratio:.1f}x")
    if "spark-b" in medians:
        ratio = medians["spark-b"]["total"] / max(medians["spark-a"]["total"], 1e-9)
        print(f"spark-b / spark-a total time: {ratio:.2f}x")
    print(f"load at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
