"""Spark writes artifacts from its executors (no result passes through the driver) into a
directory every reader takes, and takes its settings from memberwise's settings.

Spark runs in local mode; one session serves the module (its JVM takes seconds to start).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ibis
import pyarrow.parquet as pq
import pytest

from memberwise.kit.storage import parquet_files, read_table
from memberwise.kit.warehouse import (
    duckdb_backend,
    read_parquet,
    spark_backend,
    spark_conf,
    write_parquet,
)

pytest.importorskip("pyspark")
pytestmark = pytest.mark.xdist_group("spark")


@pytest.fixture(scope="module")
def spark() -> ibis.BaseBackend:
    return spark_backend(master="local[2]", conf={"spark.sql.shuffle.partitions": "3"})


def test_settings_reach_the_session_and_defaults_stay_defaults(spark: ibis.BaseBackend) -> None:
    assert spark._session.conf.get("spark.sql.shuffle.partitions") == "3"
    assert spark._session.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark_conf({"spark.driver.memory": "8g"})["spark.driver.memory"] == "8g"
    assert spark_conf()["spark.driver.memory"] == "4g"


def test_spark_writes_from_its_executors_and_every_reader_takes_the_directory(
    spark: ibis.BaseBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyspark.sql.classic.dataframe import DataFrame  # what Spark 4 sessions hand out

    def no_collect(*_: Any, **__: Any) -> None:
        raise AssertionError("a write must not collect the result into the driver")

    for name in ("toPandas", "toArrow", "collect", "toLocalIterator"):
        monkeypatch.setattr(DataFrame, name, no_collect)
    members = ibis.memtable(
        {
            "member_id": [f"m{i:03d}" for i in range(200)],
            "spend": [float(i % 17) for i in range(200)],
        }
    )
    out = tmp_path / "build" / "spend.parquet"
    expr = members.group_by(members.spend).aggregate(n=members.count()).order_by("spend")
    assert write_parquet(spark, expr, out) == 17
    files = parquet_files(out)
    assert out.is_dir() and len(files) >= 1 and all(f.endswith(".parquet") for f in files)
    assert not list(out.glob("*.crc")) and not list(out.glob(".*.crc"))
    monkeypatch.undo()
    expected = [{"spend": float(s), "n": 12 if s < 13 else 11} for s in range(17)]
    assert read_table(out).to_pylist() == expected  # part files in order: the sort is kept
    con = duckdb_backend()
    try:
        assert read_parquet(con, [out]).order_by("spend").to_pyarrow().to_pylist() == expected
    finally:
        con.disconnect()
    back = read_parquet(spark, [out]).order_by("spend")
    assert back.to_pyarrow().to_pylist() == expected
    # A file:// URI is the same place as its path.
    by_uri = tmp_path / "by-uri.parquet"
    assert write_parquet(spark, expr, by_uri.as_uri()) == 17
    assert read_table(by_uri.as_uri()).to_pylist() == expected
    # Rewriting replaces the whole directory; an empty result still carries its schema.
    empty = expr.filter(expr.n > 1000)
    assert write_parquet(spark, empty, out) == 0
    assert read_table(out).schema.names == ["spend", "n"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["spend.parquet"]  # no temp left
    assert pq.ParquetFile(parquet_files(out)[0]).metadata.num_rows == 0
