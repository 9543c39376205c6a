"""The ``tiers`` stage on a Spark cluster: the executors evaluate, the driver sees aggregates.

When the build's engine is Spark no member-sized table sits on the driver:

- **The stored tiers reach the cluster as Parquet.** The tiers held now in the operational
  store (and, for a tier anchored on it, each member's registration time) are exported by a
  streaming cursor in chunks (:mod:`.store_export`) into a Parquet file in the build's
  scratch, which Spark reads. The store, not the previous build's ``tiers.parquet``,
  is the truth: staff grants, accepted invitations and lapsed manual tiers change it between
  builds, and a first build on a cluster has no previous artifact. Spark cannot read the store
  itself here (no JDBC driver ships with pyspark, and SQLite is a local file); the driver holds
  one chunk at a time, so its memory stays flat.
- **The evaluation runs in the executors** (``mapInArrow``): each batch of members, with their
  inputs (the same Ibis expression as the embedded path, compiled to Spark SQL) joined with
  their stored state, goes through the very function the embedded path runs over all members,
  :func:`memberwise.membership.stage.evaluate_rows` (qualification, upgrade, hold and grace,
  downgrade and its notice, manual and invitation overrides, the reason and details). The
  rules are per member, so evaluating batch by batch gives the same rows; keeping one function
  rather than a second version in SQL keeps the two engines from drifting apart.
- **Spark writes** ``tiers.parquet`` from the executors
  (:func:`memberwise.kit.warehouse.write_parquet`). The build's summary (transitions, changes,
  notices) is an aggregate of that artifact: a few dozen rows reach the driver.
- **Black-card invitations** are ranked on the cluster: percentiles among the eligible
  members by window functions (ties share their average rank, as the embedded path's), the
  weighted composite, the quota's free slots; only the chosen members (at most the quota)
  come to the driver, where :func:`.invitations.invitations_table` writes their explanations.
- **Points earned** (a tier qualifying by them) come the same way: the ledger hands over its
  queries (:mod:`.ledger_facts`), a window's per-member sums and, for points since the last
  change, the earned lots, which are streamed to Parquet in chunks; the lots are summed from
  each member's stored ``since`` by the engine, joined where the stored tiers are.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
from sqlalchemy import Engine

from memberwise.kit import sparkframes
from memberwise.kit.time import utcnow
from memberwise.kit.warehouse import read_parquet, storage_of, write_parquet
from memberwise.membership import invitations
from memberwise.membership import service as membership_service
from memberwise.membership.score import needs_spend_since_change
from memberwise.membership.stage import (
    _events_if_needed,
    _positions,
    _write,
    change_counts,
    evaluate_rows,
    member_inputs_expr,
)
from memberwise.membership.store_export import (
    export_points,
    export_state,
    point_metrics,
)
from memberwise.membership.tiers import NONE, TierState, matrix_of
from memberwise.program.schemas import Program

if TYPE_CHECKING:
    from memberwise.builds import BuildContext
    from memberwise.runtime import Runtime

#: The columns the stored state adds to a batch of inputs (dropped before evaluation).
STATE_COLUMNS = ("stored_tier", "stored_source", "stored_since", "stored_until", "joined_us")
TIERS_DDL = (
    "member_id string, tier string, source string, since timestamp, until timestamp, "
    "score bigint, change string, from_tier string, reason string, details string"
)


def points_tables(
    con: ibis.BaseBackend, program: Program, state: str, points: dict[str, str]
) -> list[ir.Table]:
    """One (member_id, metric) table per exported points metric, computed by the engine: a
    window's sums as exported; points since the last change summed from the lots on or after
    the member's stored ``since`` (all their lots when their stored tier is none the program
    has), as the ledger's :meth:`~.ledger_facts.LedgerFacts.earned_since` sums them."""
    out = []
    for metric, path in sorted(points.items()):
        table = read_parquet(con, [path])
        if metric == "points_since_change":
            stored = read_parquet(con, [state])
            names = [t.name for t in program.tiers]
            starts = stored.filter(
                stored.stored_tier.isin(names) & stored.stored_since.notnull()
            ).select(_start_key=stored.member_id, _start=stored.stored_since)
            lots = table.left_join(starts, table.member_id == starts._start_key)
            counted = lots.filter(lots._start.isnull() | (lots.earned_us >= lots._start))
            table = counted.group_by("member_id").aggregate(points=counted.points.sum())
        out.append(table.select("member_id", **{metric: table.points.cast("int64")}))
    return out


