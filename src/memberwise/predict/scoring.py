"""Scoring every member (pure: tables in, tables out): the value models, the churn model on a
time split and the habits, joined into one row a member (:data:`PREDICTIONS_SCHEMA`), and the
profiles with their predicted fields filled in.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from memberwise.kit.errors import MemberwiseError
from memberwise.predict.bgnbd import BetaGeoModel
from memberwise.predict.churn import ChurnModel, fit_churn
from memberwise.predict.gammagamma import GammaGammaModel
from memberwise.predict.habits import best_times, next_purchase
from memberwise.predict.value_models import not_fitted, value_predictions
from memberwise.profiles.fields import PREDICTED_FIELDS
from memberwise.program.predictions import PredictionSettings

SEED = 0

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


@dataclass
class Predictions:
    """What :func:`predict_members` made: the table, the fitted models and the diagnostics."""

    table: pa.Table
    bgnbd: BetaGeoModel | None = None
    gammagamma: GammaGammaModel | None = None
    churn: ChurnModel | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)


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
        churn_info.update(not_fitted(exc))
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
        diagnostics=finite(diagnostics),
    )


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has neither)."""
    if isinstance(value, float):  # np.float64 too: a subclass of float orjson refuses
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, np.generic):
        return finite(value.item())
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
