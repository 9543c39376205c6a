"""Publishing profiles by difference, on both stores: only new or changed profiles are
written, absent members are deleted, a publish cut short between batches converges, and any
sequence of builds published by difference leaves exactly what publishing the last one into
an empty store leaves."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, select

from memberwise.kit import diffpublish
from memberwise.profiles import service
from memberwise.profiles.tables import builds, member_profiles
from tests.profiles.factories import FakeMember, write_build

CONTENT = (
    member_profiles.c.member_id,
    member_profiles.c.segment,
    member_profiles.c.persona,
    member_profiles.c.tags,
    member_profiles.c.profile,
)


def content(conn: Connection) -> list[tuple[Any, ...]]:
    """What a reader sees of every profile (not which build last wrote the row)."""
    return [tuple(r) for r in conn.execute(select(*CONTENT).order_by("member_id"))]


def members(n: int, segment: str = "active") -> list[FakeMember]:
    return [FakeMember(f"m{i}", segment, persona=i % 2, fields={"events_30d": i}) for i in range(n)]


def test_only_changed_and_new_profiles_are_written(conn: Connection, tmp_path: Path) -> None:
    first = members(6)
    service.publish_build(conn, write_build(tmp_path, "b1", first))
    later = [*first[:2], FakeMember("m2", "at_risk", persona=0, fields={"events_30d": 2})]
    later += [*first[3:5], FakeMember("m9", "new")]  # m5 gone, m9 new

    result = service.publish_build(conn, write_build(tmp_path, "b2", later))

    assert (result.members, result.written, result.removed) == (6, 2, 1)
    rows = {r[0]: r for r in conn.execute(select(member_profiles)).all()}
    assert sorted(rows) == ["m0", "m1", "m2", "m3", "m4", "m9"]
    # build_id: the build that last wrote the row; the API shows the live build.
    assert {m: r.build_id for m, r in rows.items()} == {
        "m0": "b1",
        "m1": "b1",
        "m2": "b2",
        "m3": "b1",
        "m4": "b1",
        "m9": "b2",
    }
    shown = service.get_profile(conn, "m0")
    assert (shown.build_id, shown.segment, shown.fields["events_30d"]) == ("b2", "active", 0)
    assert service.get_profile(conn, "m2").segment == "at_risk"


class Killed(BaseException):
    """The process dying mid-publish."""


def test_a_publish_killed_between_batches_converges(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diffpublish, "BATCH_ROWS", 2)
    with engine.begin() as conn:
        service.publish_build(conn, write_build(tmp_path, "b1", members(5)))
    later = write_build(tmp_path, "b2", members(7, segment="at_risk"))
    with engine.connect() as conn:
        commits = 0

        def commit() -> None:
            nonlocal commits
            if commits == 2:  # the build's row and the first batch (m0, m1) are in
                raise Killed
            conn.commit()
            commits += 1

        with pytest.raises(Killed):
            service.publish_build(conn, later, commit=commit)

    with engine.connect() as conn:
        written_by_b2 = set(
            conn.execute(
                select(member_profiles.c.member_id).where(member_profiles.c.build_id == "b2")
            ).scalars()
        )
        statuses = dict(conn.execute(select(builds.c.build_id, builds.c.status)).all())
        live = service.list_segments(conn).build_id
    assert written_by_b2 == {"m0", "m1"}
    assert (statuses, live) == ({"b1": "published", "b2": "publishing"}, "b1")

    with engine.begin() as conn:
        again = service.publish_build(conn, later)

    assert (again.members, again.written, again.removed) == (7, 5, 0)
    with engine.begin() as conn:
        assert service.publish_build(conn, later).written == 0
        assert {r[1] for r in content(conn)} == {"at_risk"}
        assert len(content(conn)) == 7
        statuses = dict(conn.execute(select(builds.c.build_id, builds.c.status)).all())
    assert statuses == {"b1": "superseded", "b2": "published"}


MEMBER = st.builds(
    FakeMember,
    member_id=st.sampled_from([f"m{i}" for i in range(8)]),
    segment=st.sampled_from(["new", "active", "at_risk"]),
    persona=st.sampled_from([None, 0, 1]),
    tags=st.lists(st.sampled_from(["night_owl", "big_spender"]), unique=True, max_size=2).map(
        tuple
    ),
    fields=st.fixed_dictionaries({"events_30d": st.integers(0, 3)}),
)
BUILD = st.lists(MEMBER, max_size=8, unique_by=lambda m: m.member_id)


def in_savepoint(conn: Connection, work: Callable[[], Any]) -> Any:
    savepoint = conn.begin_nested()
    try:
        return work()
    finally:
        savepoint.rollback()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(builds_=st.lists(BUILD, min_size=1, max_size=3))
def test_any_sequence_of_builds_converges_on_the_last(
    conn: Connection, builds_: list[list[FakeMember]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [write_build(Path(tmp), f"b{i}", b) for i, b in enumerate(builds_)]

        def by_difference() -> tuple[list[tuple[Any, ...]], int]:
            written = 0
            for directory in dirs:
                written = service.publish_build(conn, directory).written
            return content(conn), written

        def from_scratch() -> list[tuple[Any, ...]]:
            service.publish_build(conn, dirs[-1])
            return content(conn)

        diffed, written = in_savepoint(conn, by_difference)
        fresh = in_savepoint(conn, from_scratch)

    assert diffed == fresh

    def shown(m: FakeMember) -> tuple[Any, ...]:
        return (m.segment, m.persona, sorted(m.tags), m.fields)

    previous = {m.member_id: shown(m) for m in builds_[-2]} if len(builds_) > 1 else {}
    assert written == sum(1 for m in builds_[-1] if previous.get(m.member_id) != shown(m))
