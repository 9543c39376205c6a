"""Every query of the profiles domain: the published profiles in the operational store, and
the DuckDB queries that read a build directory's Parquet artifacts for publishing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
from sqlalchemy import (
    Connection,
    Integer,
    RowMapping,
    String,
    Text,
    bindparam,
    case,
    delete,
    insert,
    select,
    update,
)

from memberwise.kit import diffpublish
from memberwise.kit.db import upsert
from memberwise.kit.storage import DEFAULT, parquet_sql
from memberwise.profiles.fields import DETAILS
from memberwise.profiles.schemas import BuildStatus
from memberwise.profiles.tables import builds, member_profiles, profile_groups

#: The Parquet artifacts of a build directory, by role.
ARTIFACTS: dict[str, str] = {
    "profiles": "profiles.parquet",
    "details": "details.parquet",
    "tags": "tags.parquet",
    "segments": "segments.parquet",
}

# --- the operational store --------------------------------------------------------------------


def live_build(conn: Connection) -> RowMapping | None:
    """The published build the API shows (the latest published, should there be several)."""
    query = (
        select(builds)
        .where(builds.c.status == BuildStatus.published.value)
        .order_by(builds.c.published_at.desc(), builds.c.build_id.desc())
        .limit(1)
    )
    return conn.execute(query).mappings().first()


def supersede_others(conn: Connection, build_id: str) -> None:
    """Mark every other published build superseded.

    Done first in a publish: concurrent publishers then queue on the live build's row instead
    of interleaving their profile writes.
    """
    conn.execute(
        update(builds)
        .where(builds.c.status == BuildStatus.published.value, builds.c.build_id != build_id)
        .values(status=BuildStatus.superseded.value)
    )


def upsert_build(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(upsert(conn, builds, ["build_id"], **values))


def upsert_profiles(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Upsert profiles given as (member_id, build_id, segment, persona, tags, profile); their
    as_of and published_at are copied from the build's row.

    Reading the build's times in SQL spares every row two datetime conversions in Python
    (about 8 µs a row, 8 s a million).
    """
    if not rows:
        return
    build_id = bindparam("build_id", type_=String)
    times = {
        name: select(builds.c[name]).where(builds.c.build_id == build_id).scalar_subquery()
        for name in ("as_of", "published_at")
    }
    stmt = upsert(
        conn,
        member_profiles,
        ["member_id"],
        member_id=bindparam("member_id", type_=String),
        build_id=build_id,
        segment=bindparam("segment", type_=String),
        persona=bindparam("persona", type_=Integer),
        tags=bindparam("tags", type_=Text),
        profile=bindparam("profile", type_=Text),
        **times,
    )
    conn.execute(stmt, rows)


def delete_profiles(conn: Connection, member_ids: Sequence[str]) -> int:
    """Delete the profiles of ``member_ids``; returns how many."""
    if not member_ids:
        return 0
    stmt = delete(member_profiles).where(
        member_profiles.c.member_id == bindparam("m_id", type_=String)
    )
    result = conn.execute(stmt, [{"m_id": m} for m in member_ids])
    return result.rowcount


#: The stored profiles as the publisher compares them: the profile text as its MD5, and whether
#: the row's values are in the order of the fields being published.
STORED_PROFILES_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string()),
        pa.field("segment", pa.string()),
        pa.field("persona", pa.int32()),
        pa.field("tags", pa.string()),
        pa.field("profile", pa.string()),
        pa.field("same_fields", pa.int32()),
    ]
)


def load_profiles(conn: Connection, con: duckdb.DuckDBPyConnection, name: str, fields: str) -> int:
    """Copy every published profile into the DuckDB table ``name``
    (:data:`STORED_PROFILES_SCHEMA`); ``fields`` is the JSON list of field names the new rows
    use. Returns the rows copied."""
    query = select(
        member_profiles.c.member_id,
        member_profiles.c.segment,
        member_profiles.c.persona,
        member_profiles.c.tags,
        member_profiles.c.profile,
        case((builds.c.fields == fields, 1), else_=0),
    ).select_from(
        member_profiles.outerjoin(builds, builds.c.build_id == member_profiles.c.build_id)
    )
    return diffpublish.load_published(
        conn, query, con, name, STORED_PROFILES_SCHEMA, digest=["profile"]
    )


