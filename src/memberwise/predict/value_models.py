"""The value models of the ``predictions`` stage: BG/NBD and Gamma-Gamma fitted on the purchase
history in days (with the fallbacks that keep a build going on odd data), and every member's
``clv_12m``, ``p_alive`` and expected purchases and spend from them (pure: tables in, tables out).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from memberwise.kit.errors import MemberwiseError
from memberwise.predict.bgnbd import BetaGeoModel
from memberwise.predict.clv import customer_lifetime_value
from memberwise.predict.fitting import PERIODS_PER_MONTH, FitNotConverged, UnboundedSpend
from memberwise.predict.gammagamma import GammaGammaModel
from memberwise.predict.rfm import purchase_days, rfm_summary
from memberwise.program.predictions import PredictionSettings

#: Horizon of ``expected_purchases_90d``, in days.
EXPECTED_DAYS = 90
#: Months of ``clv_12m``.
CLV_MONTHS = 12
#: Tried when the unpenalized BG/NBD fit does not converge (a boundary maximum on odd data).
FALLBACK_PENALIZER = 0.01
#: Quantiles of repeat buyers' average spend tried as caps when Gamma-Gamma's fit is unbounded.
WINSORIZE_QUANTILES = (0.99, 0.95, 0.9)


def not_fitted(exc: MemberwiseError) -> dict[str, Any]:
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


def purchase_summary(purchases: pa.Table, *, as_of: datetime, timezone: str) -> pa.Table:
    """The RFM summary the value models take, in purchase days of the program's time zone up
    to ``as_of`` (one row per buyer; both engines' paths use it)."""
    return rfm_summary(
        purchases,
        customer_col="member_id",
        datetime_col="ts",
        value_col="amount",
        calibration_end=as_of.astimezone(ZoneInfo(timezone)).date(),
        freq="D",
        timezone=timezone,
    )


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
        diagnostics["bgnbd"] = not_fitted(exc)
    diagnostics["bgnbd"]["fit_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    try:
        frequency, spent = spend_rows if spend_rows is not None else (x, monetary_value)
        gammagamma, cap = fit_spend(frequency, spent)
        diagnostics["gammagamma"] = {**_fitted(gammagamma), "winsorized_at": cap}
    except MemberwiseError as exc:
        diagnostics["gammagamma"] = not_fitted(exc)
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
        summary = purchase_summary(purchases, as_of=as_of, timezone=timezone)
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
            first_day_spend(purchases, summary["member_id"], timezone)
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


def first_day_spend(purchases: pa.Table, member_ids: pa.Array, timezone: str) -> Any:
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
