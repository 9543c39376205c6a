"""The whole build on DuckDB and on Spark (local mode) over one small demo platform: every
output has the same Arrow schema on both engines, and the stages that run on the cluster when
the engine is Spark (predictions: BG/NBD, Gamma-Gamma, churn; personas) give the same values.

Runs only where pyspark imports; one Spark session and one pair of builds serve the module.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from memberwise.builds import BuildContext, BuildResult
from memberwise.config import Engine
from memberwise.kit.warehouse import open_backend
from memberwise.membership import stage
from tests.jobs.spark_parity import (
    AS_OF,
    Home,
    artifacts,
    build,
    campaign_program,
    differences,
    make_home,
    plain,
    points_program,
    schema_of,
    seed_points,
    seed_tiers,
    tier_program,
)

pytest.importorskip("pyspark")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("spark")]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Home]:
    """The demo home, with stored tiers to evaluate against, a black card with slots, tiers
    that also qualify by points earned (with ledger orders that earn them) and coupon
    campaigns."""
    home = make_home(tmp_path_factory.mktemp("spark-build"), sqlite_template)
    home.program = campaign_program(points_program(tier_program(home.program)))
    seed_points(home, seed_tiers(home))
    try:
        yield home
    finally:
        home.runtime.close()


@pytest.fixture(scope="module")
def builds(home: Home) -> tuple[BuildResult, BuildResult]:
    return build(home, Engine.duckdb), build(home, Engine.spark)


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


def test_tiers_and_invitations_are_the_same_on_both_engines(
    builds: tuple[BuildResult, BuildResult],
) -> None:
    """The Spark build evaluated the stored tiers in the executors (the seeded grace,
    protection, manual, invitation and dropped-tier cases) and ranked the black card on the
    cluster: every tier row, every invitation and the summary equal the embedded ones."""
    duck, spark = builds
    left = json.loads((duck.directory / "build.json").read_text())["tiers"]
    right = json.loads((spark.directory / "build.json").read_text())["tiers"]

    assert right == left
    assert left["changes"]["downgrade"] >= 1
    assert left["notices"] >= 1 and left["invitations"]["invited"] >= 1
    # Points earned qualified some members, in a window and since their last change.
    reasons = [
        r or "" for r in pq.read_table(duck.directory / "tiers.parquet")["reason"].to_pylist()
    ]
    assert any(r.startswith("qualified for gold: points_365d") for r in reasons)
    assert any(r.startswith("qualified for platinum: points_since_change") for r in reasons)
    assert pq.read_table(spark.directory / "tiers.parquet").num_rows == spark.members > 200
    for name, key in (("tiers.parquet", ["member_id"]), ("invitations.parquet", ["rank"])):
        assert differences(duck.directory / name, spark.directory / name, key) == [], name
        left_schema = pq.read_table(duck.directory / name).schema.remove_metadata()
        assert pq.read_table(spark.directory / name).schema.remove_metadata() == left_schema


def test_the_tiers_stage_on_spark_brings_no_member_sized_data_to_the_driver(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every way a Spark result reaches the Python driver is watched while the stage runs:
    the bulk ones refuse, and ``collect`` may only bring back aggregates and the invited few.
    The stage still completes, with the embedded path's rows and summary."""
    from pyspark.sql.classic.dataframe import DataFrame  # what sessions hand out in Spark 4

    duck = build(home, Engine.duckdb, ["profiles", "tiers"])
    directory = tmp_path / "tiers-only"
    directory.mkdir()
    shutil.copy(duck.directory / "profiles.parquet", directory / "profiles.parquet")
    collected: list[int] = []
    collect = DataFrame.collect

    def small_collect(self: Any) -> Any:
        rows = collect(self)
        collected.append(len(rows))
        assert len(rows) <= 40, f"{len(rows)} rows collected into the driver"
        return rows

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("the tiers stage must not bring a table into the driver")

    for name in ("toPandas", "toArrow", "toLocalIterator", "_collect_as_arrow"):
        monkeypatch.setattr(DataFrame, name, refuse)
    monkeypatch.setattr(DataFrame, "collect", small_collect)
    result = BuildResult(build_id="tiers-only", directory=directory, as_of=AS_OF, engine="spark")
    options = home.runtime.settings.backend_options()
    with open_backend("spark", **options) as con:
        ctx = BuildContext(home.runtime, home.program, con, directory, result, lambda *a: None, {})
        written = stage.run_stage(ctx)
    monkeypatch.undo()

    assert written == duck.members > 200
    assert collected and sum(collected) < 60  # a summary and the invited members
    expected = json.loads((duck.directory / "build.json").read_text())["tiers"]
    assert ctx.meta["sections"]["tiers"] == expected
    assert expected["invitations"]["invited"] >= 1
    for name, key in (("tiers.parquet", ["member_id"]), ("invitations.parquet", ["rank"])):
        assert differences(duck.directory / name, directory / name, key) == [], name


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
    # The coupon campaigns were targeted in the executors, with the embedded path's result.
    left = pq.read_table(duck.directory / "coupon_suggestions.parquet")
    right = pq.read_table(spark.directory / "coupon_suggestions.parquet")
    assert right.schema == left.schema
    assert right.to_pylist() == left.to_pylist()
    assert set(left.column("campaign").to_pylist()) == {"vip", "welcome", "big"}
    assert section["targeting_problems"] == []