def replace_groups(conn: Connection, build_id: str, rows: list[dict[str, Any]]) -> None:
    conn.execute(delete(profile_groups).where(profile_groups.c.build_id == build_id))
    if rows:
        conn.execute(insert(profile_groups), rows)


def get_profile(conn: Connection, member_id: str) -> RowMapping | None:
    """The member's profile row with its build's ``fields`` (the names of its values).

    A row is rewritten only when a build changes it, so its own ``build_id`` is the build that
    last changed it; the build it is shown as part of is the live one, read beside it.
    """
    query = (
        select(member_profiles, builds.c.fields)
        .join(builds, builds.c.build_id == member_profiles.c.build_id)
        .where(member_profiles.c.member_id == member_id)
    )
    return conn.execute(query).mappings().first()


def groups(conn: Connection, build_id: str, kinds: Iterable[str]) -> Sequence[RowMapping]:
    query = (
        select(profile_groups)
        .where(profile_groups.c.build_id == build_id, profile_groups.c.kind.in_(list(kinds)))
        .order_by(profile_groups.c.kind, profile_groups.c.position, profile_groups.c.name)
    )
    return conn.execute(query).mappings().all()


def get_group(
    conn: Connection, build_id: str, name: str, kinds: Iterable[str]
) -> Sequence[RowMapping]:
    """The groups of the build named ``name`` among ``kinds`` (at most one per kind)."""
    query = select(profile_groups).where(
        profile_groups.c.build_id == build_id,
        profile_groups.c.name == name,
        profile_groups.c.kind.in_(list(kinds)),
    )
    return conn.execute(query).mappings().all()


def page_members(
    conn: Connection,
    *,
    segment: str | None = None,
    persona: int | None = None,
    after: str | None,
    limit: int,
) -> Sequence[RowMapping]:
    """Members of a segment or a persona in member_id order (served by the (segment|persona,
    member_id) indexes: each page is one index range scan)."""
    query = (
        select(
            member_profiles.c.member_id,
            member_profiles.c.segment,
            member_profiles.c.persona,
            member_profiles.c.tags,
        )
        .order_by(member_profiles.c.member_id)
        .limit(limit)
    )
    if segment is not None:
        query = query.where(member_profiles.c.segment == segment)
    if persona is not None:
        query = query.where(member_profiles.c.persona == persona)
    if after is not None:
        query = query.where(member_profiles.c.member_id > after)
    return conn.execute(query).mappings().all()


# --- a build directory's artifacts (DuckDB over Parquet) --------------------------------------


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _field_sql(name: str, type_: pa.DataType | None) -> str:
    """The JSON-ready expression of one profile field of the Parquet file."""
    if type_ is None:  # a field the build did not write (an older build): shown as null
        return "NULL"
    column = f"p.{_quote(name)}"
    if pa.types.is_timestamp(type_):
        # ISO-8601 in UTC, as pydantic writes times: whole seconds without a fraction.
        utc = f"timezone('UTC', {column})" if type_.tz else column
        return (
            f"CASE WHEN microsecond({utc}) % 1000000 = 0 "
            f"THEN strftime({utc}, '%Y-%m-%dT%H:%M:%SZ') "
            f"ELSE strftime({utc}, '%Y-%m-%dT%H:%M:%S.%fZ') END"
        )
    if pa.types.is_floating(type_) or pa.types.is_decimal(type_):
        # JSON has no NaN or infinity: they become null.
        return f"CASE WHEN isfinite({column}::DOUBLE) THEN {column}::DOUBLE END"
    return column


