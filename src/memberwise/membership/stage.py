"""The build's ``tiers`` stage, and the same evaluation for ``memberwise tiers preview``.

One Ibis pass over the profiles (and the lake, when a tier qualifies by net spend) gives every
member's score with its parts, which qualification of which tier they meet, each paid plan's fee
for them and their black-card eligibility and ranking values. Tier evaluation then runs in NumPy
against the tiers held now in the operational store (:mod:`memberwise.membership.tiers`), and the
black-card invitations are chosen (:mod:`memberwise.membership.invitations`). Results go to
``tiers.parquet`` and ``invitations.parquet``; the publish step applies them.

When the engine is Spark the same evaluation (:func:`evaluate_rows`) runs batch by batch in
the executors against the stored tiers exported to Parquet, and nothing member-sized reaches
the driver (:mod:`memberwise.membership.distributed`).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Connection, Engine

from memberwise.kit import sparkframes
from memberwise.kit.diffpublish import Commit, no_commit
from memberwise.kit.lake import atomic_write_bytes
from memberwise.kit.time import utcnow
from memberwise.kit.warehouse import open_backend, read_parquet
from memberwise.membership import invitations, ledger_facts, notices, repository
from memberwise.membership import service as membership_service
from memberwise.membership.score import (
    PART_PREFIX,
    needs_spend_since_change,
    net_spend,
    score_columns,
    spend_windows,
)
from memberwise.membership.tiers import (
    NONE,
    Evaluation,
    TierState,
    evaluate,
    from_us,
    transition_matrix,
)
from memberwise.profiles.rules import compile_rule, parse_rule
from memberwise.program.membership import MEMBERSHIP_FIELDS, Anchor, Qualification
from memberwise.program.schemas import Program

if TYPE_CHECKING:
    from memberwise.builds import BuildContext
    from memberwise.runtime import Runtime

TIERS_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string()),
        pa.field("tier", pa.string()),
        pa.field("source", pa.string()),
        pa.field("since", pa.timestamp("us", tz="UTC")),
        pa.field("until", pa.timestamp("us", tz="UTC")),
        pa.field("score", pa.int64()),
        pa.field("change", pa.string()),
        pa.field("from_tier", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("details", pa.string()),
    ]
)
CHANGE_NAMES = ("kept", "initial", "upgrade", "downgrade", "renewed")


def qualification_column(tier: int, item: int) -> str:
    return f"q_{tier}_{item}"


def member_inputs(
    con: ibis.BaseBackend,
    profiles: ir.Table,
    events: ir.Table | None,
    program: Program,
    *,
    as_of: datetime,
    since: pa.Table | None,
) -> pa.Table:
    """Per member: score and parts, metrics, qualification flags, plan fees, black-card
    eligibility and ranking fields (one row per profile)."""
    since_table = ibis.memtable(since) if since is not None else None
    out = member_inputs_expr(profiles, events, program, as_of=as_of, since=since_table)
    return con.to_pyarrow(out)


def member_inputs_expr(
    profiles: ir.Table,
    events: ir.Table | None,
    program: Program,
    *,
    as_of: datetime,
    since: ir.Table | None,
) -> ir.Table:
    """:func:`member_inputs` as an Ibis expression (nothing runs): the Spark path keeps it on
    the cluster. ``since``: (member_id, since) of the stored tiers, for spend since a change."""
    scored = profiles.mutate(**score_columns(profiles, program.score))
    windows = spend_windows(program)
    since_needed = needs_spend_since_change(program)
    if events is not None and (windows or since_needed):
        since_table = since if since_needed else None
        spend = net_spend(events, as_of=as_of, windows=windows, since=since_table)
        names = [c for c in spend.columns if c != "member_id"]
        joined = scored.left_join(spend, "member_id")
        scored = joined.select(
            *scored.columns,
            **{n: joined[n].fill_null(0) for n in names},
        )
    columns: dict[str, ir.Value] = {}
    for t, tier in enumerate(program.tiers):
        for j, q in enumerate(tier.qualify):
            columns[qualification_column(t, j)] = _qualifies(scored, q)
    for name, plan in program.plans.items():
        fee: ir.Value = ibis.literal(plan.fee)
        for price in reversed(plan.prices):
            rule = parse_rule(f"plans.{name}", price.rule, MEMBERSHIP_FIELDS)
            fee = ibis.ifelse(compile_rule(rule, scored), price.fee, fee)
        columns[f"fee_{name}"] = fee.cast("int64")
    card = program.black_card
    if card is not None:
        criteria = parse_rule("black_card.criteria", card.criteria, MEMBERSHIP_FIELDS)
        active = parse_rule("black_card.quota", card.quota.active_rule, MEMBERSHIP_FIELDS)
        columns["bc_eligible"] = compile_rule(criteria, scored)
        columns["bc_active"] = compile_rule(active, scored)
    keep = ["member_id", "score", *[c for c in scored.columns if c.startswith(PART_PREFIX)]]
    keep += [c for c in scored.columns if c.startswith("net_spend_")]
    keep += [p.field for p in program.score.parts]
    if card is not None:
        keep += [c.field for c in card.ranking if c.field not in keep]
    return scored.select(*dict.fromkeys(keep), **columns)


def _qualifies(table: ir.Table, q: Qualification) -> ir.BooleanValue:
    if q.rule is not None:
        return compile_rule(parse_rule("qualify", q.rule, MEMBERSHIP_FIELDS), table)
    if q.metric.startswith("points"):
        # Points earned come from the ledger, outside the warehouse; see points_qualified().
        return ibis.literal(False)
    threshold = q.threshold or 0
    return table[q.metric].fill_null(0) >= threshold


def highest_qualified(
    program: Program, table: pa.Table, points: dict[str, Any]
) -> np.ndarray[Any, Any]:
    """Each member's highest automatic tier whose any-of qualification holds (0: the floor)."""
    n = table.num_rows
    best = np.zeros(n, dtype=np.int64)
    for t, tier in enumerate(program.tiers):
        if t == 0 or not tier.automatic:
            continue
        met = np.zeros(n, dtype=bool)
        for j, q in enumerate(tier.qualify):
            if q.metric.startswith("points"):
                earned = points.get(q.metric)
                if earned is not None:
                    met |= earned >= (q.threshold or 0)
            else:
                met |= table.column(qualification_column(t, j)).to_numpy(zero_copy_only=False)
        best = np.where(met, t, best)
    return best


