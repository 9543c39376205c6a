"""The build stage ``predictions``: fit the value and churn models, score every member, and put
``clv_12m``, ``p_alive`` and ``churn_risk`` into the profiles the later stages read.

Runs right after ``profiles`` and before ``tags``. It reads the lake's purchase events and the
build's ``profiles.parquet`` and writes

- ``predictions.parquet``: one row per member of the profiles (see :data:`PREDICTIONS_SCHEMA`);
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

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import ibis
import ibis.expr.types as ir
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memberwise.kit import sparkframes
from memberwise.kit.errors import MemberwiseError
from memberwise.kit.lake import atomic_write_bytes, fsync_file
from memberwise.kit.storage import replace_directory
from memberwise.kit.warehouse import read_parquet, write_parquet
from memberwise.predict.bgnbd import BetaGeoModel
from memberwise.predict.churn import ChurnModel, fit_churn
from memberwise.predict.clv import customer_lifetime_value
from memberwise.predict.fitting import PERIODS_PER_MONTH, FitNotConverged, UnboundedSpend
from memberwise.predict.gammagamma import GammaGammaModel
from memberwise.predict.habits import best_times, next_purchase
from memberwise.predict.rfm import purchase_days, rfm_summary
from memberwise.profiles.fields import PREDICTED_FIELDS
from memberwise.program.predictions import PredictionSettings

if TYPE_CHECKING:
    from memberwise.builds import BuildContext

#: Horizon of ``expected_purchases_90d``, in days.
EXPECTED_DAYS = 90
#: Months of ``clv_12m``.
CLV_MONTHS = 12
#: Tried when the unpenalized BG/NBD fit does not converge (a boundary maximum on odd data).
FALLBACK_PENALIZER = 0.01
SEED = 0
#: Quantiles of repeat buyers' average spend tried as caps when Gamma-Gamma's fit is unbounded.
WINSORIZE_QUANTILES = (0.99, 0.95, 0.9)

PREDICTIONS_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string()),
        pa.field("clv_12m", pa.float64()),
        pa.field("p_alive", pa.float64()),
        pa.field("churn_risk", pa.float64()),
        pa.field("expected_purchases_90d", pa.float64()),
        pa.field("expected_spend", pa.float64()),
        pa.field("repeat_purchases", pa.int64()),
        pa.field("purchase_days", pa.int64()),
        pa.field("purchase_interval_days", pa.float64()),
        pa.field("next_purchase_date", pa.date32()),
        pa.field("best_hour", pa.int32()),
        pa.field("best_weekday", pa.int32()),
    ]
)
PURCHASES_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("amount", pa.float64()),
    ]
)


@dataclass
class Predictions:
    """What :func:`predict_members` made: the table, the fitted models and the diagnostics."""

    table: pa.Table
    bgnbd: BetaGeoModel | None = None
    gammagamma: GammaGammaModel | None = None
    churn: ChurnModel | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)


def _failure(exc: MemberwiseError) -> dict[str, Any]:
    return {
        "status": "not_fitted",
        "code": exc.code,
        "message": exc.message,
        "details": exc.details,
    }


def _fitted(model: BetaGeoModel | GammaGammaModel) -> dict[str, Any]:
    return {
        "status": "fitted",
        "params": model.params,
        "log_likelihood": model.log_likelihood,
        "penalizer": model.penalizer,
        "diagnostics": model.diagnostics,
    }


def _local_date(moment: datetime, timezone: str) -> date:
    return moment.astimezone(ZoneInfo(timezone)).date()


def fit_spend(
    frequency: np.ndarray[Any, np.dtype[np.float64]],
    monetary_value: np.ndarray[Any, np.dtype[np.float64]],
) -> tuple[GammaGammaModel, float | None]:
    """Gamma-Gamma on the repeat buyers, and the cap their average spend was winsorized at
    (None: not capped).

    A few very large spenders (the black-card candidates) can make the fitted spend
    distribution's mean infinite (q <= 1); the fit is then repeated with each repeat buyer's
    average capped at the :data:`WINSORIZE_QUANTILES` of the others in turn, the usual remedy.
    Scoring still uses every member's own average, so the largest spenders keep their weight.

    When no cap helps -- the spread of spend across the whole population, not a few outliers,
    is wider than a finite-mean Gamma-Gamma allows, as on the demo platform -- the maximum
    likelihood fit on the raw averages is kept with q <= 1 (``allow_unbounded``): the population
    mean is infinite, but every buyer's conditional expectation is finite (see
    :func:`buyer_spend`). Raises another error (InvalidSpend, InsufficientData, ...) unchanged.
    """
    try:
        return GammaGammaModel().fit(frequency, monetary_value), None
    except UnboundedSpend:
        pass
    buyers = monetary_value[frequency > 0]
    for quantile in WINSORIZE_QUANTILES:
        cap = float(np.quantile(buyers, quantile))
        try:
            return GammaGammaModel().fit(frequency, np.minimum(monetary_value, cap)), cap
        except UnboundedSpend:
            pass
    return GammaGammaModel().fit(frequency, monetary_value, allow_unbounded=True), None


def buyer_spend(
    model: GammaGammaModel,
    frequency: np.ndarray[Any, np.dtype[np.float64]],
    monetary_value: np.ndarray[Any, np.dtype[np.float64]],
    first_day: np.ndarray[Any, np.dtype[np.float64]],
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Each buyer's expected spend per purchase day under ``model``.

    Repeat buyers: the conditional expectation given their repeat purchases (eq. 5). One-time
    buyers (x = 0) get the population mean when it is finite (the papers' convention); when it
    is not (q <= 1), their one purchase day (``first_day``, its amount) is their only evidence
    and they get the same model's expectation given that one transaction, p (v + z) / (p + q -
    1), finite while p + q > 1 (NaN otherwise: the model cannot say).
    """
    spend = model.conditional_expected_spend(frequency, monetary_value)
    if not model.bounded:
        once = frequency == 0
        spend[once] = model.conditional_expected_spend(np.ones(int(once.sum())), first_day[once])
    return spend


