"""The publisher's plumbing on both stores: the store's rows copied into DuckDB in chunks,
wide text replaced by its MD5, and results handed out in write batches."""

from __future__ import annotations

import hashlib
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from sqlalchemy import Connection, Integer, Select, String, Text, literal, select, union_all

from memberwise.kit import diffpublish

SCHEMA = pa.schema(
    [pa.field("k", pa.string()), pa.field("n", pa.int64()), pa.field("body", pa.string())]
)
ROWS = [("a", 1, "{}"), ("b", None, "雪"), ("c", 3, None), ("d", 4, "x" * 5000), ("e", 5, "")]


def rows_query(rows: list[tuple[Any, ...]]) -> Select[Any]:
    """The rows as a query the store runs (a UNION ALL of literals: portable)."""
    parts = [
        select(
            literal(k, String).label("k"),
            literal(n, Integer).label("n"),
            literal(b, Text).label("body"),
        )
        for k, n, b in rows
    ]
    sub = union_all(*parts).subquery("v")
    return select(sub.c.k, sub.c.n, sub.c.body).order_by(sub.c.k)


def test_rows_are_copied_in_chunks_with_their_text_hashed(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diffpublish, "LOAD_ROWS", 2)  # three chunks: 2, 2, 1
    with duckdb.connect() as con:
        copied = diffpublish.load_published(
            conn, rows_query(ROWS), con, "stored", SCHEMA, digest=["body"]
        )
        got = con.sql('SELECT * FROM "stored" ORDER BY k').fetchall()
        types = con.sql('SELECT * FROM "stored"').types

    assert copied == 5
    md5 = {v: hashlib.md5(v.encode()).hexdigest() for v in ("{}", "雪", "x" * 5000, "")}
    assert got == [
        ("a", 1, md5["{}"]),
        ("b", None, md5["雪"]),
        ("c", 3, None),
        ("d", 4, md5["x" * 5000]),
        ("e", 5, md5[""]),
    ]
    assert [str(t) for t in types] == ["VARCHAR", "BIGINT", "VARCHAR"]


def test_an_empty_store_gives_an_empty_table_of_the_schema(conn: Connection) -> None:
    query = rows_query([("a", 1, "x")]).limit(0)
    with duckdb.connect() as con:
        assert diffpublish.load_published(conn, query, con, "stored", SCHEMA) == 0
        assert con.sql('SELECT count(*) FROM "stored"').fetchall() == [(0,)]
        assert con.sql('SELECT * FROM "stored"').columns == ["k", "n", "body"]


def test_batches_are_of_the_write_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diffpublish, "BATCH_ROWS", 4)
    with duckdb.connect() as con:
        sizes = [b.num_rows for b in diffpublish.batches(con, "SELECT * FROM range(10)")]
        assert sizes == [4, 4, 2]
        assert [b.num_rows for b in diffpublish.batches(con, "SELECT * FROM range(0)")] == []