def _positions(values: pa.Array, within: pa.Array) -> np.ndarray[Any, Any]:
    """The position of each value in ``within`` (-1 when absent), vectorized."""
    found = pc.index_in(values, value_set=within)
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def current_state(
    program: Program, engine: Engine, member_ids: pa.Array
) -> tuple[TierState, np.ndarray[Any, Any]]:
    """The stored tier of each member (aligned with ``member_ids``) and, when a tier is
    anchored on it, their registration time. Times are read as epoch microseconds computed by
    the database: converting a million datetimes in Python took ~50 s."""
    uses_join = any(t.validity.anchor is Anchor.join_date for t in program.tiers)
    with engine.connect() as conn:
        stored = repository.tier_states(conn)
        joined = repository.join_times(conn) if uses_join else []
    names = pa.array([t.name for t in program.tiers], pa.string())
    n = len(member_ids)
    state = TierState(
        tier=np.full(n, NONE, dtype=np.int64),
        source=np.full(n, "auto", dtype=object),
        since=np.full(n, NONE, dtype=np.int64),
        until=np.full(n, NONE, dtype=np.int64),
    )
    if stored:
        ids, tiers, sources, since, until = (list(c) for c in zip(*stored, strict=True))
        rows = _positions(pa.array(ids, pa.string()), member_ids)
        tier_index = _positions(pa.array(tiers, pa.string()), names)
        # Not profiled in this build, or a tier the program no longer has: evaluated afresh.
        keep = (rows >= 0) & (tier_index >= 0)
        at = rows[keep]
        state.tier[at] = tier_index[keep]
        state.source[at] = np.array(sources, dtype=object)[keep]
        state.since[at] = np.array(since, dtype=np.int64)[keep]
        ends = pa.array(until, pa.int64()).fill_null(NONE).to_numpy()
        state.until[at] = ends[keep]
    joins = np.full(n, NONE, dtype=np.int64)
    if joined:
        ids, times = (list(c) for c in zip(*joined, strict=True))
        rows = _positions(pa.array(ids, pa.string()), member_ids)
        values = pa.array(times, pa.int64()).fill_null(NONE).to_numpy()
        keep = rows >= 0
        joins[rows[keep]] = values[keep]
    return state, joins


