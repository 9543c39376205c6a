"""Publishing by difference: the plumbing a domain's publisher uses to write only the rows
that differ from what the operational store already holds, in transactions of bounded size.

A publisher (1) copies the store's published rows into an in-memory DuckDB
(:func:`load_published`, streamed in chunks, wide text columns replaced by their MD5 so a
million profiles cost a few dozen megabytes), (2) joins them there with the build's Parquet
output to find the inserted, changed and gone members (one vectorized query, no Python loop
over unchanged members), and (3) writes only those, :data:`BATCH_ROWS` rows per transaction,
calling ``commit`` after each batch.

The store's own rows are the reference, not a digest kept beside them: a row changed since by
someone else (staff granting a tier, a merge, an erasure) is compared as it is now, so the
next publish converges on the build whatever wrote the row last. The same holds after a crash
between two batches: the batches already committed compare equal and are skipped, the rest is
written, and side effects hung on a change (history, audit, outbox) fire once per real change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import Connection
from sqlalchemy.sql import Select

from memberwise.kit.storage import register_configured

#: Rows per write transaction: large enough that a batch's fixed costs (a commit, an fsync on
#: SQLite) are amortized, small enough that PostgreSQL never holds one huge transaction and a
#: crash loses at most one batch of work.
BATCH_ROWS = 20_000
#: Rows per fetch while copying the store's rows to DuckDB.
LOAD_ROWS = 50_000

#: Called after each batch: ``Connection.commit`` in the build's publish step, a no-op when the
#: caller holds one transaction around the whole publish (tests, a one-off republish).
Commit = Callable[[], None]


def no_commit() -> None:
    """Leave the batches to the caller's transaction."""
    return None


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for comparing: UTC session time, no progress bar on stdout."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    # A Spark build on an object store leaves pointers to its artifacts: read them there.
    register_configured(con)
    return con


def load_published(
    conn: Connection,
    query: Select[Any],
    con: duckdb.DuckDBPyConnection,
    name: str,
    schema: pa.Schema,
    *,
    digest: Sequence[str] = (),
) -> int:
    """Copy the rows of ``query`` (columns named and typed as ``schema``) from the store into
    the DuckDB table ``name``; the columns in ``digest`` are stored as their MD5 hex. Returns
    the rows copied.

    The rows are streamed (``yield_per``), so Python never holds more than one chunk.
    """
    con.execute(f'DROP TABLE IF EXISTS "{name}"')
    con.register("_empty", schema.empty_table())
    con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM _empty')
    con.unregister("_empty")
    # Hashed by DuckDB as each chunk goes in (vectorized, no Python loop over the text).
    columns = ", ".join(f'md5("{f.name}")' if f.name in digest else f'"{f.name}"' for f in schema)
    copied = 0
    result = conn.execute(query, execution_options={"yield_per": LOAD_ROWS})
    for part in result.partitions():
        values = list(zip(*part, strict=True))
        chunk = pa.Table.from_arrays(
            [pa.array(v, type=f.type) for v, f in zip(values, schema, strict=True)],
            schema=schema,
        )
        con.register("_chunk", chunk)
        con.execute(f'INSERT INTO "{name}" SELECT {columns} FROM _chunk')
        con.unregister("_chunk")
        copied += len(part)
    return copied


def batches(
    con: duckdb.DuckDBPyConnection, sql: str, rows: int | None = None
) -> Iterator[pa.RecordBatch]:
    """The result of ``sql`` in record batches of ``rows`` (default :data:`BATCH_ROWS`; the
    last may be shorter)."""
    yield from con.sql(sql).to_arrow_reader(rows or BATCH_ROWS)


def quote(name: str) -> str:
    """A DuckDB string literal."""
    return "'" + name.replace("'", "''") + "'"
