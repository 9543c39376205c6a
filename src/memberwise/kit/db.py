"""The operational store: one SQLAlchemy Core engine, one metadata, one unit of work.

SQLite (embedded default) runs in WAL mode with foreign keys on; PostgreSQL is the production
store. Only portable SQL is used; dialect differences stay in this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    ARRAY,
    Connection,
    Engine,
    MetaData,
    String,
    Table,
    TableValuedAlias,
    Text,
    bindparam,
    create_engine,
    event,
    func,
    literal,
    or_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.dml import Insert

#: Every domain's ``tables.py`` defines its tables on this metadata; Alembic migrates it.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # WAL lets readers run beside the one writer; busy_timeout turns lock waits into waits,
    # not immediate "database is locked" errors; NORMAL sync is durable at each WAL checkpoint
    # and safe against application crashes (the lake, not SQLite, holds the event stream).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the store's conventions applied (WAL and FKs on SQLite)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 10}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, pool_size=10, max_overflow=20, **kwargs)

    # Pessimistic disconnect handling, but a connection back in the pool for under
    # PING_AFTER_IDLE seconds is handed out unpinged (HikariCP's aliveBypassWindowMs): it was
    # just seen working, and under load a ping is one more round trip on every transaction.
    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("checked_in", 0.0) < PING_AFTER_IDLE:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError() from exc  # the pool replaces the connection

    event.listen(engine, "checkin", _checked_in)
    return engine


#: See :func:`make_engine`.
PING_AFTER_IDLE = 1.0


def _checked_in(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["checked_in"] = time.monotonic()


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """A unit of work: commits when the block ends, rolls back everything if it raises."""
    with engine.begin() as conn:
        yield conn


def insert_ignore(conn: Connection, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the connection's dialect (SQLite/PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def upsert(conn: Connection, table: Table, key: Sequence[str], **values: Any) -> Any:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` for the connection's dialect, updating the
    existing row only when a value differs, so re-writing the same rows writes (almost)
    nothing. ``values`` are the INSERT's values (literals or bind parameters)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(**values)
    changing = [c for c in table.c if c.name not in key]
    return stmt.on_conflict_do_update(
        index_elements=list(key),
        set_={c.name: stmt.excluded[c.name] for c in changing},
        where=or_(*(c.is_distinct_from(stmt.excluded[c.name]) for c in changing)),
    )


#: Splits the values of :func:`string_values` on PostgreSQL (the ASCII unit separator, which ids
#: and names do not hold; a value that does sends the list as an array instead).
_SEPARATOR = "\x1f"


def string_values(conn: Connection, values: Sequence[str]) -> TableValuedAlias:
    """A one-column table (``value``) of ``values``, bound as ONE parameter.

    Hot paths use it instead of ``IN (:p1, ..., :p1000)`` or per-row executemany: one
    statement, one bound value, a cached compiled query (json_each on SQLite, unnest on
    PostgreSQL). On PostgreSQL the values go as ONE text split by the server
    (``string_to_array``) when none holds the separator: psycopg writes a list as an array
    literal, quoting each element with a regular expression (about 0.6 us per id on the
    client, and the server's array parser costs more than a split), which a bulk ingest's
    100,000s of member ids paid on both sides.
    """
    if conn.dialect.name == "postgresql":
        joined = _SEPARATOR.join(values)
        if joined and joined.count(_SEPARATOR) == len(values) - 1:
            text = bindparam(None, joined, type_=Text)
            split = func.string_to_array(text, literal(_SEPARATOR, Text), type_=ARRAY(Text))
            return func.unnest(split).table_valued("value").render_derived()
        param = bindparam(None, list(values), type_=ARRAY(String))
        return func.unnest(param).table_valued("value").render_derived()
    return func.json_each(bindparam(None, json.dumps(list(values)))).table_valued("value")
