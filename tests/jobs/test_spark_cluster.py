"""The build on a real Spark standalone cluster over a local S3 server: a master and two workers
started here from the pyspark install (one core, 1 GiB each), a moto S3 server holding the
lake (``memberwise ingest`` writes it to ``s3://``), and the build's Spark session pointed at
the master through ``MEMBERWISE_SPARK_MASTER``. The executors (separate JVMs with their own
Python workers) read the lake's objects, run the profile expressions, the RFM summary (its
scratch on S3), the BG/NBD and churn scoring, the persona assignment and the recommender (its
ALS checkpoints on the driver's disk, as S3 here has no S3A connector), and the outputs equal
DuckDB's. The executors write those artifacts straight to the build's folder on S3: the
driver's working copy holds only pointers, the build's manifest lists the objects, and the
build publishes from them to the same API answers as the DuckDB build. A second test has Spark
write an artifact to S3 and checks it object by object.

Runs only where pyspark imports; it stops any local session of the process first (a process
has one SparkContext) and its own at the end. :func:`standalone_cluster` is also used by
``benchmarks/spark_cluster_build.py``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memberwise.config import Engine
from memberwise.kit.storage import MANIFEST, Storage
from tests.jobs.spark_parity import (
    Home,
    artifacts,
    build,
    differences,
    make_home,
    plain,
    schema_of,
)
from tests.kit.test_storage import BUCKET, s3  # noqa: F401  (the S3 server fixture)

pyspark = pytest.importorskip("pyspark")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("spark-cluster")]

SPARK_HOME = Path(pyspark.__file__).parent
STAGES = ["profiles", "predictions", "tags", "segments", "recommendations"]
#: Artifacts the driver writes itself, small by construction: the coupons the budget-bound
#: choice picked and the fallback lists (catalog-sized). Uploaded with the working copy.
DRIVER_MADE = {"coupon_suggestions.parquet", "fallbacks.parquet"}
#: Each executor: the worker's one core and most of its memory; two shuffle partitions, the
#: cluster's cores (the demo is tiny: more partitions would be more Python tasks, not speed).
CLUSTER_CONF = (
    "spark.executor.memory=640m,spark.executor.cores=1,spark.cores.max=2,"
    "spark.driver.host=127.0.0.1,spark.driver.memory=1g,"
    "spark.sql.shuffle.partitions=2,spark.default.parallelism=2"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(check: Callable[[], bool], what: str, seconds: float = 300.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the Spark {what} did not come up in {seconds:.0f} s")


def _descendants(pid: int) -> list[int]:
    """Process ids under ``pid`` (a worker's executor JVMs), from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_sessions() -> None:
    """Stop the process's Spark session, if any (one SparkContext per process)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


@dataclass(frozen=True)
class Cluster:
    """A running standalone cluster: its master URL and the master's web UI port."""

    url: str
    ui: int


@contextmanager
def standalone_cluster(
    logs: Path, *, workers: int = 2, cores: int = 1, memory: str = "1g"
) -> Iterator[Cluster]:
    """A master and ``workers`` workers started from the pyspark install on 127.0.0.1; on exit
    the process's Spark session is stopped, then every worker (and the executors under it)
    and the master, by process id."""
    logs.mkdir(parents=True, exist_ok=True)
    port, ui = _free_port(), _free_port()
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        # The executors' Python workers import memberwise from the same place as the driver.
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
        for n in range(workers):
            started.append(
                subprocess.Popen(
                    [
                        *(spark_class, "org.apache.spark.deploy.worker.Worker", url),
                        *("--host", "127.0.0.1", "--cores", str(cores), "--memory", memory),
                        *("--webui-port", str(_free_port()), "--work-dir", str(logs / f"w{n}")),
                    ],
                    env=env,
                    stdout=(logs / f"worker{n}.log").open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )

        def registered() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as answer:
                return int(json.load(answer).get("aliveworkers", 0)) >= workers

        _wait_for(registered, f"{workers} workers")
        stop_sessions()
        os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
        yield Cluster(url, ui)
    finally:
        stop_sessions()
        os.environ.pop("SPARK_LOCAL_IP", None)
        for process in reversed(started):
            below = _descendants(process.pid)
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            for pid in below:  # an executor JVM its worker did not take down
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with standalone_cluster(tmp_path_factory.mktemp("spark-cluster")) as running:
        yield running


@pytest.fixture(scope="module")
def home(
    cluster: Cluster,
    s3: Storage,  # noqa: F811  (the imported fixture)
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
) -> Iterator[Home]:
    """A 120-member demo whose lake is on the S3 server, built on the cluster."""
    root = tmp_path_factory.mktemp("cluster-home")
    made = make_home(
        root,
        sqlite_template,
        members=120,
        spark_master=cluster.url,
        spark_conf=CLUSTER_CONF,
        storage_uri=f"s3://{BUCKET}/{root.name}/",
        storage_options=s3.options,
    )
    try:
        yield made
    finally:
        made.runtime.close()


def _api_answers(home: Home, members: list[str]) -> dict[str, Any]:
    """What the API answers about the published build: a few members' profiles and
    predictions, the segments and the tags (build ids and times left out)."""
    from fastapi.testclient import TestClient

    from memberwise.app import create_app
    from memberwise.kit.db import transaction
    from memberwise.privacy import service as privacy
    from memberwise.privacy.schemas import KeyCreate, Role

    with transaction(home.runtime.engine) as conn:
        key = privacy.create_key(conn, KeyCreate(role=Role.admin, name="cluster")).key
    paths = ["/v1/segments", "/v1/tags"]
    for member in members:
        paths += [f"/v1/members/{member}/profile", f"/v1/members/{member}/predictions"]
    answers = {}
    with TestClient(create_app(home.runtime.settings)) as client:
        for path in paths:
            response = client.get(path, headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200, (path, response.text)
            answers[path] = _timeless(response.json())
    return answers


def _timeless(value: Any) -> Any:
    """``value`` without the keys that name the build or the time it was made."""
    varying = {"build_id", "published_at", "model_version", "fitted_at", "updated_at"}
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k not in varying}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def _close(left: Any, right: Any) -> bool:
    """Equal, floats to 1e-9 (the engines' BG/NBD scoring agrees to that)."""
    if isinstance(left, float) or isinstance(right, float):
        return (
            isinstance(left, int | float)
            and isinstance(right, int | float)
            and (math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-9))
        )
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_close(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(
            _close(a, b) for a, b in zip(left, right, strict=True)
        )
    return bool(left == right)


def test_a_build_on_a_standalone_cluster_over_s3_equals_the_embedded_build(
    cluster: Cluster,
    home: Home,
    s3: Storage,  # noqa: F811
) -> None:
    from memberwise.builds import BuildStore, latest_build
    from memberwise.kit.storage import pointed, read_table

    lake_files = s3.fs("s3://").find(f"{BUCKET}/{home.root.name}/lake")
    assert any(f.endswith(".parquet") for f in lake_files)  # the lake is on S3
    assert not any((home.root / "home" / "lake").rglob("*.parquet"))
    # DuckDB builds and publishes (tiers too: the publish needs them); the answers it serves.
    duck = build(home, Engine.duckdb, [*STAGES, "tiers", "publish"])
    members = sorted(read_table(duck.directory / "profiles.parquet")["member_id"].to_pylist())
    members = members[:: max(len(members) // 4, 1)]
    embedded = _api_answers(home, members)
    # The cluster builds the same stages and publishes (the tiers taken from DuckDB's build).
    spark = build(home, Engine.spark, [*STAGES, "publish"])
    store = BuildStore.of(home.runtime)
    place = str(store.location(spark.build_id))
    # Its executors wrote every artifact straight to the build's folder on S3: the driver's
    # working copy holds pointers and no data; the manifest lists the objects, none uploaded.
    assert not [
        p for p in spark.directory.rglob("*.parquet") if p.is_file() and p.name not in DRIVER_MADE
    ]
    files = store.files(spark.build_id)
    for name in [n for n in artifacts(duck.directory) if n not in DRIVER_MADE]:
        assert pointed(spark.directory / name) == f"{place}/{name}", name
        assert f"{name}/{MANIFEST}" in files, name
        assert any(f.startswith(f"{name}/attempt-") for f in files), name
    uploaded = json.loads((spark.directory / ".uploaded.json").read_text())
    assert sorted(n for n in uploaded if ".parquet" in n) == sorted(DRIVER_MADE)
    # Published from S3, the API answers what it answered for the DuckDB build.
    served = _api_answers(home, members)
    assert served.keys() == embedded.keys()
    for path in embedded:
        assert _close(served[path], embedded[path]), path
    # A reader of the newest build (the console, `tiers preview`) on this machine checks it
    # out: the pointers to the committed objects are kept (no download) and read.
    checked = latest_build(home.runtime, ["profiles.parquet", "segments.parquet"])
    assert checked == spark.directory
    assert pointed(checked / "segments.parquet") == f"{place}/segments.parquet"
    assert (
        differences(
            duck.directory / "segments.parquet", checked / "segments.parquet", ["member_id"]
        )
        == []
    )
    from memberwise.kit.warehouse import spark_backend

    context = spark_backend()._session.sparkContext
    # The session ran on the cluster: its master, and two executors besides the driver.
    assert context.master == cluster.url
    assert context._jsc.sc().getExecutorMemoryStatus().size() == 3
    assert duck.members == spark.members > 0
    names = artifacts(duck.directory)
    assert names == artifacts(spark.directory)
    for name in names:
        assert plain(schema_of(duck.directory / name)) == plain(
            schema_of(spark.directory / name)
        ), name
    keys = {"tags.parquet": ["tag", "member_id"]}
    for name in ("profiles.parquet", "predictions.parquet", "tags.parquet", "segments.parquet"):
        key = keys.get(name) or ["member_id"]
        assert differences(duck.directory / name, spark.directory / name, key) == [], name
    # The predictions' scratch (the RFM summary, written and read on S3) was dropped.
    assert not s3.exists(f"s3://{BUCKET}/{home.root.name}/warehouse/work/{spark.build_id}")


def test_spark_reads_the_s3_lake_and_writes_an_artifact_to_s3_object_by_object(
    cluster: Cluster,
    home: Home,
    s3: Storage,  # noqa: F811
) -> None:
    from memberwise.kit.warehouse import duckdb_backend, spark_backend, write_parquet

    lake = home.runtime.lake
    settings = home.runtime.settings
    con = spark_backend(master=cluster.url, conf=settings.spark_options(), storage=s3)
    target = f"s3://{BUCKET}/{home.root.name}/artifacts/events.parquet"
    events = lake.events_table(con)
    rows = write_parquet(con, events.order_by("event_id"), target)

    duck = duckdb_backend(storage=s3)
    try:
        expected = lake.events_table(duck).to_pyarrow().sort_by("event_id")
    finally:
        duck.disconnect()
    assert rows == expected.num_rows > 0
    # The manifest names every data object of one attempt folder, and nothing else is there.
    manifest = json.loads(s3.read_bytes(f"{target}/{MANIFEST}"))
    listed = manifest["files"]
    attempts = {name.split("/")[0] for name in listed}
    assert len(attempts) == 1 and next(iter(attempts)).startswith("attempt-")
    assert s3.listdir(target) == sorted([MANIFEST, *attempts])
    assert s3.listdir(f"{target}/{next(iter(attempts))}") == sorted(
        name.split("/")[1] for name in listed
    )
    # Object by object: each is a whole Parquet file; together they are the lake's events.
    parts = []
    for name in listed:
        with s3.fs(target).open(f"{target}/{name}", "rb") as handle:
            parts.append(pq.read_table(handle))
    written = pa.concat_tables(parts).sort_by("event_id")
    assert written.schema.names == expected.schema.names
    assert written.to_pylist() == expected.cast(written.schema).to_pylist()
    # Written again: a new attempt replaces the old one, which is deleted.
    write_parquet(con, events.filter(events.type == "purchase"), target)
    again = json.loads(s3.read_bytes(f"{target}/{MANIFEST}"))["files"]
    assert {n.split("/")[0] for n in again}.isdisjoint(attempts)
    assert not any(name in attempts for name in s3.listdir(target))
