"""The whole build on DuckDB and on Spark (local mode) over one small demo platform: every
output has the same Arrow schema on both engines, and the stages that run on the cluster when
the engine is Spark (predictions: BG/NBD, Gamma-Gamma, churn; personas) give the same values.

Runs only where pyspark imports; one Spark session and one pair of builds serve the module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from memberwise.builds import BuildResult
from memberwise.config import Engine
from tests.jobs.spark_parity import (
    artifacts,
    build,
    differences,
    make_home,
    plain,
    schema_of,
)

pytest.importorskip("pyspark")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("spark")]


@pytest.fixture(scope="module")
def builds(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[BuildResult, BuildResult]]:
    home = make_home(tmp_path_factory.mktemp("spark-build"), sqlite_template)
    try:
        yield build(home, Engine.duckdb), build(home, Engine.spark)
    finally:
        home.runtime.close()


def test_every_output_has_the_same_arrow_schema_on_both_engines(
    builds: tuple[BuildResult, BuildResult],
) -> None:
    duck, spark = builds
    names = artifacts(duck.directory)

    assert names == artifacts(spark.directory)
    assert {"profiles.parquet", "predictions.parquet", "segments.parquet"} <= set(names)
    for name in names:
        left, right = schema_of(duck.directory / name), schema_of(spark.directory / name)
        assert plain(left) == plain(right), name
    # Keys are never null, whichever engine wrote them.
    for name in ("profiles.parquet", "predictions.parquet", "segments.parquet"):
        for directory in (duck.directory, spark.directory):
            assert pq.read_table(directory / name).column("member_id").null_count == 0


def test_predictions_are_the_same_on_both_engines(
    builds: tuple[BuildResult, BuildResult],
) -> None:
    duck, spark = builds
    left = json.loads((duck.directory / "predictions.json").read_text())
    right = json.loads((spark.directory / "predictions.json").read_text())

    # The driver fitted BG/NBD on the collapsed (x, t_x, T) rows and got the embedded fit.
    assert right["bgnbd"]["status"] == "fitted"
    assert right["bgnbd"]["params"] == pytest.approx(left["bgnbd"]["params"], rel=1e-9)
    assert right["bgnbd"]["collapsed_rows"] == left["bgnbd"]["diagnostics"]["distinct_rows"]
    assert right["gammagamma"]["params"] == pytest.approx(left["gammagamma"]["params"], rel=1e-9)
    # Churn was trained (every member of this small snapshot is in the sample).
    assert left["churn"]["status"] == right["churn"]["status"] == "fitted"
    assert right["churn"]["sample"]["members"] == right["churn"]["sample"]["of"] > 100
    assert right["churn"]["auc"] == pytest.approx(left["churn"]["auc"], rel=1e-9)
    assert (left["customers"], left["repeat_buyers"]) == (
        right["customers"],
        right["repeat_buyers"],
    )
    # Every member's scores, from the executors, equal the embedded path's.
    assert (
        differences(
            duck.directory / "predictions.parquet",
            spark.directory / "predictions.parquet",
            ["member_id"],
        )
        == []
    )
    # ... and the profiles later stages read carry them.
    assert (
        differences(
            duck.directory / "profiles.parquet", spark.directory / "profiles.parquet", ["member_id"]
        )
        == []
    )


def test_personas_are_the_same_on_both_engines(builds: tuple[BuildResult, BuildResult]) -> None:
    duck, spark = builds
    left = json.loads((duck.directory / "build.json").read_text())
    right = json.loads((spark.directory / "build.json").read_text())

    assert len(left["personas"]) >= 3
    assert right["personas"] == left["personas"]
    assert right["persona_silhouette"].keys() == left["persona_silhouette"].keys()
    # The standardization comes from Spark's aggregates (its own log1p and two-pass
    # variance), a few ulps off NumPy's; k-means' tolerance carries that to ~1e-6 here.
    for k, score in left["persona_silhouette"].items():
        assert right["persona_silhouette"][k] == pytest.approx(score, rel=1e-5)
    assert (
        differences(
            duck.directory / "segments.parquet", spark.directory / "segments.parquet", ["member_id"]
        )
        == []
    )


def test_recommendations_run_on_the_cluster_for_every_profiled_member(
    builds: tuple[BuildResult, BuildResult],
) -> None:
    duck, spark = builds
    section = json.loads((spark.directory / "build.json").read_text())["recommendations"]

    # Spark ML's ALS, the SQL co-occurrence and the executors' ranker made these lists.
    assert section["info"]["engine"] == "spark"
    lists = pq.read_table(spark.directory / "recommendations.parquet")
    profiled = pq.read_table(duck.directory / "profiles.parquet").column("member_id")
    assert set(lists.column("member_id").to_pylist()) == set(profiled.to_pylist())
    assert lists.column("member_id").null_count == lists.column("item_id").null_count == 0