def metrics_of(program: Program, table: pa.Table, points: dict[str, Any]) -> dict[str, list[Any]]:
    """The per-member numbers a member is shown against the thresholds (score, spend, points)."""
    out: dict[str, list[Any]] = {"score": table.column("score").to_pylist()}
    for name in table.column_names:
        if name.startswith("net_spend_"):
            out[name] = table.column(name).to_pylist()
    for name, values in points.items():
        out[name] = [int(v) for v in values]
    return out


def reasons(
    program: Program, table: pa.Table, result: Evaluation, points: dict[str, Any]
) -> list[str | None]:
    """Why each changed member's tier changed, in a sentence (None for unchanged ones)."""
    metrics = metrics_of(program, table, points)
    tiers = program.tiers
    # Which qualification each member meets, per tier and item, fetched once (not per row).
    met: dict[tuple[int, int], list[bool]] = {}
    for t, tier in enumerate(tiers):
        for j, q in enumerate(tier.qualify):
            if q.metric.startswith("points"):
                earned = metrics.get(q.metric, [0] * table.num_rows)
                met[t, j] = [int(v or 0) >= (q.threshold or 0) for v in earned]
            else:
                met[t, j] = table.column(qualification_column(t, j)).to_pylist()
    out: list[str | None] = [None] * table.num_rows
    changes, new_tiers, previous = (
        result.change.tolist(),
        result.state.tier.tolist(),
        result.previous.tolist(),
    )
    for i in np.flatnonzero(result.change > 0).tolist():
        kind = CHANGE_NAMES[changes[i]]
        new = tiers[new_tiers[i]]
        if kind == "downgrade":
            old = tiers[previous[i]]
            out[i] = f"did not requalify for {old.name}: " + _missing_text(old.qualify, metrics, i)
        elif kind == "renewed":
            out[i] = f"requalified for {new.name}"
        elif new_tiers[i] == 0:
            out[i] = f"entered {new.name}, the first tier"
        else:
            first = next((q for j, q in enumerate(new.qualify) if met[new_tiers[i], j][i]), None)
            out[i] = f"qualified for {new.name}: " + (_shown(first, metrics, i) if first else "")
    return out


def _shown(q: Qualification, metrics: dict[str, list[Any]], i: int) -> str:
    if q.rule is not None:
        return f"rule {q.rule!r} holds"
    have = metrics.get(q.metric, [0] * (i + 1))[i] or 0
    return f"{q.metric} {_unit(q, have)} >= {_unit(q, q.threshold or 0)}"


def _unit(q: Qualification, value: int) -> str:
    return f"{value / 100:.2f} CNY" if q.spend is not None else str(value)


