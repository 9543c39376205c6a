"""Publishing a build directory to the operational store, and reading the published build."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Connection, select

from memberwise.kit.pagination import InvalidCursor
from memberwise.profiles import service
from memberwise.profiles.fields import FIELD_NAMES
from memberwise.profiles.schemas import DetailItem, PersonaFeature, PersonaOut, SegmentOut, TagOut
from memberwise.profiles.tables import builds, member_profiles, profile_groups
from tests.profiles.factories import AS_OF, FakeMember, write_build, write_synthetic_build

FIRST_SEEN = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
LAST_SEEN = datetime(2026, 11, 19, 22, 0, tzinfo=UTC)
M1 = FakeMember(
    "m1",
    "active",
    persona=0,
    tags=("night_owl", "big_spender"),
    fields={
        "region": "浙江",
        "credit_stars": 5,
        "first_seen": FIRST_SEEN,
        "last_seen": LAST_SEEN,
        "events_30d": 42,
        "spend_365d": 1_250_000,
        "refund_rate_365d": 0.25,
        "share_events_22_to_02": 0.5,
        "top_channel_share": float("nan"),  # JSON has no NaN: published as null
    },
    details={
        "top_categories": [("c1", 0.5), ("c2", 0.3), ("c3", 0.2)],
        "price_bands": [("c1", 4.0)],
        "channel_mix": [("app", 0.75), ("web", 0.25)],
    },
)
MEMBERS = [
    M1,
    FakeMember("m2", "active", persona=1, tags=("night_owl",), fields={"region": "上海"}),
    FakeMember("m3", "new"),
    FakeMember("m4", "at_risk", persona=0, tags=("big_spender",)),
    FakeMember("m5", "active", persona=1),
]


def _rows(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the three tables, in key order."""
    return {
        t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
        for t in (builds, member_profiles, profile_groups)
    }


def test_a_published_profile_reads_back_with_every_field(conn: Connection, tmp_path: Path) -> None:
    result = service.publish_build(conn, write_build(tmp_path, "b1", MEMBERS))

    assert (result.build_id, result.as_of, result.members, result.removed) == ("b1", AS_OF, 5, 0)
    assert (result.segments, result.personas, result.tags) == (4, 2, 3)
    profile = service.get_profile(conn, "m1")
    assert (profile.member_id, profile.build_id, profile.as_of) == ("m1", "b1", AS_OF)
    assert profile.published_at == result.published_at
    assert (profile.segment, profile.persona, profile.tags) == (
        "active",
        0,
        ["big_spender", "night_owl"],
    )
    expected = dict.fromkeys(FIELD_NAMES) | {
        "region": "浙江",
        "credit_stars": 5,
        "first_seen": "2025-01-02T03:04:05.123456Z",
        "last_seen": "2026-11-19T22:00:00Z",
        "events_30d": 42,
        "spend_365d": 1_250_000,
        "refund_rate_365d": 0.25,
        "share_events_22_to_02": 0.5,
    }
    assert profile.fields == expected
    assert list(profile.fields) == list(FIELD_NAMES)
    assert type(profile.fields["events_30d"]) is int
    assert profile.details == {
        "top_categories": [
            DetailItem(key="c1", value=0.5),
            DetailItem(key="c2", value=0.3),
            DetailItem(key="c3", value=0.2),
        ],
        "top_brands": [],
        "price_bands": [DetailItem(key="c1", value=4.0)],
        "channel_mix": [DetailItem(key="app", value=0.75), DetailItem(key="web", value=0.25)],
    }


def test_a_member_with_nothing_but_a_segment_has_null_fields_and_empty_lists(
    conn: Connection, tmp_path: Path
) -> None:
    service.publish_build(conn, write_build(tmp_path, "b1", MEMBERS))
    profile = service.get_profile(conn, "m3")
    assert (profile.segment, profile.persona, profile.tags) == ("new", None, [])
    assert profile.fields == dict.fromkeys(FIELD_NAMES)
    assert profile.details == {d: [] for d in profile.details}
    assert sorted(profile.details) == ["channel_mix", "price_bands", "top_brands", "top_categories"]