def _ints(table: pa.Table, name: str, fill: int) -> np.ndarray[Any, Any]:
    return np.asarray(
        table.column(name).fill_null(fill).to_numpy(zero_copy_only=False), dtype=np.int64
    )


def evaluate_batch(program: Program, table: pa.Table, as_of: Any) -> pa.Table:
    """One batch of members' ``tiers.parquet`` rows: ``table`` is their inputs
    (:func:`.stage.member_inputs_expr`) with the stored-state columns (:data:`STATE_COLUMNS`,
    absent ones read as "no tier" / "no date") and the points metrics. The same rules as
    :func:`.stage.current_state`: a stored tier the program no longer has is evaluated afresh."""
    n = table.num_rows
    names = pa.array([t.name for t in program.tiers], pa.string())
    if "stored_tier" in table.column_names:
        index = _positions(table.column("stored_tier").combine_chunks(), names)
        keep = index >= 0
        sources = np.array(table.column("stored_source").to_pylist(), dtype=object)
        source = np.full(n, "auto", dtype=object)
        source[keep] = sources[keep]
        state = TierState(
            tier=np.where(keep, index, NONE).astype(np.int64),
            source=source,
            since=np.where(keep, _ints(table, "stored_since", NONE), NONE).astype(np.int64),
            until=np.where(keep, _ints(table, "stored_until", NONE), NONE).astype(np.int64),
        )
    else:
        state = TierState(
            tier=np.full(n, NONE, dtype=np.int64),
            source=np.full(n, "auto", dtype=object),
            since=np.full(n, NONE, dtype=np.int64),
            until=np.full(n, NONE, dtype=np.int64),
        )
    if "joined_us" in table.column_names:
        joins = _ints(table, "joined_us", NONE)
    else:
        joins = np.full(n, NONE, dtype=np.int64)
    metrics = point_metrics(program)
    points = {m: _ints(table, m, 0) for m in metrics}
    dropped = [c for c in (*STATE_COLUMNS, *metrics) if c in table.column_names]
    rows, _ = evaluate_rows(program, table.drop_columns(dropped), state, joins, points, as_of)
    return rows


def with_state(
    con: ibis.BaseBackend,
    inputs: ir.Table,
    files: dict[str, str],
    points: list[ir.Table] | None = None,
) -> ir.Table:
    """The inputs with each member's stored state joined from the exported files, and their
    points metrics (:func:`points_tables`); a member without a stored tier has null state
    columns, one who earned no points null points (read as 0)."""
    out = inputs
    paths = [files[k] for k in ("state", "joined") if k in files]
    rights = [read_parquet(con, [path]) for path in paths] + list(points or [])
    for right in rights:
        keyed = right.rename(_state_key="member_id")
        out = out.left_join(keyed, out.member_id == keyed._state_key).drop("_state_key")
    return out


def since_table(con: ibis.BaseBackend, program: Program, state: str) -> ir.Table:
    """(member_id, since) of the stored tiers the program has, for spend since a change (a
    member absent from it counts all their spend, as a null ``since`` does)."""
    stored = read_parquet(con, [state])
    names = [t.name for t in program.tiers]
    kept = stored.filter(stored.stored_tier.isin(names))
    return kept.select(
        "member_id", since=kept.stored_since.as_timestamp("us").cast("timestamp('UTC')")
    )