def _missing_text(qualify: tuple[Qualification, ...], metrics: dict[str, list[Any]], i: int) -> str:
    parts = []
    for q in qualify:
        if q.rule is not None:
            parts.append(f"rule {q.rule!r} does not hold")
        else:
            have = metrics.get(q.metric, [0] * (i + 1))[i] or 0
            parts.append(f"{q.metric} {_unit(q, have)} < {_unit(q, q.threshold or 0)}")
    return "; ".join(parts)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _key(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


def details(
    program: Program, table: pa.Table, result: Evaluation, points: dict[str, Any]
) -> pa.Array:
    """Each member's details as JSON text, made by DuckDB over the Arrow columns (a Python
    loop costs ~10 s a million members): the score parts as [field value, points], the
    qualification metrics, each plan's fee and the downgrade notice."""
    names = np.array([t.name for t in program.tiers], dtype=object)
    notice_on = result.notice_on
    columns = {
        "_notice_on": pa.array(notice_on, pa.int64(), mask=notice_on == NONE),
        "_notice_to": pa.array(
            names[np.maximum(result.notice_to, 0)].tolist(), pa.string(), mask=notice_on == NONE
        ),
    }
    for name, values in points.items():
        columns[name] = pa.array(values, pa.int64())
    frame = table
    for name, array in columns.items():
        frame = frame.append_column(name, array)
    parts = ", ".join(
        f"{_key(p.name)}: [{_quote(p.field)}::DOUBLE, round({_quote(PART_PREFIX + p.name)}, 2)]"
        for p in program.score.parts
    )
    metric_names = [c for c in frame.column_names if c.startswith("net_spend_")] + list(points)
    metrics = ", ".join(f"{_key(m)}: {_quote(m)}" for m in metric_names)
    fees = ", ".join(f"{_key(n)}: {_quote('fee_' + n)}" for n in program.plans)
    sql = (
        "SELECT to_json({"
        + f"'parts': {('{' + parts + '}') if parts else 'map()'}, "
        + f"'metrics': {('{' + metrics + '}') if metrics else 'map()'}, "
        + f"'fees': {('{' + fees + '}') if fees else 'map()'}, "
        + "'notice': CASE WHEN _notice_on IS NULL THEN NULL "
        + "ELSE {'downgrade_on_us': _notice_on, 'to': _notice_to} END"
        + "})::VARCHAR AS details FROM frame"
    )
    con = duckdb.connect()
    try:
        con.register("frame", frame)
        result_table = con.sql(sql).to_arrow_table()
        assert result_table is not None
        out: pa.Array = result_table.column("details").combine_chunks()
    finally:
        con.close()
    return out


def tiers_table(
    program: Program, table: pa.Table, result: Evaluation, points: dict[str, Any]
) -> pa.Table:
    """The ``tiers.parquet`` rows: every member's tier after evaluation and its details."""
    names = np.array([t.name for t in program.tiers], dtype=object)
    tier_names = names[result.state.tier]
    previous = [names[p] if p >= 0 else None for p in result.previous]
    detail_table = details(program, table, result, points)

    def times(values: np.ndarray[Any, Any]) -> pa.Array:
        return pc.cast(
            pa.array(values, pa.int64(), mask=values == NONE), pa.timestamp("us", tz="UTC")
        )

    return pa.table(
        {
            "member_id": table.column("member_id"),
            "tier": pa.array(tier_names.tolist(), pa.string()),
            "source": pa.array(result.state.source.tolist(), pa.string()),
            "since": times(result.state.since),
            "until": times(result.state.until),
            "score": table.column("score").cast(pa.int64()),
            "change": pa.array([CHANGE_NAMES[c] for c in result.change], pa.string()),
            "from_tier": pa.array(previous, pa.string()),
            "reason": pa.array(reasons(program, table, result, points), pa.string()),
            "details": detail_table,
        },
        schema=TIERS_SCHEMA,
    )


def points_metrics(
    program: Program, engine: Engine, member_ids: pa.Array, state: TierState, as_of: datetime
) -> dict[str, Any]:
    """Points earned per window or since the last tier change, from the ledger (empty when the
    program has no points qualification)."""
    wanted = {q.metric for t in program.tiers for q in t.qualify if q.metric.startswith("points")}
    if not wanted:
        return {}
    ids = member_ids.to_pylist()
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        for metric in sorted(wanted):
            if metric == "points_since_change":
                since = {
                    m: from_us(s)
                    for m, s in zip(ids, state.since.tolist(), strict=True)
                    if s != NONE
                }
                earned = ledger_facts.ledger().earned_since(conn, since)
            else:
                days = int(metric.removeprefix("points_").removesuffix("d"))
                earned = ledger_facts.ledger().earned_in_window(conn, as_of, days)
            out[metric] = np.array([earned.get(m, 0) for m in ids], dtype=np.int64)
    return out


def evaluate_members(
    con: ibis.BaseBackend,
    engine: Engine,
    profiles: ir.Table,
    events: ir.Table | None,
    program: Program,
    *,
    as_of: datetime,
) -> tuple[pa.Table, pa.Table, Evaluation]:
    """The whole evaluation: (tiers rows, inputs table, evaluation); nothing is written."""
    ids = con.to_pyarrow(profiles.select("member_id")).column("member_id").combine_chunks()
    state, joins = current_state(program, engine, ids)
    since = None
    if needs_spend_since_change(program):
        mask = state.since == NONE
        since = pa.table(
            {
                "member_id": ids,
                "since": pc.cast(
                    pa.array(state.since, pa.int64(), mask=mask), pa.timestamp("us", tz="UTC")
                ),
            }
        )
    table = member_inputs(con, profiles, events, program, as_of=as_of, since=since)
    # Align the stored state with the inputs' row order.
    perm = _positions(table.column("member_id").combine_chunks(), ids)
    state = TierState(state.tier[perm], state.source[perm], state.since[perm], state.until[perm])
    joins = joins[perm]
    points = points_metrics(
        program, engine, table.column("member_id").combine_chunks(), state, as_of
    )
    rows, result = evaluate_rows(program, table, state, joins, points, as_of)
    return rows, table, result


def evaluate_rows(
    program: Program,
    table: pa.Table,
    state: TierState,
    joins: np.ndarray[Any, Any],
    points: dict[str, Any],
    as_of: datetime,
) -> tuple[pa.Table, Evaluation]:
    """The pure part of the evaluation, member by member (no store, no engine): from each
    member's inputs, stored tier, registration time and points, their ``tiers.parquet`` rows.
    The embedded path runs it once over all members; the Spark path runs the very same
    function on each batch of members in the executors (:mod:`.distributed`)."""
    qualified = highest_qualified(program, table, points)
    result = evaluate(program, state, qualified, joins, as_of)
    return tiers_table(program, table, result, points), result


def run_stage(ctx: BuildContext) -> int:
    """The build's ``tiers`` stage: ``tiers.parquet``, ``invitations.parquet`` and
    ``program.json`` (the program they were evaluated under, for the publish step)."""
    program = ctx.program
    ctx.progress("tiers", 0, 3)
    atomic_write_bytes(ctx.path("program.json"), program.model_dump_json().encode())
    if not program.tiers:
        _write(ctx.path("tiers.parquet"), TIERS_SCHEMA.empty_table())
        _write(ctx.path("invitations.parquet"), invitations.INVITATIONS_SCHEMA.empty_table())
        ctx.progress("tiers", 3, 3)
        return 0
    if sparkframes.is_spark(ctx.con):
        # The cluster evaluates and writes; the driver sees only aggregates (.distributed).
        from memberwise.membership.distributed import stage_on_spark

        return stage_on_spark(ctx)
    rows, inputs, result = evaluate_members(
        ctx.con,
        ctx.runtime.engine,
        ctx.table("profiles.parquet"),
        _events_if_needed(ctx.runtime, ctx.con, program),
        program,
        as_of=ctx.result.as_of,
    )
    ctx.progress("tiers", 1, 3)
    written = _write(ctx.path("tiers.parquet"), rows)
    ctx.progress("tiers", 2, 3)
    section, chosen = summarize(ctx.runtime.engine, program, inputs, result)
    _write(ctx.path("invitations.parquet"), chosen)
    ctx.meta.setdefault("sections", {})["tiers"] = section
    ctx.progress("tiers", 3, 3)
    return written


def _write(path: Path, table: pa.Table) -> int:
    pq.write_table(table, path, compression="zstd")
    return int(table.num_rows)


def preview(runtime: Runtime, program: Program, build_dir: Path) -> dict[str, Any]:
    """What applying ``program`` would do now to the tiers held in the store, from the
    profiles of ``build_dir``: the transition matrix, change counts and invitations. Nothing is
    written; the build's publish applies exactly this evaluation. On Spark the executors
    evaluate and aggregate (:func:`.distributed.preview_on_spark`): the driver gets counts.

    Raises NoTiers when ``program`` defines none (e.g. the built-in default program).
    """
    if not program.tiers:
        raise membership_service.NoTiers(
            f"program {program.name!r} defines no tiers, so there is nothing to preview: pass "
            "--program FILE, or set the home's program up with `memberwise init --program FILE`"
        )
    manifest = json.loads((build_dir / "build.json").read_text())
    as_of = datetime.fromisoformat(manifest["as_of"])
    with open_backend(runtime.settings.engine, **runtime.settings.backend_options()) as con:
        profiles = read_parquet(con, [build_dir / "profiles.parquet"])
        if sparkframes.is_spark(con):
            # The cluster evaluates and aggregates, as the build's stage does (.distributed).
            from memberwise.membership.distributed import preview_on_spark

            section, members = preview_on_spark(runtime, con, program, profiles, as_of=as_of)
        else:
            events = _events_if_needed(runtime, con, program)
            _, inputs, result = evaluate_members(
                con, runtime.engine, profiles, events, program, as_of=as_of
            )
            section, _ = summarize(runtime.engine, program, inputs, result)
            members = len(result.change)
    header = {"build_id": build_dir.name, "as_of": as_of.isoformat(), "members": members}
    return {**header, **section}


def _events_if_needed(runtime: Runtime, con: ibis.BaseBackend, program: Program) -> ir.Table | None:
    """The lake's events when a qualification counts net spend (else the lake is not read)."""
    if spend_windows(program) or needs_spend_since_change(program):
        return runtime.lake.events_table(con)
    return None


def summarize(
    engine: Engine, program: Program, inputs: pa.Table, result: Evaluation
) -> tuple[dict[str, Any], pa.Table]:
    """What an evaluation would do (transitions, change counts, notices, the invitation
    summary) and the new black-card invitations: the build records and applies these, the
    preview prints them."""
    section: dict[str, Any] = {
        "transitions": transition_matrix(program, result),
        "changes": change_counts({k: int((result.change == k).sum()) for k in range(5)}),
        "notices": int((result.notice_on != NONE).sum()),
    }
    chosen = invitations.INVITATIONS_SCHEMA.empty_table()
    if program.black_card is not None:
        now = utcnow()
        with engine.connect() as conn:
            taken = membership_service.taken_slots(conn, program, now)
            blocked = membership_service.blocked_members(conn, program, now)
        chosen, section["invitations"] = invitations.choose(
            program.black_card, inputs, taken=taken, blocked=blocked
        )
    return section, chosen


def change_counts(counts: dict[int, int]) -> dict[str, int]:
    """``{change name: members}`` in :data:`CHANGE_NAMES` order (0 for a change none had)."""
    return {name: int(counts.get(k, 0)) for k, name in enumerate(CHANGE_NAMES)}


def publish(conn: Connection, build_dir: Path, commit: Commit = no_commit) -> int:
    """The publish step's part: apply the build's tiers under the program they were made with
    (by difference, ``commit`` after each batch)."""
    path = build_dir / "program.json"
    if not path.exists():
        return 0
    program = Program.model_validate_json(path.read_text())
    written = membership_service.publish_tiers(conn, program, build_dir, commit=commit)
    notices.record(conn, program, build_dir)  # each downgrade notice once, with its message
    return written