def test_segments_personas_and_tags_count_their_members(conn: Connection, tmp_path: Path) -> None:
    service.publish_build(conn, write_build(tmp_path, "b1", MEMBERS))

    segments = service.list_segments(conn)
    assert (segments.build_id, segments.as_of) == ("b1", AS_OF)
    assert segments.segments == [
        SegmentOut(
            name="new",
            members=1,
            rule="tenure_days <= 30",
            description="joined in the last 30 days",
        ),
        SegmentOut(
            name="active",
            members=3,
            rule="days_since_last_seen <= 30",
            description="seen this month",
        ),
        SegmentOut(
            name="at_risk", members=1, rule="days_since_last_seen > 30", description="drifting away"
        ),
        SegmentOut(
            name="churned", members=0, rule="days_since_last_seen > 180", description="gone quiet"
        ),
    ]
    assert segments.personas == [
        PersonaOut(
            name="persona-0",
            id=0,
            label="Night-owl gamers",
            members=2,
            description="late, loyal, electronics",
            top_features=[PersonaFeature(field="share_events_22_to_02", z=2.5)],
        ),
        PersonaOut(
            name="persona-1",
            id=1,
            label="Thrifty parents",
            members=2,
            description="daytime, baby goods, low price bands",
            top_features=[
                PersonaFeature(field="price_band", z=-1.25),
                PersonaFeature(field="orders_365d", z=0.5),
            ],
        ),
    ]
    tags = service.list_tags(conn)
    assert tags.build_id == "b1"
    assert tags.tags == [
        TagOut(
            name="night_owl",
            members=2,
            rule="share_events_22_to_02 >= 0.4",
            description="shops at night",
        ),
        TagOut(
            name="big_spender", members=2, rule="spend_365d >= 1000000", description="spends a lot"
        ),
        TagOut(name="bargain_hunter", members=0, rule="price_band <= 1", description="buys cheap"),
    ]


def test_publishing_the_same_build_again_changes_nothing(conn: Connection, tmp_path: Path) -> None:
    build = write_build(tmp_path, "b1", MEMBERS)
    first = service.publish_build(conn, build)
    before = _rows(conn)

    again = service.publish_build(conn, build)

    assert _rows(conn) == before
    assert (first.written, again.written) == (5, 0)  # by difference: nothing to write again
    assert again == first.model_copy(update={"written": 0})
    assert [len(before[t]) for t in ("builds", "member_profiles", "profile_groups")] == [1, 5, 9]


def test_a_member_absent_from_a_later_build_disappears(conn: Connection, tmp_path: Path) -> None:
    service.publish_build(conn, write_build(tmp_path, "b1", MEMBERS))
    later = [
        FakeMember("m1", "at_risk", persona=1, tags=("bargain_hunter",)),
        FakeMember("m2", "active"),
        FakeMember("m6", "new", persona=0),
    ]
    as_of = datetime(2026, 11, 21, tzinfo=UTC)

    result = service.publish_build(conn, write_build(tmp_path, "b2", later, as_of=as_of))

    assert (result.members, result.removed) == (3, 3)
    for gone in ("m3", "m4", "m5"):
        with pytest.raises(service.ProfileNotFound) as missing:
            service.get_profile(conn, gone)
        assert missing.value.code == "profile_not_found"
    m1 = service.get_profile(conn, "m1")
    assert (m1.build_id, m1.as_of, m1.segment, m1.persona, m1.tags) == (
        "b2",
        as_of,
        "at_risk",
        1,
        ["bargain_hunter"],
    )
    assert m1.fields == dict.fromkeys(FIELD_NAMES)
    statuses = conn.execute(select(builds.c.build_id, builds.c.status).order_by("build_id")).all()
    assert [tuple(s) for s in statuses] == [("b1", "superseded"), ("b2", "published")]
    segments = service.list_segments(conn)
    assert segments.build_id == "b2"
    assert [(s.name, s.members) for s in segments.segments] == [
        ("new", 1),
        ("active", 1),
        ("at_risk", 1),
        ("churned", 0),
    ]
    assert [(t.name, t.members) for t in service.list_tags(conn).tags] == [
        ("night_owl", 0),
        ("big_spender", 0),
        ("bargain_hunter", 1),
    ]
    page = service.segment_members(conn, "active")
    assert [m.member_id for m in page.items] == ["m2"]


