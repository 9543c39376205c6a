"""The operational store's tiers and the ledger's points, streamed out to Parquet for a
cluster: a streaming cursor (``yield_per``) writes :data:`EXPORT_ROWS` rows at a time into one
file (a local path or a URI of the build's scratch), so the driver holds one chunk at a time
whatever the number of members. :mod:`.distributed` reads them into Spark; the store, not a
previous build, is the truth for the stored tiers (see its docstring).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Connection, Engine, Select, select

from memberwise.kit.storage import DEFAULT, Storage, is_local, join, local_path
from memberwise.membership import ledger_facts, repository
from memberwise.program.membership import Anchor
from memberwise.program.schemas import Program

#: Rows per chunk of the store's export (one chunk in the driver at a time).
EXPORT_ROWS = 50_000
STATE_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string()),
        pa.field("stored_tier", pa.string()),
        pa.field("stored_source", pa.string()),
        pa.field("stored_since", pa.int64()),
        pa.field("stored_until", pa.int64()),
    ]
)
JOINED_SCHEMA = pa.schema([pa.field("member_id", pa.string()), pa.field("joined_us", pa.int64())])
#: A window's points per member, and the earned lots for points since the last tier change.
POINTS_SCHEMA = pa.schema([pa.field("member_id", pa.string()), pa.field("points", pa.int64())])
LOTS_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string()),
        pa.field("earned_us", pa.int64()),
        pa.field("points", pa.int64()),
    ]
)


def export_query(
    conn: Connection,
    query: Select[Any],
    schema: pa.Schema,
    where: Path | str,
    storage: Storage = DEFAULT,
) -> int:
    """Stream the rows of ``query`` (typed as ``schema``) into one Parquet file at ``where``
    (a local path, or a URI ``storage`` reaches: the build backend's, with the object store's
    credentials and endpoint), :data:`EXPORT_ROWS` at a time; the rows written."""
    result = conn.execute(query, execution_options={"yield_per": EXPORT_ROWS})
    rows = 0
    if is_local(where):
        target = local_path(where)
        target.parent.mkdir(parents=True, exist_ok=True)
        sink: Any = open(target, "wb")  # noqa: SIM115 (closed below, after the writer)
    else:
        sink = storage.fs(str(where)).open(str(where), "wb")
    try:
        with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
            for part in result.partitions():
                values = list(zip(*part, strict=True))
                writer.write_table(
                    pa.Table.from_arrays(
                        [pa.array(v, type=f.type) for v, f in zip(values, schema, strict=True)],
                        schema=schema,
                    )
                )
                rows += len(part)
    finally:
        sink.close()
    return rows


def uses_join_date(program: Program) -> bool:
    """Whether a tier's period is anchored on the member's registration anniversary."""
    return any(t.validity.anchor is Anchor.join_date for t in program.tiers)


def export_state(
    engine: Engine, program: Program, folder: Path | str, storage: Storage = DEFAULT
) -> dict[str, str]:
    """The stored tiers (and registration times, when a tier needs them) as Parquet files in
    ``folder`` (reached with ``storage``): ``{"state": uri, "joined": uri}``."""
    out = {"state": str(join(str(folder), "stored_tiers.parquet"))}
    with engine.connect() as conn:
        export_query(conn, repository.tier_states_query(conn), STATE_SCHEMA, out["state"], storage)
        if uses_join_date(program):
            out["joined"] = str(join(str(folder), "join_times.parquet"))
            export_query(
                conn, repository.join_times_query(conn), JOINED_SCHEMA, out["joined"], storage
            )
    return out


def point_metrics(program: Program) -> list[str]:
    """The points metrics a qualification counts (``points_90d``, ``points_since_change``)."""
    return sorted(
        {q.metric for t in program.tiers for q in t.qualify if q.metric.startswith("points")}
    )


def export_points(
    engine: Engine, program: Program, folder: Path | str, as_of: Any, storage: Storage = DEFAULT
) -> dict[str, str]:
    """The ledger's points as Parquet files in ``folder``, streamed out of the store in chunks
    of :data:`EXPORT_ROWS` like the stored tiers: ``{metric: uri}`` for each points metric a
    qualification counts (empty when none does). A window metric (``points_90d``) is the
    ledger's per-member sum (``member_id``, ``points``); ``points_since_change`` needs each
    member's own start, so it is the earned lots (``member_id``, ``earned_us``, ``points``),
    summed by :func:`points_tables` where the stored tiers are."""
    out: dict[str, str] = {}
    facts = ledger_facts.ledger()
    with engine.connect() as conn:
        for metric in point_metrics(program):
            where = str(join(str(folder), f"{metric}.parquet"))
            if metric == "points_since_change":
                lots = facts.earned_lots_query().subquery()
                query = select(
                    lots.c.member_id, repository.epoch_us(conn, lots.c.earned_at), lots.c.points
                )
                export_query(conn, query, LOTS_SCHEMA, where, storage)
            else:
                days = int(metric.removeprefix("points_").removesuffix("d"))
                window = facts.earned_in_window_query(as_of, days)
                export_query(conn, window, POINTS_SCHEMA, where, storage)
            out[metric] = where
    return out
