"""Portable SQL run on the driver's own cursor, for the few statements on measured hot paths.

Building, compiling and wrapping a SQLAlchemy statement costs more than SQLite takes to run a
keyed read (measured: five times the whole read). Statements on paths held to a latency or
throughput target are written once as SQL with ``:name`` parameters and run on the DBAPI cursor
of the same connection, so inside the same transaction. Only the parameter style, timestamps
and JSON differ between SQLite and PostgreSQL; :func:`render` and :func:`stamp` handle them.
Every other statement stays SQLAlchemy Core.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection

from memberwise.kit.time import as_utc

_PARAM = re.compile(r"(?<!:):(\w+)")


@functools.cache
def render(sql: str, dialect: str) -> str:
    """``sql`` in the driver's parameter style: sqlite3 takes ``:name`` as it is; psycopg
    takes ``%(name)s``, and a parameter whose name contains ``_json`` is cast to json."""
    if dialect != "postgresql":
        return sql
    return _PARAM.sub(
        lambda m: f"CAST(%({m[1]})s AS json)" if "_json" in m[1] else f"%({m[1]})s", sql
    )


def json_text(value: Any) -> str:
    """``value`` as the JSON text a ``*_json`` parameter takes (:func:`render` casts it)."""
    return orjson.dumps(value).decode()


def stamp(conn: Connection, value: datetime | None) -> Any:
    """A timestamp bound as its column stores it (naive UTC text on SQLite)."""
    if value is None or conn.dialect.name == "postgresql":
        return value
    # isoformat, not strftime: strftime's %Y does not zero-pad a year below 1000 ('1-01-01'),
    # and SQLAlchemy could then never read the row back (every later read of it failed).
    return as_utc(value).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def instant(value: Any) -> datetime | None:
    """A timestamp column's value as the driver returns it (SQLite: naive UTC text), aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return as_utc(value)


def execute(conn: Connection, sql: str, params: dict[str, Any]) -> Any:
    """Run ``sql`` on the connection's driver cursor (same transaction); the DBAPI cursor."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(render(sql, conn.dialect.name), params)
    return cursor


def fetchone(conn: Connection, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
    """The first row of ``sql`` as a plain tuple, or None."""
    cursor = execute(conn, sql, params)
    try:
        row = cursor.fetchone()
    finally:
        cursor.close()
    return None if row is None else tuple(row)


def fetchall(conn: Connection, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Every row of ``sql`` as plain tuples."""
    cursor = execute(conn, sql, params)
    try:
        return [tuple(r) for r in cursor.fetchall()]
    finally:
        cursor.close()