def test_publishing_an_earlier_build_again_makes_it_the_shown_one(
    conn: Connection, tmp_path: Path
) -> None:
    b1 = write_build(tmp_path, "b1", MEMBERS)
    first = service.publish_build(conn, b1)
    service.publish_build(conn, write_build(tmp_path, "b2", MEMBERS[:2]))

    back = service.publish_build(conn, b1)

    assert (back.members, back.removed) == (5, 0)
    assert back.published_at > first.published_at
    assert service.list_segments(conn).build_id == "b1"
    assert service.get_profile(conn, "m5").build_id == "b1"
    statuses = conn.execute(select(builds.c.build_id, builds.c.status).order_by("build_id")).all()
    assert [tuple(s) for s in statuses] == [("b1", "published"), ("b2", "superseded")]


def test_paging_walks_every_member_of_a_segment_exactly_once(
    conn: Connection, tmp_path: Path
) -> None:
    build = write_synthetic_build(tmp_path, "big", 300, seed=7)
    service.publish_build(conn, build)
    segments = pq.read_table(build / "segments.parquet").to_pylist()

    for name, wanted in [
        ("active", sorted(s["member_id"] for s in segments if s["segment"] == "active")),
        ("persona-1", sorted(s["member_id"] for s in segments if s["persona"] == 1)),
    ]:
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page = service.segment_members(conn, name, cursor, 7)
            assert len(page.items) <= 7
            seen += [m.member_id for m in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert len(wanted) > 30
        assert seen == wanted  # every member once, in member_id order


def test_a_segment_member_shows_segment_persona_and_tags(conn: Connection, tmp_path: Path) -> None:
    service.publish_build(conn, write_build(tmp_path, "b1", MEMBERS))
    page = service.segment_members(conn, "persona-0", None, 1)
    assert [(m.member_id, m.segment, m.persona, m.tags) for m in page.items] == [
        ("m1", "active", 0, ["big_spender", "night_owl"])
    ]
    rest = service.segment_members(conn, "persona-0", page.next_cursor, 1)
    assert [m.member_id for m in rest.items] == ["m4"]
    assert rest.next_cursor is None
    assert service.segment_members(conn, "churned").items == []


def test_unknown_segments_and_profiles_are_not_found(conn: Connection, tmp_path: Path) -> None:
    with pytest.raises(service.SegmentNotFound):
        service.segment_members(conn, "active")  # nothing published yet
    nothing = service.list_segments(conn)
    assert (nothing.build_id, nothing.segments, nothing.personas) == (None, [], [])
    assert service.list_tags(conn).tags == []

    service.publish_build(conn, write_build(tmp_path, "b1", MEMBERS))

    for name in ("vip", "persona-7", "night_owl"):
        with pytest.raises(service.SegmentNotFound) as missing:
            service.segment_members(conn, name)
        assert (missing.value.code, missing.value.status_code) == ("segment_not_found", 404)
    with pytest.raises(service.ProfileNotFound) as no_profile:
        service.get_profile(conn, "m404")
    assert (no_profile.value.code, no_profile.value.status_code) == ("profile_not_found", 404)
    with pytest.raises(InvalidCursor):
        service.segment_members(conn, "active", "_w")


def test_a_broken_build_is_refused_and_writes_nothing(conn: Connection, tmp_path: Path) -> None:
    good = write_build(tmp_path, "b1", MEMBERS)
    broken = write_build(tmp_path, "b2", MEMBERS[:2])
    duckdb.sql(
        f"COPY (SELECT * FROM '{good / 'segments.parquet'}' WHERE member_id <> 'm2') "
        f"TO '{broken / 'segments.parquet'}'"
    )
    incomplete = write_build(tmp_path, "b3", MEMBERS)
    (incomplete / "tags.parquet").unlink()

    for build, message in [
        (broken, "1 member(s) of profiles.parquet have no segment"),
        (incomplete, "missing tags.parquet"),
    ]:
        with pytest.raises(service.InvalidBuild) as refused:
            service.publish_build(conn, build)
        assert refused.value.code == "invalid_build"
        assert message in refused.value.message
    assert _rows(conn) == {"builds": [], "member_profiles": [], "profile_groups": []}


def test_a_field_an_older_build_did_not_write_is_null(conn: Connection, tmp_path: Path) -> None:
    build = write_build(tmp_path, "b1", MEMBERS)
    table = pq.read_table(build / "profiles.parquet")
    pq.write_table(table.drop_columns(["credit_stars"]), build / "profiles.parquet")

    service.publish_build(conn, build)

    profile = service.get_profile(conn, "m1")
    assert (profile.fields["credit_stars"], profile.fields["events_30d"]) == (None, 42)
