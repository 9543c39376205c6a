"""DuckDB and Spark run the same Ibis expressions and agree: profiles field by field, details,
and every rule the rule language accepts.

Spark runs in local mode (CI installs the ``[spark]`` extra; Java 17 is on the machines). One
session serves the whole module: its JVM takes seconds to start.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import ibis
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings

from memberwise.demo.generator import generate_platform
from memberwise.events.bulk import ingest_paths
from memberwise.kit.lake import EventLake
from memberwise.kit.warehouse import duckdb_backend, spark_backend
from memberwise.profiles.features import member_profiles
from memberwise.profiles.rules import compile_rule, parse_rule
from tests.profiles.test_rules import CONDITIONS, FIELDS, ROWS

pytest.importorskip("pyspark")
pytestmark = pytest.mark.xdist_group("spark")  # one JVM per test process is plenty

END = datetime(2026, 11, 20, tzinfo=UTC)  # the 40 days hold Singles' Day


@pytest.fixture(scope="module")
def spark() -> ibis.BaseBackend:
    return spark_backend(master="local[2]")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> EventLake:
    """A small demo platform (members, channels, regions, orders, refunds, reviews...)."""
    root = tmp_path_factory.mktemp("engines")
    generate_platform(
        root / "demo", members=300, days=40, end=END.date(), events_per_member=60.0, workers=1
    )
    lake = EventLake(root / "lake")
    ingest_paths([root / "demo" / "events"], lake, deadletter_dir=root / "dead", now=END)
    return lake


def _rows(con: ibis.BaseBackend, table: ibis.Table, keys: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = con.to_pyarrow(table.order_by(keys)).to_pylist()
    return rows


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, float) or isinstance(right, float):
        if left is None or right is None:
            return left is right
        return math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(left, datetime) and isinstance(right, datetime):
        return left.replace(tzinfo=None) == right.replace(tzinfo=None)
    return bool(left == right)


def test_duckdb_and_spark_build_the_same_profiles(lake: EventLake, spark: ibis.BaseBackend) -> None:
    members = pa.table(
        {
            "member_id": ["m00000001", "m00000002"],
            "region": ["北京", None],
            "credit_stars": pa.array([6, None], pa.int32()),
        }
    )
    as_of = END - timedelta(hours=3)
    results = []
    for con in (duckdb_backend(), spark):
        profiles, details = member_profiles(
            lake.events_table(con),
            ibis.memtable(members),
            as_of=as_of,
            utc_offset=timedelta(hours=8),
        )
        results.append(
            (
                _rows(con, profiles, ["member_id"]),
                _rows(con, details, ["member_id", "detail", "rank"]),
            )
        )
    (duck_profiles, duck_details), (spark_profiles, spark_details) = results

    assert len(duck_profiles) == len(spark_profiles) > 250
    assert len(duck_details) == len(spark_details) > 1000
    differences = [
        (d["member_id"], name, value, s[name])
        for d, s in zip(duck_profiles, spark_profiles, strict=True)
        for name, value in d.items()
        if not _same(value, s[name])
    ]
    assert differences == []
    detail_differences = [
        (d, s)
        for d, s in zip(duck_details, spark_details, strict=True)
        if any(not _same(d[k], s[k]) for k in d)
    ]
    assert detail_differences == []
    # The data exercised the fields that differ most easily between engines.
    assert any(p["r_score"] == 5 for p in duck_profiles)
    assert any(p["price_band"] is not None for p in duck_profiles)
    assert any(p["singles_day_share_365d"] for p in duck_profiles)


@pytest.fixture(scope="module")
def duck() -> ibis.BaseBackend:
    return duckdb_backend()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=CONDITIONS)
def test_any_rule_it_accepts_runs_on_both_engines_with_the_same_answer(
    duck: ibis.BaseBackend, spark: ibis.BaseBackend, text: str
) -> None:
    table = ibis.memtable(ROWS)
    rule = parse_rule("r", text, FIELDS)
    expr = table.select("id", hit=compile_rule(rule, table)).order_by("id")
    answers = [con.to_pyarrow(expr).column("hit").to_pylist() for con in (duck, spark)]
    assert answers[0] == answers[1]
    assert None not in answers[0]


def test_the_lake_reader_is_the_same_on_both_engines(
    lake: EventLake, spark: ibis.BaseBackend
) -> None:
    counts = [
        lake.events_table(con).count().to_pyarrow().as_py() for con in (duckdb_backend(), spark)
    ]
    assert counts[0] == counts[1] > 10_000
