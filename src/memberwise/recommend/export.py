"""The batch export of the published recommendation lists: every member's list of items on
sale now, as one Parquet file for the platform's own systems."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Connection

from memberwise.kit.time import utcnow
from memberwise.recommend import repository
from memberwise.recommend.catalog import BATCH

EXPORT_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string()),
        pa.field("rank", pa.int32()),
        pa.field("item_id", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("reason", pa.string()),
    ]
)


def export_lists(conn: Connection, out: Path, *, n: int = 20) -> tuple[int, int]:
    """Write every member's published list (its first ``n`` items that are on sale now) to
    Parquet (``member_id, rank (1 = best), item_id, score, reason``); (members, rows)."""
    tmp = out.with_name(f".tmp-{out.name}")
    members = rows = 0
    after: str | None = None
    hidden = _unavailable(conn)
    with pq.ParquetWriter(tmp, EXPORT_SCHEMA, compression="zstd") as writer:
        while True:
            page = repository.member_lists(conn, after=after, limit=BATCH)
            if not page:
                break
            columns: dict[str, list[Any]] = {name: [] for name in EXPORT_SCHEMA.names}
            for row in page:
                rank = 0
                for item_id, score, reason, _source in orjson.loads(row["entries"]):
                    if item_id in hidden:
                        continue
                    rank += 1
                    if rank > n:
                        break
                    columns["member_id"].append(row["member_id"])
                    columns["rank"].append(rank)
                    columns["item_id"].append(item_id)
                    columns["score"].append(float(score))
                    columns["reason"].append(reason)
                members += 1
                rows += min(rank, n)
            writer.write_table(pa.table(columns, schema=EXPORT_SCHEMA))
            after = page[-1]["member_id"]
    os.replace(tmp, out)
    return members, rows


def _unavailable(conn: Connection) -> set[str]:
    """Items that are hidden, out of stock or not launched yet (not exported)."""
    now = utcnow()
    return {
        r["item_id"]
        for r in repository.catalog_rows(conn)
        if r["hidden"]
        or not r["in_stock"]
        or (r["launched_at"] is not None and r["launched_at"] > now)
    }
