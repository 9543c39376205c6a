"""The build on a real Spark standalone cluster: a master and a worker started here from the
pyspark install (one core, 1 GiB), the build's Spark session pointed at the master through
``MEMBERWISE_SPARK_MASTER``; the executors (separate JVMs with their own Python workers) run
the profile expressions, the RFM summary, the BG/NBD and churn scoring and the persona
assignment, and the outputs equal DuckDB's.

Runs only where pyspark imports; it stops any local session of the process first (a process
has one SparkContext) and its own at the end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memberwise.config import Engine
from tests.jobs.spark_parity import artifacts, build, differences, make_home, plain, schema_of

pyspark = pytest.importorskip("pyspark")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("spark")]

SPARK_HOME = Path(pyspark.__file__).parent
STAGES = ["profiles", "predictions", "tags", "segments"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(check: Callable[[], bool], what: str, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the Spark {what} did not come up in {seconds:.0f} s")


def _stop_sessions() -> None:
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``spark://127.0.0.1:PORT`` of a running master with one registered worker."""
    logs = tmp_path_factory.mktemp("spark-cluster")
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        # The executors' Python workers import memberwise from the same place as the tests.
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    started: list[subprocess.Popen[bytes]] = []
    try:
        started.append(
            subprocess.Popen(
                [
                    *(spark_class, "org.apache.spark.deploy.master.Master"),
                    *("--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)),
                ],
                env=env,
                stdout=(logs / "master.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
        url = f"spark://127.0.0.1:{port}"

        def listening() -> bool:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return True

        _wait_for(listening, "master")
        started.append(
            subprocess.Popen(
                [
                    *(spark_class, "org.apache.spark.deploy.worker.Worker", url),
                    *("--cores", "1", "--memory", "1g", "--webui-port", str(worker_ui)),
                    *("--work-dir", str(logs / "work")),
                ],
                env=env,
                stdout=(logs / "worker.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )

        def registered() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as answer:
                return int(json.load(answer).get("aliveworkers", 0)) >= 1

        _wait_for(registered, "worker")
        _stop_sessions()
        os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
        yield url
    finally:
        _stop_sessions()
        os.environ.pop("SPARK_LOCAL_IP", None)
        for process in reversed(started):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_a_build_on_a_standalone_cluster_equals_the_embedded_build(
    master: str, tmp_path: Path, sqlite_template: Path
) -> None:
    home = make_home(
        tmp_path,
        sqlite_template,
        members=120,
        spark_master=master,
        spark_conf="spark.executor.memory=768m,spark.cores.max=1,spark.driver.host=127.0.0.1",
    )
    try:
        duck = build(home, Engine.duckdb, STAGES)
        spark = build(home, Engine.spark, STAGES)
        from memberwise.kit.warehouse import spark_backend

        context = spark_backend()._session.sparkContext
    finally:
        home.runtime.close()

    # The session ran on the cluster: its master, and an executor besides the driver.
    assert context.master == master
    assert context._jsc.sc().getExecutorMemoryStatus().size() >= 2
    names = artifacts(duck.directory)
    assert names == artifacts(spark.directory)
    for name in names:
        assert plain(schema_of(duck.directory / name)) == plain(
            schema_of(spark.directory / name)
        ), name
    keys = {"tags.parquet": ["tag", "member_id"], "details.parquet": None}
    for name in ("profiles.parquet", "predictions.parquet", "tags.parquet", "segments.parquet"):
        key = keys.get(name) or ["member_id"]
        assert differences(duck.directory / name, spark.directory / name, key) == [], name
