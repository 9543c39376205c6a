from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import Connection, insert, select

from memberwise.kit import rawsql
from memberwise.members.tables import members


def test_parameters_are_rendered_in_each_drivers_style() -> None:
    sql = "SELECT :a, :b_json, '::text' FROM t WHERE x = :a"
    assert rawsql.render(sql, "sqlite") == sql
    assert rawsql.render(sql, "postgresql") == (
        "SELECT %(a)s, CAST(%(b_json)s AS json), '::text' FROM t WHERE x = %(a)s"
    )


def test_timestamps_go_in_and_come_back_as_the_columns_keep_them(conn: Connection) -> None:
    at = datetime(2026, 11, 24, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=8)))
    conn.execute(
        insert(members).values(
            member_id="m1", status="active", source="api", version=1, created_at=at, updated_at=at
        )
    )
    row = rawsql.fetchone(
        conn,
        "SELECT member_id, created_at FROM members WHERE member_id = :id AND created_at = :at",
        {"id": "m1", "at": rawsql.stamp(conn, at)},
    )
    assert row is not None
    assert row[0] == "m1"
    assert rawsql.instant(row[1]) == datetime(2026, 11, 24, 4, 30, 15, 123456, tzinfo=UTC)
    missing = {"id": "m2"}
    assert rawsql.fetchone(conn, "SELECT 1 FROM members WHERE member_id = :id", missing) is None
    assert rawsql.fetchall(conn, "SELECT member_id FROM members ORDER BY member_id", {}) == [
        ("m1",)
    ]
    assert rawsql.instant(None) is None


def test_a_stamp_of_any_year_reads_back_through_the_table(conn: Connection) -> None:
    """A year below 1000 once went in as '1-01-01 ...', which SQLAlchemy could never read back:
    the row broke every later read (issue 13). The stamp is zero-padded like SQLAlchemy's own."""
    for n, year in enumerate((1, 999, 2026, 9999)):
        at = datetime(year, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
        rawsql.execute(
            conn,
            "INSERT INTO members (member_id, status, source, version, created_at, updated_at) "
            "VALUES (:id, 'active', 'api', 1, :at, :at)",
            {"id": f"y{n}", "at": rawsql.stamp(conn, at)},
        )
        stored = conn.execute(select(members.c.created_at).where(members.c.member_id == f"y{n}"))
        assert stored.scalar_one() == at
