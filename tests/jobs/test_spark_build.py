"""The whole build on DuckDB and on Spark (local mode) over one small demo platform: every
output has the same Arrow schema on both engines, and the stages that run on the cluster when
the engine is Spark (predictions: BG/NBD, Gamma-Gamma, churn; personas) give the same values.

Runs only where pyspark imports; one Spark session and one pair of builds serve the module.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
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
    seed_feedback(home)
    try:
        yield home
    finally:
        home.runtime.close()


NEGATIVE = ("物流太慢了", "客服态度很差", "和描述不符", "用了两天就坏了", "退款一直不处理",
            "价格太贵了", "包装破损", "颜色不喜欢", "味道有点大")  # fmt: skip
POSITIVE = ("质量很好", "物流很快", "性价比高", "客服很耐心", "宝宝很喜欢")


def seed_feedback(home: Home) -> None:
    """More feedback than the small demo writes, so that every part of the analysis has work
    on both engines: about 200 distinct texts over six brands (clauses with and without an
    aspect, brand names jieba must keep whole), reviews, refunds and service messages over
    the last two months, and complaints about six items in the last week (the rising test
    flags some)."""
    from datetime import timedelta

    import pyarrow as pa

    from memberwise.events.bulk import ingest_paths

    demo = pq.read_table(home.root / "demo" / "events").to_pylist()
    buys = [e for e in demo if e["type"] == "purchase" and e["brand"] and e["merchant_id"]]
    items: dict[str, dict[str, Any]] = {}
    for e in buys:
        items.setdefault(e["brand"], e)
    chosen = sorted(items.values(), key=lambda e: e["brand"])[:6]
    members = sorted({e["member_id"] for e in buys})[:60]
    rows = []
    for n in range(480):
        source, turn = chosen[n % len(chosen)], n // len(chosen)
        bad = turn % 3 != 0
        clause = (NEGATIVE if bad else POSITIVE)[turn % (len(NEGATIVE) if bad else len(POSITIVE))]
        text = f"{source['brand']}{clause}" + ("，还行吧" if (n // 7) % 2 else "")
        kind = ("review", "refund", "service", "review")[n % 4] if bad else "review"
        rows.append({**source, "event_id": f"fb-{n}", "member_id": members[n % len(members)],
                     "type": kind, "ts": AS_OF - timedelta(hours=7 + 2.9 * n), "text": text,
                     "rating": (1 if bad else 5) if kind == "review" else None,
                     "price": None, "quantity": None})  # fmt: skip
    # Complaints in the last week about each brand's item (9 down to 1) and a few before it:
    # several keys to test, with different p-values for the false-discovery control.
    for i, (source, recent) in enumerate(zip(chosen, (9, 7, 5, 4, 3, 1), strict=True)):
        times = [5 + 17 * n for n in range(recent)] + [24 * (9 + 5 * n) for n in range(i)]
        for n, hours in enumerate(times):
            rows.append({**source, "event_id": f"fb-complaint-{i}-{n}",
                         "member_id": members[n], "type": "complaint",
                         "ts": AS_OF - timedelta(hours=hours), "text": NEGATIVE[n % 4],
                         "rating": None, "price": None, "quantity": None})  # fmt: skip
    folder = home.root / "feedback"
    folder.mkdir()
    schema = pq.read_schema(next((home.root / "demo" / "events").glob("*.parquet")))
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-0.parquet")
    result = ingest_paths([folder], home.runtime.lake, deadletter_dir=home.root / "dead", now=AS_OF)
    assert result.accepted == len(rows), result


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


#: Feedback and merchant artifacts and the columns that identify a row of each.
FEEDBACK_AND_MERCHANTS = (
    ("feedback_texts.parquet", ["text", "aspect"]),
    ("feedback_topics.parquet", ["level", "key", "aspect", "trigger"]),
    ("feedback_rising.parquet", ["level", "key"]),
    ("merchant_scorecards.parquet", ["merchant_id"]),
    ("merchant_items.parquet", ["merchant_id", "item_id"]),
    ("merchant_complaints.parquet", ["event_id"]),
)


def _sections(meta: dict[str, Any]) -> dict[str, Any]:
    """The feedback and merchants sections of a build's manifest, the flagged keys in one
    order (the embedded path lists them in its aggregate's order)."""
    feedback = dict(meta["feedback"])
    feedback["rising"] = sorted(feedback["rising"], key=lambda r: (r["level"], r["key"]))
    return {"feedback": feedback, "merchants": meta["merchants"]}


def _same_feedback_and_merchants(left: Path, right: Path) -> None:
    for name, key in FEEDBACK_AND_MERCHANTS:
        assert differences(left / name, right / name, key) == [], name
        left_schema = pq.read_table(left / name).schema.remove_metadata()
        assert plain(pq.read_table(right / name).schema) == plain(left_schema), name


def test_feedback_and_merchants_are_the_same_on_both_engines(
    builds: tuple[BuildResult, BuildResult],
) -> None:
    """The Spark build scored the texts and ran the rising test's statistics in the
    executors: every text row, topic, tested key and scorecard equals the embedded one."""
    duck, spark = builds
    left = json.loads((duck.directory / "build.json").read_text())
    right = json.loads((spark.directory / "build.json").read_text())

    assert _sections(right) == _sections(left)
    assert left["feedback"]["texts"] > 120 and left["feedback"]["topics"] > 10
    tested = pq.read_table(duck.directory / "feedback_rising.parquet").to_pylist()
    assert len(tested) >= 8 and 1 <= sum(r["rising"] for r in tested) < len(tested)
    assert len({r["q_value"] for r in tested}) >= 3  # several keys were tested
    _same_feedback_and_merchants(duck.directory, spark.directory)


@contextmanager
def capped_collect(limit: int) -> Iterator[list[int]]:
    """Within the block the bulk ways of bringing a Spark table to the driver refuse and
    ``collect`` may bring at most ``limit`` rows at a time; yields the sizes collected."""
    from pyspark.sql.classic.dataframe import DataFrame  # what sessions hand out in Spark 4

    collected: list[int] = []
    collect = DataFrame.collect

    def small_collect(self: Any) -> Any:
        rows = collect(self)
        collected.append(len(rows))
        assert len(rows) <= limit, f"{len(rows)} rows collected into the driver"
        return rows

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a Spark table was brought into the driver")

    with pytest.MonkeyPatch.context() as patch:
        for name in ("toPandas", "toArrow", "toLocalIterator", "_collect_as_arrow"):
            patch.setattr(DataFrame, name, refuse)
        patch.setattr(DataFrame, "collect", small_collect)
        yield collected


def test_feedback_and_merchants_on_spark_bring_no_member_sized_data_to_the_driver(
    home: Home, builds: tuple[BuildResult, BuildResult], tmp_path: Path
) -> None:
    """Both stages run again on Spark with every bulk way to the driver refused: only the
    brand names (for jieba's dictionary), the flagged keys and counts come back, and the
    artifacts and manifest sections are the embedded build's."""
    from memberwise.feedback.stage import stage_feedback
    from memberwise.merchants.stage import stage_merchants

    duck, _ = builds
    brands = pq.read_table(duck.directory / "merchant_items.parquet").num_rows  # an upper bound
    directory = tmp_path / "feedback-only"
    directory.mkdir()
    result = BuildResult(build_id="feedback-only", directory=directory, as_of=AS_OF, engine="spark")
    options = home.runtime.settings.backend_options()
    with open_backend("spark", **options) as con, capped_collect(min(brands, 200)) as collected:
        ctx = BuildContext(home.runtime, home.program, con, directory, result, lambda *a: None, {})
        stage_feedback(ctx)
        stage_merchants(ctx)

    assert collected and sum(collected) < 300
    expected = json.loads((duck.directory / "build.json").read_text())
    assert _sections(ctx.meta["sections"]) == _sections(expected)
    _same_feedback_and_merchants(duck.directory, directory)


def test_tiers_preview_on_spark_is_the_embedded_preview(
    home: Home, builds: tuple[BuildResult, BuildResult]
) -> None:
    """``memberwise tiers preview`` with the Spark engine evaluates in the executors (the
    build's evaluation) and aggregates there: with every bulk way to the driver refused it
    gives the embedded preview, which is the build's own summary (nothing was published)."""
    duck, _ = builds
    embedded = stage.preview(home.runtime, home.program, duck.directory)
    spark_settings = home.runtime.settings.model_copy(update={"engine": Engine.spark})
    on_spark = dataclasses.replace(home.runtime, settings=spark_settings)
    with capped_collect(40) as collected:
        distributed = stage.preview(on_spark, home.program, duck.directory)

    assert distributed == embedded
    assert collected and sum(collected) < 60  # the summary and the invited members
    assert embedded["members"] == duck.members > 200
    summary = json.loads((duck.directory / "build.json").read_text())["tiers"]
    assert {k: v for k, v in embedded.items() if k in summary} == summary
    assert embedded["changes"]["downgrade"] >= 1 and embedded["invitations"]["invited"] >= 1
    assert not list((home.runtime.settings.home / "warehouse" / "work").iterdir())
