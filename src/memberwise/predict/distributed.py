"""The ``predictions`` stage on a Spark cluster: the driver fits, the executors score.

When the build's engine is Spark, no member-sized table reaches the driver:

- **RFM summary and habits** per member are computed in the executors: the purchases are
  grouped into buckets of members (``groupBy(bucket).applyInPandas``) and each bucket runs the
  same pure functions as the embedded path (:func:`~.rfm.rfm_summary`,
  :func:`~.habits.next_purchase`), so every member's numbers are the same.
- **BG/NBD** is fitted on the driver from the summary collapsed to its distinct
  ``(x, t_x, T)`` rows with their counts. In days that table is small by construction: x, t_x
  and T are whole days below the lake's age, so it has at most a few hundred thousand rows
  whatever the number of members (13,000 rows for 1 M members over 120 days), and the fit
  is the same as on every row (the model collapses its input the same way).
- **Gamma-Gamma** needs each repeat buyer's average spend, a continuous value that does not
  collapse, so it is fitted on at most :data:`SPEND_SAMPLE` repeat buyers drawn by a hash of
  the member id. The fit's standard errors shrink as 1/sqrt(n): 200,000 repeat buyers give
  errors about fifteen times smaller than the 946 of the CDNOW sample the model was published
  on; below that size every repeat buyer is used, as
  the embedded path does.
- **Churn** (LightGBM, which has no distributed form here) is trained on at most
  :data:`CHURN_SAMPLE` members of the snapshot, drawn by a hash of the member id; see
  ``docs/cluster.md`` for the learning curve that says why that is enough. Below that size
  every member is used, as the embedded path does.
- **Scoring** (p_alive, expected purchases, CLV, churn risk, best hour) runs in the executors
  with ``mapInPandas``, batch by batch, through the same row-wise functions
  (:func:`~.value_models.score_value`, :meth:`~.churn.ChurnModel.predict`), and the result is
  written by Spark. Population-wide values (the most common peak hour and weekday) are aggregates.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import ibis.expr.types as ir
import numpy as np
import pyarrow as pa

from memberwise.kit import sparkframes
from memberwise.kit.errors import MemberwiseError
from memberwise.kit.warehouse import spark_read, spark_write, storage_of
from memberwise.predict.bgnbd import BetaGeoModel
from memberwise.predict.churn import FEATURES, ChurnModel, fit_churn
from memberwise.predict.fitting import InsufficientData
from memberwise.predict.gammagamma import GammaGammaModel
from memberwise.predict.habits import next_purchase
from memberwise.program.predictions import PredictionSettings

#: A pandas DataFrame (pandas ships no type stubs here).
Frame = Any

#: At most this many repeat buyers fit Gamma-Gamma (see the module doc).
SPEND_SAMPLE = 200_000
#: At most this many snapshot members train the churn model (see docs/cluster.md).
CHURN_SAMPLE = 200_000
#: About this many purchases go to one bucket of the summary step (one pandas frame).
PURCHASES_PER_BUCKET = 2_000_000

SUMMARY_DDL = (
    "member_id string, frequency double, recency double, T double, monetary_value double, "
    "first_day double, purchase_days long, purchase_interval_days double, next_day int"
)
SCORES_DDL = (
    "member_id string, clv_12m double, p_alive double, churn_risk double, "
    "expected_purchases_90d double, expected_spend double, repeat_purchases long, "
    "purchase_days long, purchase_interval_days double, next_day int, best_hour int, "
    "best_weekday int"
)


def summarize_bucket(frame: Frame, *, as_of: datetime, timezone: str) -> Frame:
    """One bucket of members' purchases (``member_id``, ``ts_us``, ``amount``) -> their RFM
    summary, first purchase day's spend and habits (the executors run this)."""
    from memberwise.predict.value_models import first_day_spend, purchase_summary

    purchases = pa.table(
        {
            "member_id": pa.array(frame["member_id"], pa.string()),
            "ts": pa.array(frame["ts_us"].to_numpy(np.int64), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "amount": pa.array(frame["amount"].to_numpy(np.float64), pa.float64()),
        }
    )
    summary = purchase_summary(purchases, as_of=as_of, timezone=timezone)
    first = first_day_spend(purchases, summary["member_id"], timezone)
    habits = next_purchase(purchases, timezone=timezone)
    out = pa.table(
        {
            "member_id": summary["member_id"],
            "frequency": summary["frequency"].cast(pa.float64()),
            "recency": summary["recency"],
            "T": summary["T"],
            "monetary_value": summary["monetary_value"],
            "first_day": pa.array(first, pa.float64()),
        }
    ).join(habits, "member_id", join_type="left outer")
    next_day = out["next_purchase_date"].cast(pa.int32())
    out = out.drop_columns(["next_purchase_date"]).append_column("next_day", next_day)
    return out.to_pandas()


def score_batches(
    batches: Iterator[Frame],
    *,
    bgnbd: BetaGeoModel | None,
    gammagamma: GammaGammaModel | None,
    churn: ChurnModel | None,
    settings: PredictionSettings,
    modes: tuple[int, int],
) -> Iterator[Frame]:
    """Profiles joined with their summary (null for non-buyers), batch by batch -> the
    prediction columns (the executors run this through ``mapInPandas``)."""
    from memberwise.predict.value_models import score_value

    for frame in batches:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        members = table["member_id"].combine_chunks()
        bought = table.filter(table["frequency"].is_valid())
        summary = bought.select(["member_id", "frequency", "recency", "T", "monetary_value"])
        first = bought["first_day"].to_numpy()
        value = score_value(members, summary, first, bgnbd, gammagamma, settings)
        risk = churn.predict(table) if churn is not None else np.full(table.num_rows, np.nan)
        hour = frame["peak_hour"].fillna(modes[0]).astype("int32")
        weekday = frame["peak_weekday"].fillna(modes[1]).astype("int32")
        out = value.to_pandas()
        # NaN (no churn model) becomes null on the way to Arrow.
        out["churn_risk"] = risk
        out["purchase_days"] = frame["purchase_days"].fillna(0).astype("int64").to_numpy()
        out["purchase_interval_days"] = frame["purchase_interval_days"].to_numpy()
        out["next_day"] = frame["next_day"].astype("Int32").array
        out["best_hour"] = hour.to_numpy()
        out["best_weekday"] = weekday.to_numpy()
        yield out[
            [
                "member_id",
                "clv_12m",
                "p_alive",
                "churn_risk",
                "expected_purchases_90d",
                "expected_spend",
                "repeat_purchases",
                "purchase_days",
                "purchase_interval_days",
                "next_day",
                "best_hour",
                "best_weekday",
            ]
        ]


def _mode(frame: Any, column: str, default: int) -> int:
    """The most common non-null value of ``column`` (ties: the smallest), as
    :func:`~.habits.best_times` picks it."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    top = (
        frame.where(F.col(column).isNotNull())
        .groupBy(column)
        .count()
        .orderBy(F.col("count").desc(), F.col(column).asc())
        .limit(1)
        .collect()
    )
    return int(top[0][0]) if top else default


def _sample(frame: Any, total: int, size: int, seed: int) -> Any:
    """At most about ``size`` rows of ``frame``, chosen by a seeded hash of member_id (the
    same members every run), ordered by member_id; every row when ``total <= size``."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    if total > size:
        share = size / total
        bucket = F.pmod(F.xxhash64(F.col("member_id"), F.lit(seed)), F.lit(1_000_000))
        frame = frame.where(bucket < F.lit(int(share * 1_000_000)))
    return frame.orderBy("member_id")


def predict_on_spark(
    con: Any,
    profiles: ir.Table,
    purchases: ir.Table,
    snapshot: ir.Table | None,
    *,
    as_of: datetime,
    timezone: str,
    settings: PredictionSettings,
    seed: int,
    work: str,
) -> tuple[ir.Table, dict[str, Any], dict[str, Any]]:
    """Fit on the driver, score in the executors: (the predictions as an Ibis table of
    ``con``, columns of :data:`~.scoring.PREDICTIONS_SCHEMA`; the fitted models by name; the
    diagnostics). ``work`` is a scratch directory the summary is written to."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    from memberwise.predict.value_models import CLV_MONTHS, fit_value_models, not_fitted

    spark = sparkframes.session(con)
    diagnostics: dict[str, Any] = {"unit": "days", "currency": "CNY"}
    models: dict[str, Any] = {}
    timings: dict[str, float] = {}

    started = time.perf_counter()
    bought = sparkframes.to_spark(con, purchases).select(
        "member_id", F.unix_micros(F.col("ts")).alias("ts_us"), "amount"
    )
    count = bought.count()
    least = int(spark.conf.get("spark.sql.shuffle.partitions"))
    buckets = sparkframes.partitions_for(count, per_partition=PURCHASES_PER_BUCKET, least=least)
    summary_path = f"{work}/summary"
    if count:
        grouped = bought.withColumn(
            "bucket", F.pmod(F.xxhash64(F.col("member_id")), F.lit(buckets))
        ).groupBy("bucket")

        def summarize(frame: Frame) -> Frame:
            return summarize_bucket(frame.drop(columns=["bucket"]), as_of=as_of, timezone=timezone)

        # Spark's writer, or the executors' fsspec writer on an object store (kit/sparkstore).
        storage = storage_of(con)
        spark_write(grouped.applyInPandas(summarize, SUMMARY_DDL), summary_path, storage)
        summary = spark_read(spark, storage.parquet_files(summary_path), storage)
    else:
        summary = spark.createDataFrame([], SUMMARY_DDL)
    timings["summary_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    customers = summary.count()
    repeat = summary.where(F.col("frequency") > 0)
    repeaters = repeat.count()
    diagnostics["customers"] = customers
    diagnostics["repeat_buyers"] = repeaters
    bgnbd: BetaGeoModel | None = None
    gammagamma: GammaGammaModel | None = None
    if customers == 0:
        empty = {"status": "not_fitted", "code": "insufficient_data"}
        message = "There are no purchases up to as_of."
        diagnostics["bgnbd"] = {**empty, "message": message, "details": {"reason": "empty"}}
        diagnostics["gammagamma"] = dict(diagnostics["bgnbd"])
    else:
        # Ordered as the rows first appear in member_id order: the model's own collapsing
        # keeps that order, and on a flat likelihood the optimizer's path depends on it, so
        # this gives the very fit of the embedded path (whose summary is in member_id order).
        collapsed = (
            summary.groupBy("frequency", "recency", "T")
            .agg(F.count(F.lit(1)).alias("count"), F.min("member_id").alias("first"))
            .orderBy("first")
            .toArrow()
        )
        spend = _sample(repeat, repeaters, SPEND_SAMPLE, seed).select("frequency", "monetary_value")
        spend_rows = spend.toArrow()
        bgnbd, gammagamma = fit_value_models(
            collapsed["frequency"].to_numpy(),
            collapsed["recency"].to_numpy(),
            collapsed["T"].to_numpy(),
            np.zeros(collapsed.num_rows),
            diagnostics,
            weights=collapsed["count"].to_numpy().astype(np.float64),
            spend_rows=(
                spend_rows["frequency"].to_numpy(),
                spend_rows["monetary_value"].to_numpy(),
            ),
        )
        diagnostics["bgnbd"]["collapsed_rows"] = collapsed.num_rows
        diagnostics["gammagamma"]["sample"] = {"repeat_buyers": spend_rows.num_rows}
    diagnostics["clv"] = {
        "months": CLV_MONTHS,
        "discount_rate": settings.discount_rate,
        "margin": settings.margin,
    }
    models.update(bgnbd=bgnbd, gammagamma=gammagamma)
    timings["value_fit_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    horizon = settings.churn_horizon_days
    cutoff = as_of - timedelta(days=horizon)
    churn: ChurnModel | None = None
    churn_info: dict[str, Any] = {
        "horizon_days": horizon,
        "features_as_of": cutoff.isoformat(),
        "labels": f"no purchase in ({cutoff.isoformat()}, {as_of.isoformat()}]",
    }
    try:
        snap = sparkframes.to_spark(con, snapshot) if snapshot is not None else None
        members = snap.count() if snap is not None else 0
        if snap is None or members == 0:
            raise InsufficientData(
                f"No member has a profile as of {cutoff.isoformat()} (as_of minus the "
                f"{horizon}-day churn horizon): the lake does not reach back that far.",
                reason="too_few_members",
            )
        after = F.lit(cutoff.astimezone(UTC).replace(tzinfo=None)).cast("timestamp")
        until = F.lit(as_of.astimezone(UTC).replace(tzinfo=None)).cast("timestamp")
        raw = sparkframes.to_spark(con, purchases)
        buyers = (
            raw.where((F.col("ts") > after) & (F.col("ts") <= until))
            .select("member_id")
            .distinct()
            .withColumn("bought", F.lit(1))
        )
        chosen = _sample(snap, members, CHURN_SAMPLE, seed)
        labelled = chosen.join(buyers, "member_id", "left").orderBy("member_id")
        table = labelled.toArrow()
        labels = np.where(table["bought"].is_null().to_numpy(zero_copy_only=False), 1, 0)
        churn = fit_churn(table.drop_columns(["bought"]), labels, horizon_days=horizon, seed=seed)
        churn_info.update(status="fitted", **churn.metrics)
        churn_info["sample"] = {"members": table.num_rows, "of": members}
    except MemberwiseError as exc:
        churn_info.update(not_fitted(exc))
    diagnostics["churn"] = churn_info
    models["churn"] = churn
    timings["churn_fit_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    current = sparkframes.to_spark(con, profiles)
    modes = (_mode(current, "peak_hour", 0), _mode(current, "peak_weekday", 1))
    wanted = ["member_id", "peak_hour", "peak_weekday"]
    wanted += [f for f in FEATURES if f in current.columns and f not in wanted]
    joined = current.select(*wanted).join(summary, "member_id", "left")

    def score(batches: Iterator[Frame]) -> Iterator[Frame]:
        return score_batches(
            batches,
            bgnbd=bgnbd,
            gammagamma=gammagamma,
            churn=churn,
            settings=settings,
            modes=modes,
        )

    scored = joined.mapInPandas(score, SCORES_DDL).select(
        "member_id",
        "clv_12m",
        "p_alive",
        "churn_risk",
        "expected_purchases_90d",
        "expected_spend",
        "repeat_purchases",
        "purchase_days",
        "purchase_interval_days",
        F.date_from_unix_date(F.col("next_day")).alias("next_purchase_date"),
        "best_hour",
        "best_weekday",
    )
    table_expr = sparkframes.from_spark(con, scored)
    timings["score_plan_seconds"] = time.perf_counter() - started
    diagnostics["timings_spark"] = timings
    return table_expr, models, diagnostics