def evaluated_on_spark(
    con: ibis.BaseBackend,
    engine: Engine,
    program: Program,
    profiles: ir.Table,
    events: ir.Table | None,
    *,
    as_of: Any,
    folder: Path | str,
) -> tuple[Any, ir.Table]:
    """Every member's ``tiers.parquet`` rows as a lazy Spark DataFrame (evaluated in the
    executors, batch by batch, against the stored tiers and points exported to ``folder``,
    which must stay until the frame is used), and the members' inputs."""
    storage = storage_of(con)
    files = export_state(engine, program, folder, storage)
    exported = export_points(engine, program, folder, as_of, storage)
    points = points_tables(con, program, files["state"], exported)
    since = since_table(con, program, files["state"]) if needs_spend_since_change(program) else None
    inputs = member_inputs_expr(profiles, events, program, as_of=as_of, since=since)
    frame = sparkframes.to_spark(con, with_state(con, inputs, files, points))

    def evaluate(batches: Any) -> Any:
        for batch in batches:
            if batch.num_rows:
                yield from evaluate_batch(
                    program, pa.Table.from_batches([batch]), as_of
                ).to_batches()

    return frame.mapInArrow(evaluate, TIERS_DDL), inputs


def stage_on_spark(ctx: BuildContext) -> int:
    """The ``tiers`` stage when the engine is Spark: ``tiers.parquet`` written by the
    executors, the summary from aggregates, ``invitations.parquet`` from the chosen few."""
    program, con = ctx.program, ctx.con
    as_of = ctx.result.as_of
    folder = ctx.scratch("_work_tiers")
    try:
        evaluated, inputs = evaluated_on_spark(
            con,
            ctx.runtime.engine,
            program,
            ctx.table("profiles.parquet"),
            _events_if_needed(ctx.runtime, con, program),
            as_of=as_of,
            folder=folder,
        )
        ctx.progress("tiers", 1, 3)
        written = write_parquet(
            con, sparkframes.from_spark(con, evaluated), ctx.path("tiers.parquet")
        )
        ctx.progress("tiers", 2, 3)
        section = summary_of(con, program, ctx.path("tiers.parquet"))
        chosen = invitations.INVITATIONS_SCHEMA.empty_table()
        if program.black_card is not None:
            chosen, section["invitations"] = choose_on_spark(
                ctx.runtime.engine, program, sparkframes.to_spark(con, inputs)
            )
        _write(ctx.path("invitations.parquet"), chosen)
    finally:
        ctx.drop_scratch(folder)
    ctx.meta.setdefault("sections", {})["tiers"] = section
    ctx.progress("tiers", 3, 3)
    return written


def preview_on_spark(
    runtime: Runtime,
    con: ibis.BaseBackend,
    program: Program,
    profiles: ir.Table,
    *,
    as_of: Any,
) -> tuple[dict[str, Any], int]:
    """``memberwise tiers preview`` on the cluster: the build's evaluation
    (:func:`evaluated_on_spark`), aggregated where it runs, and the black card ranked there;
    the summary (as :func:`.stage.summarize` gives it) and the members evaluated. Only
    aggregates and the would-be invited members reach the driver; nothing is written but the
    stored tiers' export, deleted afterwards."""
    from memberwise.builds import work_folder

    folder = work_folder(runtime, f"preview-{uuid.uuid4().hex}")
    try:
        evaluated, inputs = evaluated_on_spark(
            con,
            runtime.engine,
            program,
            profiles,
            _events_if_needed(runtime, con, program),
            as_of=as_of,
            folder=folder,
        )
        section, members = summary_of_frame(program, evaluated)
        if program.black_card is not None:
            _, section["invitations"] = choose_on_spark(
                runtime.engine, program, sparkframes.to_spark(con, inputs)
            )
    finally:
        with contextlib.suppress(OSError):
            storage_of(con).delete(folder)
    return section, members


def summary_of(con: ibis.BaseBackend, program: Program, tiers: Path) -> dict[str, Any]:
    """Transitions, change counts and notices, aggregated by Spark from the written
    ``tiers.parquet`` (one row per (from, to, change, notice) comes back)."""
    frame = sparkframes.to_spark(con, read_parquet(con, [tiers]))
    return summary_of_frame(program, frame)[0]


