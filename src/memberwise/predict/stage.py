"""The build stage ``predictions``: fit the value and churn models, score every member, and put
``clv_12m``, ``p_alive`` and ``churn_risk`` into the profiles the later stages read.

Runs right after ``profiles`` and before ``tags``. It reads the lake's purchase events and the
build's ``profiles.parquet`` and writes

- ``predictions.parquet``: one row per member of the profiles (see
  :data:`~.scoring.PREDICTIONS_SCHEMA`);
- ``predictions.json``: the model version (this build's id), the clock and every model's
  parameters and fit diagnostics (also recorded in ``build.json`` under ``predictions``);
- ``models/``: ``bgnbd.json``, ``gammagamma.json``, ``churn.txt`` (LightGBM text) and
  ``churn.json`` (features, calibrator, metrics) — no pickle anywhere;
- ``profiles.parquet`` again, with the three predicted fields filled in (written to a
  temporary name and renamed over the old one: a file linked from an earlier build is left as
  it was), so tag, segment, tier and invitation rules and the published profile see them.

**Models.** BG/NBD + Gamma-Gamma are fitted on the purchase history up to ``as_of`` in
**days** (purchase days in the program's time zone, as :func:`~.rfm.rfm_summary` counts them):
days keep the 90-day horizon and month lengths exact, and the models rescale time internally so
the unit does not change the fit. Spend is in CNY (yuan), so ``clv_12m`` is CNY. Churn is the
LightGBM model of :mod:`.churn` on a time split: profiles recomputed as of
``as_of - churn_horizon_days`` and the purchases after them.

**Members without a purchase** are no customers in the RFM sense: they get ``clv_12m = 0`` and
``expected_purchases_90d = 0`` (the models value repeat purchases; a first purchase is not one),
``p_alive`` from BG/NBD with no repeat purchase (1: the model lets customers drop out only after
a repeat purchase) and a ``churn_risk`` from the churn model like everyone else.

**When a model cannot be fitted** (too little data: a young lake, no repeat buyers, no prices)
the stage does not fail the build: the fields that model makes are null (never NaN), and
``predictions.json`` says which model, with the error's code and sentence.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import ibis
import ibis.expr.types as ir
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from memberwise.kit import sparkframes
from memberwise.kit.lake import atomic_write_bytes, fsync_file
from memberwise.kit.storage import join
from memberwise.kit.warehouse import read_parquet, write_parquet
from memberwise.predict.scoring import (
    PREDICTIONS_SCHEMA,
    SEED,
    finite,
    predict_members,
    with_predictions,
)
from memberwise.profiles.fields import PREDICTED_FIELDS

if TYPE_CHECKING:
    from memberwise.builds import BuildContext
PURCHASES_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("amount", pa.float64()),
    ]
)


# --- the stage (I/O) --------------------------------------------------------------------------


def read_purchases(events: ir.Table, *, as_of: datetime) -> ir.Table:
    """Purchase events up to ``as_of`` as (member_id, ts, amount in CNY); a purchase without a
    price counts 0, without a quantity 1."""
    clock = ibis.literal(as_of.astimezone(UTC).replace(tzinfo=None), type="timestamp")
    bought = events.filter((events.type == "purchase") & (events.ts <= clock))
    amount = bought.price.fill_null(0).cast("float64") * bought.quantity.fill_null(1).cast(
        "float64"
    )
    return bought.select("member_id", "ts", amount=amount / 100.0)


def _write_table(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    pq.write_table(table, tmp, compression="zstd")
    fsync_file(tmp)
    os.replace(tmp, path)


def _snapshot_table(ctx: BuildContext, cutoff: datetime, work: Path | str) -> ir.Table:
    """Profiles as of ``cutoff``, computed with the profiles stage's own expressions and
    written under ``work`` (a local folder or the build's scratch URI; the caller removes
    it)."""
    from memberwise.members import service as members_service
    from memberwise.profiles.features import member_profiles

    with ctx.runtime.engine.connect() as conn:
        attributes = members_service.analytics_attributes(conn)
    if isinstance(work, Path):
        work.mkdir(exist_ok=True)

    def materialize(name: str, table: ir.Table) -> ir.Table:
        path = join(work, f"{name}.parquet")
        write_parquet(ctx.con, table, path)
        return read_parquet(ctx.con, [path])

    offset = ZoneInfo(ctx.program.display_timezone).utcoffset(cutoff) or timedelta(0)
    profiles, _ = member_profiles(
        ctx.runtime.lake.events_table(ctx.con),
        ibis.memtable(attributes),
        as_of=cutoff,
        utc_offset=offset,
        materialize=materialize,
    )
    path = join(work, "snapshot.parquet")
    write_parquet(ctx.con, profiles, path)
    return read_parquet(ctx.con, [path])


def _snapshot(ctx: BuildContext, cutoff: datetime) -> pa.Table:
    """Profiles as of ``cutoff`` as an Arrow table, in member_id order (the churn model's
    seeded split assigns rows by position, so a fixed order gives the same model on every
    engine and run)."""
    work = ctx.path("_work_predictions")
    try:
        _snapshot_table(ctx, cutoff, work)
        table = pq.read_table(work / "snapshot.parquet")
        return table.sort_by([("member_id", "ascending")])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stage_on_spark(ctx: BuildContext) -> int:
    """The stage when the engine is Spark: fit on the driver from collapsed and sampled
    tables, score in the executors (:mod:`memberwise.predict.distributed`)."""
    from memberwise.predict.distributed import predict_on_spark

    steps = 5
    as_of = ctx.result.as_of
    settings = ctx.program.predictions
    timezone = ctx.program.display_timezone
    timings: dict[str, float] = {}
    # Under the storage URI when it is remote: the executors write the snapshot there.
    work = ctx.scratch("_work_predictions")
    try:
        started = time.perf_counter()
        profiles = ctx.table("profiles.parquet")
        purchases = read_purchases(ctx.runtime.lake.events_table(ctx.con), as_of=as_of)
        cutoff = as_of - timedelta(days=settings.churn_horizon_days)
        snapshot = _snapshot_table(ctx, cutoff, work)
        timings["snapshot_seconds"] = time.perf_counter() - started
        ctx.progress("predictions", 2, steps)

        started = time.perf_counter()
        scored, models, diagnostics = predict_on_spark(
            ctx.con,
            profiles,
            purchases,
            snapshot,
            as_of=as_of,
            timezone=timezone,
            settings=settings,
            seed=SEED,
            work=str(join(work, "spark")),
        )
        table = scored.cast(ibis.Schema.from_pyarrow(PREDICTIONS_SCHEMA)).order_by("member_id")
        rows = write_parquet(ctx.con, table, ctx.path("predictions.parquet"))
        timings["models_seconds"] = time.perf_counter() - started
        ctx.progress("predictions", 3, steps)

        started = time.perf_counter()
        models_dir = ctx.path("models")
        models_dir.mkdir(exist_ok=True)
        if models["bgnbd"] is not None:
            models["bgnbd"].save(models_dir / "bgnbd.json")
        if models["gammagamma"] is not None:
            models["gammagamma"].save(models_dir / "gammagamma.json")
        if models["churn"] is not None:
            models["churn"].save(models_dir / "churn.txt", models_dir / "churn.json")
        written = ctx.table("predictions.parquet")
        diagnostics["members"] = rows
        diagnostics["re_buyers"] = int(
            written.next_purchase_date.notnull().sum().to_pyarrow().as_py() or 0
        )
        # Rules of later stages read the predicted fields from the profiles.
        picked = written.select(
            "member_id", **{f"_{name}": written[name] for name in PREDICTED_FIELDS}
        )
        joined = profiles.left_join(picked, profiles.member_id == picked.member_id)
        filled = joined.select(
            *[
                joined[f"_{c}"].cast("float64").name(c) if c in PREDICTED_FIELDS else joined[c]
                for c in profiles.columns
            ]
        )
        # Spark writes the new profiles aside and replaces the old ones once every task has
        # read them (a renamed directory, or a new manifest on an object store). (A profiles
        # file linked from an earlier build keeps its contents: only the link goes.)
        write_parquet(ctx.con, filled, ctx.path("profiles.parquet"))
        timings["write_seconds"] = time.perf_counter() - started
        ctx.progress("predictions", 4, steps)
    finally:
        ctx.drop_scratch(work)
    _record(ctx, finite(diagnostics), timings)
    ctx.progress("predictions", steps, steps)
    return rows


def _record(ctx: BuildContext, diagnostics: dict[str, Any], timings: dict[str, float]) -> None:
    """``predictions.json`` and the build manifest's ``predictions`` section."""
    section = {
        "model_version": ctx.result.build_id,
        "as_of": ctx.result.as_of.isoformat(),
        "fitted_at": datetime.now(UTC).isoformat(),
        "timezone": ctx.program.display_timezone,
        **diagnostics,
        "timings": timings,
    }
    atomic_write_bytes(
        ctx.path("predictions.json"), orjson.dumps(section, option=orjson.OPT_INDENT_2)
    )
    ctx.meta.setdefault("sections", {})["predictions"] = section