def fit_value_models(
    x: np.ndarray[Any, np.dtype[np.float64]],
    t_x: np.ndarray[Any, np.dtype[np.float64]],
    age: np.ndarray[Any, np.dtype[np.float64]],
    monetary_value: np.ndarray[Any, np.dtype[np.float64]],
    diagnostics: dict[str, Any],
    *,
    weights: np.ndarray[Any, np.dtype[np.float64]] | None = None,
    spend_rows: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None = None,
) -> tuple[BetaGeoModel | None, GammaGammaModel | None]:
    """BG/NBD on ``(x, t_x, age)`` (rows standing for ``weights`` customers each, default one)
    and Gamma-Gamma on ``(x, monetary_value)``, or on ``spend_rows`` = (frequency, monetary
    value) when given (the Spark path's repeat buyers, its summary being collapsed); each
    model's status goes into ``diagnostics`` (None: it could not be fitted)."""
    bgnbd: BetaGeoModel | None = None
    gammagamma: GammaGammaModel | None = None
    started = time.perf_counter()
    try:
        try:
            bgnbd = BetaGeoModel().fit(x, t_x, age, weights=weights)
        except FitNotConverged:
            bgnbd = BetaGeoModel(penalizer=FALLBACK_PENALIZER).fit(x, t_x, age, weights=weights)
        diagnostics["bgnbd"] = _fitted(bgnbd)
    except MemberwiseError as exc:
        diagnostics["bgnbd"] = _failure(exc)
    diagnostics["bgnbd"]["fit_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    try:
        frequency, spent = spend_rows if spend_rows is not None else (x, monetary_value)
        gammagamma, cap = fit_spend(frequency, spent)
        diagnostics["gammagamma"] = {**_fitted(gammagamma), "winsorized_at": cap}
    except MemberwiseError as exc:
        diagnostics["gammagamma"] = _failure(exc)
    diagnostics["gammagamma"]["fit_seconds"] = time.perf_counter() - started
    return bgnbd, gammagamma


def score_value(
    members: pa.Array,
    summary: pa.Table | None,
    first_day: np.ndarray[Any, np.dtype[np.float64]] | None,
    bgnbd: BetaGeoModel | None,
    gammagamma: GammaGammaModel | None,
    settings: PredictionSettings,
) -> pa.Table:
    """``clv_12m``, ``p_alive``, ``expected_purchases_90d``, ``expected_spend`` and
    ``repeat_purchases`` of each of ``members`` under fitted models (nulls where a model is
    missing). ``summary`` holds the RFM rows of those who bought; ``first_day`` their first
    purchase day's spend, aligned with it (needed only when Gamma-Gamma's mean is unbounded).

    Row by row: scoring a batch of members gives exactly what scoring all at once gives, so
    the Spark path calls it in the executors on one batch at a time.
    """
    n = len(members)
    clv = np.zeros(n)
    alive = np.ones(n)
    expected = np.zeros(n)
    spend = np.full(n, np.nan)
    repeat = np.zeros(n, dtype=np.int64)
    clv_known = np.ones(n, dtype=bool)
    alive_known = np.ones(n, dtype=bool)
    if summary is None:
        alive_known = clv_known = np.zeros(n, dtype=bool)
    else:
        x = summary["frequency"].to_numpy().astype(np.float64)
        t_x = summary["recency"].to_numpy()
        age = summary["T"].to_numpy()
        m = summary["monetary_value"].to_numpy()
        position = pc.index_in(summary["member_id"], value_set=members)
        found = pc.is_valid(position)
        rows = np.flatnonzero(found.to_numpy(zero_copy_only=False))
        where = position.filter(found).to_numpy(zero_copy_only=False).astype(np.int64)
        repeat[where] = x[rows].astype(np.int64)
        if bgnbd is not None:
            alive[where] = bgnbd.probability_alive(x[rows], t_x[rows], age[rows])
            expected[where] = bgnbd.conditional_expected_purchases(
                EXPECTED_DAYS, x[rows], t_x[rows], age[rows]
            )
            # Members who never bought: p_alive with no repeat purchase (see the module doc).
            others = np.ones(n, dtype=bool)
            others[where] = False
            if others.any():
                alive[others] = bgnbd.probability_alive(0.0, 0.0, 0.0)[0]
        else:
            alive_known = np.zeros(n, dtype=bool)
        if gammagamma is not None:
            once = first_day if first_day is not None else np.zeros(len(x))
            each = buyer_spend(gammagamma, x, m, once)
            spend[where] = each[rows]
            if bgnbd is not None:
                clv[where] = customer_lifetime_value(
                    bgnbd,
                    gammagamma,
                    x[rows],
                    t_x[rows],
                    age[rows],
                    m[rows],
                    months=CLV_MONTHS,
                    discount_rate=settings.discount_rate,
                    margin=settings.margin,
                    periods_per_month=PERIODS_PER_MONTH["D"],
                    spend=each[rows],
                )
                # A buyer the spend model cannot value (NaN) has no CLV.
                clv_known[where] = np.isfinite(clv[where])
        if gammagamma is None or bgnbd is None:
            clv_known = np.zeros(n, dtype=bool)
    return pa.table(
        {
            "member_id": members,
            "clv_12m": pa.array(np.maximum(clv, 0.0), mask=~clv_known),
            "p_alive": pa.array(np.clip(alive, 0.0, 1.0), mask=~alive_known),
            "expected_purchases_90d": pa.array(np.maximum(expected, 0.0), mask=~alive_known),
            "expected_spend": pa.array(spend, mask=~np.isfinite(spend)),
            "repeat_purchases": pa.array(repeat),
        }
    )


def value_predictions(
    members: pa.Array,
    purchases: pa.Table,
    *,
    as_of: datetime,
    timezone: str,
    settings: PredictionSettings,
) -> tuple[pa.Table, BetaGeoModel | None, GammaGammaModel | None, dict[str, Any]]:
    """BG/NBD + Gamma-Gamma on the purchases up to ``as_of``; one row per member of
    ``members``: ``clv_12m``, ``p_alive``, ``expected_purchases_90d``, ``expected_spend``
    and ``repeat_purchases`` (nulls where a model could not be fitted), plus diagnostics."""
    diagnostics: dict[str, Any] = {"unit": "days", "currency": "CNY"}
    bgnbd: BetaGeoModel | None = None
    gammagamma: GammaGammaModel | None = None

    summary = None
    if purchases.num_rows:
        summary = rfm_summary(
            purchases,
            customer_col="member_id",
            datetime_col="ts",
            value_col="amount",
            calibration_end=_local_date(as_of, timezone),
            freq="D",
            timezone=timezone,
        )
    diagnostics["customers"] = 0 if summary is None else summary.num_rows
    diagnostics["repeat_buyers"] = (
        0 if summary is None else int(pc.sum(pc.greater(summary["frequency"], 0)).as_py() or 0)
    )
    if summary is None:
        empty = {"status": "not_fitted", "code": "insufficient_data"}
        message = "There are no purchases up to as_of."
        diagnostics["bgnbd"] = {**empty, "message": message, "details": {"reason": "empty"}}
        diagnostics["gammagamma"] = dict(diagnostics["bgnbd"])
        table = score_value(members, None, None, None, None, settings)
    else:
        bgnbd, gammagamma = fit_value_models(
            summary["frequency"].to_numpy().astype(np.float64),
            summary["recency"].to_numpy(),
            summary["T"].to_numpy(),
            summary["monetary_value"].to_numpy(),
            diagnostics,
        )
        started = time.perf_counter()
        first_day = (
            _first_day_spend(purchases, summary["member_id"], timezone)
            if gammagamma is not None and not gammagamma.bounded
            else None
        )
        table = score_value(members, summary, first_day, bgnbd, gammagamma, settings)
        diagnostics["score_seconds"] = time.perf_counter() - started
    diagnostics["clv"] = {
        "months": CLV_MONTHS,
        "discount_rate": settings.discount_rate,
        "margin": settings.margin,
    }
    return table, bgnbd, gammagamma, diagnostics


def _first_day_spend(purchases: pa.Table, member_ids: pa.Array, timezone: str) -> Any:
    """Each summary member's spend on their first purchase day (display zone), in the order of
    ``member_ids``: a one-time buyer's whole spend."""
    days = purchase_days(purchases["ts"], "ts", timezone)
    table = pa.table(
        {"member_id": purchases["member_id"], "day": days, "amount": purchases["amount"]}
    )
    per_day = table.group_by(["member_id", "day"]).aggregate([("amount", "sum")])
    first = per_day.sort_by([("member_id", "ascending"), ("day", "ascending")])
    ids = first["member_id"]
    keep = np.ones(len(ids), dtype=bool)
    as_list = ids.to_numpy(zero_copy_only=False)
    keep[1:] = as_list[1:] != as_list[:-1]
    first = first.filter(pa.array(keep))
    position = pc.index_in(member_ids, value_set=first["member_id"])
    amounts = first["amount_sum"].to_numpy(zero_copy_only=False).astype(np.float64)
    found = position.to_numpy(zero_copy_only=False)
    out = np.zeros(len(member_ids))
    valid = ~np.isnan(found.astype(np.float64))
    out[valid] = amounts[found[valid].astype(np.int64)]
    return out


def churn_labels(
    snapshot_members: pa.Array, purchases: pa.Table, *, after: datetime, until: datetime
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """1 for each snapshot member with no purchase in ``(after, until]``, else 0."""
    ts = purchases["ts"]
    inside = pc.and_(
        pc.greater(ts, pa.scalar(after.astimezone(UTC), ts.type)),
        pc.less_equal(ts, pa.scalar(until.astimezone(UTC), ts.type)),
    )
    buyers = pc.unique(purchases.filter(inside)["member_id"])
    bought = pc.is_in(snapshot_members, value_set=buyers).to_numpy(zero_copy_only=False)
    return np.asarray(~bought, dtype=np.int64)


def predict_members(
    profiles: pa.Table,
    purchases: pa.Table,
    snapshot: pa.Table | None,
    *,
    as_of: datetime,
    timezone: str,
    settings: PredictionSettings,
    seed: int = SEED,
) -> Predictions:
    """Fit every model and score every member of ``profiles`` (pure: tables in, tables out).

    Parameters
    ----------
    profiles
        The members' current profiles (as of ``as_of``).
    purchases
        Purchase events up to ``as_of``: ``member_id``, ``ts`` (UTC), ``amount`` (CNY).
    snapshot
        Profiles as of ``as_of - settings.churn_horizon_days`` for the churn model's time
        split, or None when the lake does not reach back that far.
    """
    members = profiles["member_id"].combine_chunks()
    value, bgnbd, gammagamma, diagnostics = value_predictions(
        members, purchases, as_of=as_of, timezone=timezone, settings=settings
    )
    horizon = settings.churn_horizon_days
    cutoff = as_of - timedelta(days=horizon)
    churn: ChurnModel | None = None
    risk = pa.nulls(len(members), pa.float64())
    churn_info: dict[str, Any] = {
        "horizon_days": horizon,
        "features_as_of": cutoff.isoformat(),
        "labels": f"no purchase in ({cutoff.isoformat()}, {as_of.isoformat()}]",
    }
    try:
        if snapshot is None or snapshot.num_rows == 0:
            from memberwise.predict.fitting import InsufficientData

            raise InsufficientData(
                f"No member has a profile as of {cutoff.isoformat()} (as_of minus the "
                f"{horizon}-day churn horizon): the lake does not reach back that far.",
                reason="too_few_members",
            )
        labels = churn_labels(
            snapshot["member_id"].combine_chunks(), purchases, after=cutoff, until=as_of
        )
        churn = fit_churn(snapshot, labels, horizon_days=horizon, seed=seed)
        started = time.perf_counter()
        risk = pa.array(churn.predict(profiles))
        churn_info.update(status="fitted", **churn.metrics)
        churn_info["score_seconds"] = time.perf_counter() - started
    except MemberwiseError as exc:
        churn_info.update(_failure(exc))
    diagnostics["churn"] = churn_info

    habits = next_purchase(purchases, timezone=timezone)
    times = best_times(profiles)
    table = value.append_column("churn_risk", risk)
    joined = table.join(habits, "member_id", join_type="left outer").join(
        times, "member_id", join_type="left outer"
    )
    joined = joined.sort_by([("member_id", "ascending")])
    joined = joined.set_column(
        joined.schema.get_field_index("purchase_days"),
        "purchase_days",
        pc.fill_null(joined["purchase_days"], 0),
    )
    table = joined.select(PREDICTIONS_SCHEMA.names).cast(PREDICTIONS_SCHEMA)
    diagnostics["members"] = table.num_rows
    diagnostics["re_buyers"] = int(pc.sum(pc.is_valid(table["next_purchase_date"])).as_py() or 0)
    return Predictions(
        table=table,
        bgnbd=bgnbd,
        gammagamma=gammagamma,
        churn=churn,
        diagnostics=_finite(diagnostics),
    )


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has neither)."""
    if isinstance(value, float):  # np.float64 too: a subclass of float orjson refuses
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def with_predictions(profiles: pa.Table, predictions: pa.Table) -> pa.Table:
    """``profiles`` with its predicted fields replaced by ``predictions``' values (matched
    by member_id; members without a prediction keep null)."""
    picked = predictions.select(["member_id", *PREDICTED_FIELDS])
    base = profiles.drop_columns([n for n in PREDICTED_FIELDS if n in profiles.column_names])
    order = pc.index_in(base["member_id"], value_set=picked["member_id"])
    columns = {name: picked[name].combine_chunks().take(order) for name in PREDICTED_FIELDS}
    names = profiles.column_names
    out = base
    for name in PREDICTED_FIELDS:
        out = out.append_column(pa.field(name, pa.float64()), columns[name])
    return out.select(names)


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


def _snapshot_table(ctx: BuildContext, cutoff: datetime, work: Path) -> ir.Table:
    """Profiles as of ``cutoff``, computed with the profiles stage's own expressions and
    written under ``work`` (the caller removes it)."""
    from memberwise.members import service as members_service
    from memberwise.profiles.features import member_profiles

    with ctx.runtime.engine.connect() as conn:
        attributes = members_service.analytics_attributes(conn)
    work.mkdir(exist_ok=True)

    def materialize(name: str, table: ir.Table) -> ir.Table:
        path = work / f"{name}.parquet"
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
    path = work / "snapshot.parquet"
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
    work = ctx.path("_work_predictions")
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
            work=str(work / "spark"),
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
        tmp = ctx.path(".profiles-predicted.parquet")
        write_parquet(ctx.con, filled, tmp)
        # (A profiles file linked from an earlier build keeps its contents: only the link goes.)
        replace_directory(tmp, ctx.path("profiles.parquet"))
        timings["write_seconds"] = time.perf_counter() - started
        ctx.progress("predictions", 4, steps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _record(ctx, _finite(diagnostics), timings)
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