def summary_of_frame(program: Program, frame: Any) -> tuple[dict[str, Any], int]:
    """Transitions, change counts and notices of the tier rows ``frame`` (a Spark
    DataFrame), by one ``groupBy`` (a few dozen rows come back), and the number of rows."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    noticed = F.get_json_object("details", "$.notice.to").isNotNull()
    counted = frame.groupBy("from_tier", "tier", "change", noticed.alias("noticed")).count()
    names = [t.name for t in program.tiers]
    label = {name: i for i, name in enumerate(names)}
    matrix = np.zeros((len(names) + 1, len(names) + 1), dtype=np.int64)
    changes: dict[int, int] = {}
    notices = 0
    kinds = {name: k for k, name in enumerate(("kept", "initial", "upgrade", "downgrade"))}
    kinds["renewed"] = 4
    for row in counted.collect():
        before = len(names) if row["from_tier"] is None else label[row["from_tier"]]
        matrix[before, label[row["tier"]]] += row["count"]
        code = kinds[row["change"]]
        changes[code] = changes.get(code, 0) + row["count"]
        notices += row["count"] if row["noticed"] else 0
    section = {
        "transitions": matrix_of(program, matrix),
        "changes": change_counts(changes),
        "notices": notices,
    }
    return section, int(matrix.sum())


def _number(column: Any) -> Any:
    """A ranking field as NumPy's ``nan_to_num(float(x))`` sees it (null and NaN: 0)."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    value = column.cast("double")
    return (
        F.when(value.isNull() | F.isnan(value), F.lit(0.0))
        .when(value == float("inf"), F.lit(sys.float_info.max))
        .when(value == float("-inf"), F.lit(-sys.float_info.max))
        .otherwise(value)
    )


def choose_on_spark(
    engine: Engine, program: Program, inputs: Any
) -> tuple[pa.Table, dict[str, Any]]:
    """:func:`.invitations.choose` on the cluster: the same quota, percentiles, composite and
    order; only the chosen members (at most the free slots) are collected."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    card = program.black_card
    assert card is not None
    now = utcnow()
    with engine.connect() as conn:
        taken = membership_service.taken_slots(conn, program, now)
        blocked = membership_service.blocked_members(conn, program, now)
    eligible_flag = F.coalesce(F.col("bc_eligible"), F.lit(False))
    totals = inputs.agg(
        F.sum(F.coalesce(F.col("bc_active"), F.lit(False)).cast("long")).alias("active"),
        F.sum(eligible_flag.cast("long")).alias("eligible"),
    ).collect()[0]
    active, eligible = int(totals["active"] or 0), int(totals["eligible"] or 0)
    limit = invitations.quota(card, active)
    slots = max(0, limit - taken)
    summary: dict[str, Any] = {
        "active_members": active,
        "eligible": eligible,
        "quota": limit,
        "taken": taken,
        "slots": slots,
    }
    if eligible == 0 or slots == 0:
        summary["invited"] = 0
        return invitations.INVITATIONS_SCHEMA.empty_table(), summary
    ranked = inputs.where(eligible_flag).select(
        "member_id", *[_number(F.col(c.field)).alias(f"_v{i}") for i, c in enumerate(card.ranking)]
    )
    total_weight = sum(c.weight for c in card.ranking)
    composite = None
    for i, c in enumerate(card.ranking):
        # The eligible members' average rank (ties share it), as pyarrow's min/max ranks give.
        low = F.rank().over(Window.orderBy(f"_v{i}"))
        ties = F.count(F.lit(1)).over(Window.partitionBy(f"_v{i}"))
        ranked = ranked.withColumn(f"_p{i}", ((low + (low + ties - 1)) / 2.0) / F.lit(eligible))
        part = F.lit(c.weight) * F.col(f"_p{i}") / F.lit(total_weight)
        composite = part if composite is None else composite + part
    ranked = ranked.withColumn("_composite", composite)
    excluded = sorted(set(card.exclude) | set(blocked))
    if excluded:
        session = inputs.sparkSession
        ranked = ranked.join(
            session.createDataFrame([(m,) for m in excluded], "member_id string"),
            "member_id",
            "left_anti",
        )
    best = (
        ranked.orderBy(F.bround("_composite", 12).desc(), F.col("member_id").asc())
        .limit(slots)
        .collect()
    )
    picked = [
        invitations.Pick(
            row["member_id"],
            float(row["_composite"]),
            {c.field: float(row[f"_v{i}"]) for i, c in enumerate(card.ranking)},
            {c.field: float(row[f"_p{i}"]) for i, c in enumerate(card.ranking)},
        )
        for row in best
    ]
    return invitations.invitations_table(card, picked, summary), summary
