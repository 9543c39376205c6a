"""Spark reads and writes Parquet on S3 (a local moto server) through the fsspec data source:
the executors move the rows, the driver only commits the manifest; a failed job leaves the
previous artifact whole; an empty result still carries its schema; the reading tasks follow
the objects' bytes.

Spark runs in local mode (one session for the module); the standalone-cluster version of
these checks is in tests/jobs/test_spark_cluster.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import ibis
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memberwise.kit.storage import MANIFEST, Storage
from tests.kit.test_storage import BUCKET, s3  # noqa: F401  (the S3 server fixture)

pytest.importorskip("pyspark")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("spark")]


@pytest.fixture(scope="module")
def spark(s3: Storage) -> ibis.BaseBackend:  # noqa: F811
    from memberwise.kit.warehouse import spark_backend

    return spark_backend(master="local[2]", storage=s3)


def _put(storage: Storage, uri: str, table: pa.Table) -> None:
    with storage.fs(uri).open(uri, "wb") as handle:
        pq.write_table(table, handle)


def test_spark_round_trips_s3_objects_without_collecting_and_a_failed_job_changes_nothing(
    spark: ibis.BaseBackend,
    s3: Storage,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyspark.sql.classic.dataframe import DataFrame  # what Spark 4 sessions hand out

    from memberwise.kit import sparkstore
    from memberwise.kit.warehouse import read_parquet, write_parquet

    root = f"s3://{BUCKET}/sparkstore"
    for day in range(3):
        values = list(range(day * 10, day * 10 + 10))
        _put(
            s3,
            f"{root}/in/day={day}/part.parquet",
            pa.table({"v": values, "s": [f"x{v}" for v in values]}),
        )

    def no_collect(*_: Any, **__: Any) -> None:
        raise AssertionError("the rows must not pass through the driver")

    for name in ("toPandas", "toArrow", "collect", "toLocalIterator"):
        monkeypatch.setattr(DataFrame, name, no_collect)
    table = read_parquet(spark, [f"{root}/in/day={day}/part.parquet" for day in range(3)])
    out = f"{root}/out.parquet"
    assert write_parquet(spark, table.mutate(w=table.v * 2).order_by("v"), out) == 30
    monkeypatch.undo()

    manifest = s3.read_bytes(f"{out}/{MANIFEST}")
    written = s3.read_table(out)
    assert written.to_pylist() == [{"v": v, "s": f"x{v}", "w": 2 * v} for v in range(30)]
    assert written.schema.field("v").type == pa.int64()

    # A task that fails: the job aborts, its attempt is deleted, the old artifact stands.
    session = spark._session

    def boom(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows:
                raise ValueError("a task failed")
            yield batch

    failing = session.range(5).mapInArrow(boom, "id long")
    with pytest.raises(Exception, match="a task failed"):
        sparkstore.write(failing, out, s3)
    assert s3.read_bytes(f"{out}/{MANIFEST}") == manifest
    attempts = {name.split("/")[0] for name in json.loads(manifest)["files"]}
    assert {n for n in s3.listdir(out) if n.startswith("attempt-")} == attempts
    assert s3.read_table(out).num_rows == 30

    # An empty result is one empty object with the schema.
    assert write_parquet(spark, table.filter(table.v > 100), out) == 0
    assert s3.read_table(out).schema.names == ["v", "s"]


def test_reading_tasks_follow_the_objects_bytes(s3: Storage) -> None:  # noqa: F811
    from memberwise.kit.sparkstore import reading_tasks

    root = f"s3://{BUCKET}/sizing"
    files = [f"{root}/d={d}/part.parquet" for d in range(6)]
    for uri in files:
        _put(s3, uri, pa.table({"v": list(range(1000))}))
    size = s3.fs(root).info(files[0])["size"]
    assert reading_tasks(files, s3, task_bytes=10**9) == 1
    assert reading_tasks(files, s3, task_bytes=size * 2) == 3
    assert reading_tasks(files, s3, task_bytes=1) == 6
    assert reading_tasks([], s3, task_bytes=1) == 1