def stage_predictions(ctx: BuildContext) -> int:
    """Fit, score, write ``predictions.parquet``, the models and the filled-in profiles."""
    steps = 5
    ctx.progress("predictions", 0, steps)
    if sparkframes.is_spark(ctx.con):
        return _stage_on_spark(ctx)
    as_of = ctx.result.as_of
    settings = ctx.program.predictions
    timezone = ctx.program.display_timezone
    timings: dict[str, float] = {}

    started = time.perf_counter()
    profiles = pq.read_table(ctx.path("profiles.parquet"))
    events = ctx.runtime.lake.events_table(ctx.con)
    purchases = ctx.con.to_pyarrow(read_purchases(events, as_of=as_of)).cast(PURCHASES_SCHEMA)
    timings["read_seconds"] = time.perf_counter() - started
    ctx.progress("predictions", 1, steps)

    started = time.perf_counter()
    cutoff = as_of - timedelta(days=settings.churn_horizon_days)
    snapshot = _snapshot(ctx, cutoff)
    timings["snapshot_seconds"] = time.perf_counter() - started
    ctx.progress("predictions", 2, steps)

    started = time.perf_counter()
    made = predict_members(
        profiles, purchases, snapshot, as_of=as_of, timezone=timezone, settings=settings
    )
    timings["models_seconds"] = time.perf_counter() - started
    ctx.progress("predictions", 3, steps)

    started = time.perf_counter()
    models = ctx.path("models")
    models.mkdir(exist_ok=True)
    if made.bgnbd is not None:
        made.bgnbd.save(models / "bgnbd.json")
    if made.gammagamma is not None:
        made.gammagamma.save(models / "gammagamma.json")
    if made.churn is not None:
        made.churn.save(models / "churn.txt", models / "churn.json")
    _write_table(ctx.path("predictions.parquet"), made.table)
    # Rules of later stages read the predicted fields from the profiles.
    _write_table(ctx.path("profiles.parquet"), with_predictions(profiles, made.table))
    timings["write_seconds"] = time.perf_counter() - started
    ctx.progress("predictions", 4, steps)

    _record(ctx, made.diagnostics, timings)
    ctx.progress("predictions", steps, steps)
    return int(made.table.num_rows)