class BuildArtifacts:
    """Queries over one build directory's Parquet files, in an in-memory DuckDB.

    The publisher's joins and JSON making run here, vectorized (a million profiles in about
    20 s on two cores); Python only moves finished rows (member_id, segment, persona, tags,
    profile) to the store. Use as a context manager.
    """

    def __init__(self, build_dir: Path) -> None:
        self.paths = {role: build_dir / name for role, name in ARTIFACTS.items()}
        self.con = diffpublish.connect()
        for role, path in self.paths.items():
            self.con.execute(
                f"CREATE VIEW {role} AS SELECT * FROM read_parquet({parquet_sql(path)})"
            )

    def __enter__(self) -> BuildArtifacts:
        return self

    def __exit__(self, *_: object) -> None:
        self.con.close()

    def _one(self, sql: str) -> tuple[Any, ...]:
        rows = self.con.sql(sql).fetchall()
        return tuple(rows[0])

    def problems(self) -> list[str]:
        """What makes the artifacts unpublishable (empty when they are fine)."""
        found: list[str] = []
        rows, distinct = self._one("SELECT count(*), count(DISTINCT member_id) FROM profiles")
        if rows != distinct:
            found.append(f"profiles.parquet has {rows - distinct} repeated member_id(s)")
        rows, distinct = self._one("SELECT count(*), count(DISTINCT member_id) FROM segments")
        if rows != distinct:
            found.append(f"segments.parquet has {rows - distinct} repeated member_id(s)")
        (missing,) = self._one(
            "SELECT count(*) FROM profiles p ANTI JOIN segments s USING (member_id)"
        )
        if missing:
            found.append(f"{missing} member(s) of profiles.parquet have no segment")
        (blank,) = self._one(
            "SELECT count(*) FROM profiles p JOIN segments s USING (member_id) "
            "WHERE p.member_id IS NULL OR s.segment IS NULL"
        )
        if blank:
            found.append(f"{blank} member(s) have a null member_id or segment")
        return found

    def profile_rows(
        self, field_names: Sequence[str], batch_rows: int, *, stored: str | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Batches of (member_id, segment, persona, tags, profile), in member_id order; with
        ``stored`` (a table of :data:`STORED_PROFILES_SCHEMA` in this DuckDB), only the rows
        that differ from it or are not in it.

        ``tags`` is a JSON array text. ``profile`` is a JSON object text: ``fields``, the
        values of ``field_names`` in that order (null for a field the build did not write),
        and ``details``, for every detail a list of ``[key, value]`` pairs best first. The
        layout is positional because it halves the text the store writes (1.3 kB a profile
        instead of 3 kB), and that text is most of a publish's time; the field names are kept
        once per build (``builds.fields``).

        The rows come sorted: SQLite inserts sorted keys about twice as fast as shuffled ones.
        """
        schema = DEFAULT.schema(self.paths["profiles"])
        types = {name: schema.field(name).type for name in schema.names}
        values = ", ".join(
            f"coalesce(to_json({_field_sql(name, types.get(name))})::VARCHAR, 'null')"
            for name in field_names
        )
        # Unordered lists sorted afterwards: an ORDER BY inside the aggregate costs twice as
        # much. A struct sorts by its first member, the rank.
        lists = ",\n".join(
            f"list_transform(list_sort(list({{'rank': rank, 'key': key, "
            f"'value': CASE WHEN isfinite(value) THEN value END}}) "
            f"FILTER (WHERE detail = {_string(d)})), "
            f"lambda x: [to_json(x.key), to_json(x.value)]) AS {_quote(d)}"
            for d in DETAILS
        )
        details = ", ".join(f"{_string(d)}: coalesce(d.{_quote(d)}, [])" for d in DETAILS)
        sql = f"""
            WITH d AS (
                SELECT member_id, {lists}
                FROM details GROUP BY member_id
            ), t AS (
                SELECT member_id, to_json(list_sort(list_distinct(list(tag)))) AS tags
                FROM tags WHERE tag IS NOT NULL GROUP BY member_id
            )
            SELECT
                p.member_id,
                s.segment,
                s.persona::INTEGER AS persona,
                coalesce(t.tags, '[]')::VARCHAR AS tags,
                '{{"fields":[' || concat_ws(',', {values}) || '],"details":'
                    || to_json({{{details}}})::VARCHAR || '}}' AS profile
            FROM profiles p
            JOIN segments s USING (member_id)
            LEFT JOIN d USING (member_id)
            LEFT JOIN t USING (member_id)
        """
        if stored is None:
            sql += " ORDER BY p.member_id"
        else:
            sql = f"""
                WITH n AS ({sql})
                SELECT n.* FROM n LEFT JOIN "{stored}" s USING (member_id)
                WHERE s.member_id IS NULL
                   OR s.same_fields = 0
                   OR n.segment IS DISTINCT FROM s.segment
                   OR n.persona IS DISTINCT FROM s.persona
                   OR n.tags IS DISTINCT FROM s.tags
                   OR md5(n.profile) IS DISTINCT FROM s.profile
                ORDER BY n.member_id
            """
        reader = self.con.sql(sql).to_arrow_reader(batch_rows)
        yield from reader

    def gone_members(self, stored: str, batch_rows: int) -> Iterator[list[str]]:
        """Batches of the members of ``stored`` absent from this build, in member_id order."""
        sql = f"""
            SELECT member_id FROM "{stored}" s ANTI JOIN profiles p USING (member_id)
            ORDER BY member_id
        """
        for batch in self.con.sql(sql).to_arrow_reader(batch_rows):
            yield batch.column(0).to_pylist()

    def members(self) -> int:
        """Members of the build (rows of profiles.parquet)."""
        (count,) = self._one("SELECT count(*) FROM profiles")
        return int(count)

    def group_counts(self) -> dict[tuple[str, str], int]:
        """Members per (kind, name): per lifecycle segment, per persona (``persona-<id>``)
        and per tag, counting only members of profiles.parquet."""
        sql = """
            WITH m AS (SELECT s.* FROM segments s SEMI JOIN profiles p USING (member_id))
            SELECT 'segment', segment, count(*) FROM m GROUP BY segment
            UNION ALL
            SELECT 'persona', 'persona-' || CAST(persona AS VARCHAR), count(*) FROM m
            WHERE persona IS NOT NULL GROUP BY persona
            UNION ALL
            SELECT 'tag', tag, count(DISTINCT member_id)
            FROM tags t SEMI JOIN profiles p USING (member_id)
            WHERE tag IS NOT NULL GROUP BY tag
        """
        return {(kind, name): int(n) for kind, name, n in self.con.execute(sql).fetchall()}


def audience_page(
    conn: Connection,
    *,
    segment: str | None = None,
    persona: int | None = None,
    tag: str | None = None,
    after: str | None,
    limit: int,
) -> list[str]:
    """Member ids of the published profiles in a segment, a persona or with a tag, in id
    order (a tag is matched as a whole JSON string element of ``tags``)."""
    query = select(member_profiles.c.member_id).order_by(member_profiles.c.member_id).limit(limit)
    if segment is not None:
        query = query.where(member_profiles.c.segment == segment)
    if persona is not None:
        query = query.where(member_profiles.c.persona == persona)
    if tag is not None:
        query = query.where(member_profiles.c.tags.contains(orjson.dumps(tag).decode()))
    if after is not None:
        query = query.where(member_profiles.c.member_id > after)
    return list(conn.execute(query).scalars())


# --- builds over time (the console's overview) ------------------------------------------------


def recent_builds(conn: Connection, limit: int) -> list[tuple[str, datetime]]:
    """The newest ``limit`` builds, oldest first: (build id, as of)."""
    rows = conn.execute(
        select(builds.c.build_id, builds.c.as_of).order_by(builds.c.as_of.desc()).limit(limit)
    ).all()
    return [(str(b), a) for b, a in reversed(rows)]


def segments_by_build(conn: Connection, build_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Build id -> segment -> members (each build's published segment sizes)."""
    if not build_ids:
        return {}
    rows = conn.execute(
        select(profile_groups.c.build_id, profile_groups.c.name, profile_groups.c.members).where(
            profile_groups.c.kind == "segment", profile_groups.c.build_id.in_(build_ids)
        )
    ).all()
    out: dict[str, dict[str, int]] = {b: {} for b in build_ids}
    for build_id, name, members in rows:
        out[str(build_id)][str(name)] = int(members)
    return out


def latest_summary(conn: Connection) -> dict[str, Any]:
    """The newest build's summary (empty before the first build)."""
    summary = conn.execute(
        select(builds.c.summary).order_by(builds.c.as_of.desc()).limit(1)
    ).scalar_one_or_none()
    found = orjson.loads(summary) if summary else {}
    return found if isinstance(found, dict) else {}
