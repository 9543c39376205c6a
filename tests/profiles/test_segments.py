"""Lifecycle segments: the built-in rules put each hand-made profile where the docs say, the first
match wins, and every member gets exactly one segment whatever its fields hold."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import ibis
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memberwise.profiles.rules import RuleError
from memberwise.profiles.segments import LIFECYCLE, Segment, segment_column

COLUMNS = ("tenure_days", "r_score", "f_score", "m_score", "recency_days", "days_since_last_seen")

# member_id, expected segment, then COLUMNS (None = null). Each row says why in its name.
PROFILES: list[tuple[Any, ...]] = [
    ("new_champion", "new", 10, 5, 5, 5, 2, 1),  # new beats champion
    ("champion", "champion", 400, 5, 5, 5, 3, 1),
    ("champion_edge", "champion", 400, 4, 4, 4, 20, 1),
    ("slipping", "at_risk", 400, 2, 4, 3, 61, 5),
    ("loyal_but_silent", "at_risk", 400, 3, 5, 5, 70, 2),  # at_risk is tried before loyal
    ("loyal", "loyal", 400, 3, 4, 2, 40, 3),
    ("frequent_at_60", "potential", 400, 2, 3, 1, 60, 3),  # 60 days is not yet at risk
    ("active", "active", 400, 3, 2, 2, 30, 3),
    ("bought_90_days_ago", "potential", 400, 1, 1, 1, 90, 4),
    ("browser", "potential", 200, None, None, None, None, 30),
    ("browser_31", "hibernating", 200, None, None, None, None, 31),
    ("bought_180_days_ago", "hibernating", 400, 1, 1, 1, 180, 120),
    ("seen_90_days_ago", "hibernating", 400, 1, 1, 1, 300, 90),
    ("lost_buyer", "lost", 400, 1, 1, 1, 181, 91),
    ("lost_browser", "lost", 400, None, None, None, None, 365),
    ("all_null", "lost", None, None, None, None, None, None),
]


def _table(rows: Sequence[Sequence[Any]]) -> pa.Table:
    data: dict[str, pa.Array] = {"member_id": pa.array([r[0] for r in rows], pa.string())}
    for i, name in enumerate(COLUMNS):
        data[name] = pa.array([r[i + 2] for r in rows], pa.int64())
    return pa.table(data)


@pytest.fixture(scope="module")
def con() -> Iterator[ibis.BaseBackend]:
    backend = ibis.duckdb.connect()
    yield backend
    backend.disconnect()


def _segments(
    con: ibis.BaseBackend, table: pa.Table, segments: Sequence[Segment] = LIFECYCLE
) -> dict[str, str | None]:
    t = ibis.memtable(table)
    result = con.to_pyarrow(t.select("member_id", segment=segment_column(t, segments)))
    return dict(zip(result["member_id"].to_pylist(), result["segment"].to_pylist(), strict=True))


def test_lifecycle_names_and_order() -> None:
    assert [s.name for s in LIFECYCLE] == [
        "new",
        "champion",
        "at_risk",
        "loyal",
        "active",
        "potential",
        "hibernating",
        "lost",
    ]
    assert LIFECYCLE[-1].rule == "true"
    assert all(s.description for s in LIFECYCLE)


def test_hand_made_profiles_get_the_documented_segment(con: ibis.BaseBackend) -> None:
    # given profiles chosen at each rule's edges, when segmented, then each lands as documented
    got = _segments(con, _table(PROFILES))
    assert got == {row[0]: row[1] for row in PROFILES}


def test_program_segments_first_match_wins(con: ibis.BaseBackend) -> None:
    segments = [
        Segment(name="whale", rule="m_score >= 5"),
        Segment(name="recent", rule="recency_days <= 30"),
        Segment(name="everyone", rule=True),  # YAML's bare `true`
    ]
    got = _segments(con, _table(PROFILES), segments)
    assert got["champion"] == "whale"  # also recent: the first match wins
    assert got["active"] == "recent"
    assert got["all_null"] == "everyone"
    assert segments[2].rule == "true"


def test_a_member_matching_no_segment_gets_null(con: ibis.BaseBackend) -> None:
    got = _segments(con, _table(PROFILES), [Segment(name="recent", rule="recency_days <= 30")])
    assert got["champion"] == "recent"
    assert got["lost_buyer"] is None


def test_refuses_no_segments_and_bad_rules() -> None:
    table = ibis.memtable(_table(PROFILES))
    with pytest.raises(ValueError, match="at least one segment"):
        segment_column(table, [])
    with pytest.raises(RuleError) as caught:
        segment_column(table, [Segment(name="bad", rule="recency_dayz <= 30")])
    assert caught.value.details == {"rule": "bad", "position": 1}


@pytest.mark.parametrize("name", ["Champion", "2nd", "big spender", "", "a" * 64])
def test_segment_names_are_lowercase_identifiers(name: str) -> None:
    with pytest.raises(ValueError, match="is not a lowercase identifier"):
        Segment(name=name, rule="true")


def _reference(row: dict[str, int | None]) -> str:
    """The lifecycle rules in plain Python, null comparisons false (SQL's unknown)."""

    def le(field: str, bound: int) -> bool:
        value = row[field]
        return value is not None and value <= bound

    def ge(field: str, bound: int) -> bool:
        value = row[field]
        return value is not None and value >= bound

    def gt(field: str, bound: int) -> bool:
        value = row[field]
        return value is not None and value > bound

    if le("tenure_days", 30):
        return "new"
    if ge("r_score", 4) and ge("f_score", 4) and ge("m_score", 4):
        return "champion"
    if ge("f_score", 3) and gt("recency_days", 60):
        return "at_risk"
    if ge("f_score", 4) and ge("r_score", 3):
        return "loyal"
    if le("recency_days", 30):
        return "active"
    if le("recency_days", 90) or (row["recency_days"] is None and le("days_since_last_seen", 30)):
        return "potential"
    if le("recency_days", 180) or le("days_since_last_seen", 90):
        return "hibernating"
    return "lost"


_days = st.one_of(st.none(), st.integers(0, 400))
_score = st.one_of(st.none(), st.integers(1, 5))
_row = st.fixed_dictionaries(
    {
        "tenure_days": _days,
        "r_score": _score,
        "f_score": _score,
        "m_score": _score,
        "recency_days": _days,
        "days_since_last_seen": _days,
    }
)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(_row, min_size=1, max_size=40))
def test_every_member_gets_exactly_one_segment(
    con: ibis.BaseBackend, rows: list[dict[str, int | None]]
) -> None:
    table = _table([(f"m{i}", None, *(r[c] for c in COLUMNS)) for i, r in enumerate(rows)])
    got = _segments(con, table)
    assert len(got) == len(rows)  # one row per member, none lost or duplicated
    assert got == {f"m{i}": _reference(r) for i, r in enumerate(rows)}


@pytest.mark.slow
def test_spark_gives_the_same_segments() -> None:
    """Runs only where pyspark imports; Spark's JVM takes ~10-25 s to start."""
    pytest.importorskip("pyspark")
    from memberwise.kit.warehouse import spark_backend

    spark = spark_backend(master="local[1]")
    assert _segments(spark, _table(PROFILES)) == {row[0]: row[1] for row in PROFILES}
