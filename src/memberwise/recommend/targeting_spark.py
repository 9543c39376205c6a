"""Coupon targeting when the engine is Spark: the executors score every member, the driver
chooses among the few who can be chosen.

The embedded path (:func:`memberwise.recommend.targeting.target`) reads the profiles' targeting
columns into the driver. On Spark:

- **The executors score** (``mapInArrow``): each batch of profiles, joined with the build's
  segments and tiers when a template is restricted to them, goes through the embedded path's
  own functions (:func:`~.targeting.propensities`, :func:`~.targeting.coupon_values`,
  :func:`~.targeting.admitted`, :func:`~.targeting.uplift_of`,
  :func:`~.targeting.eligible_rows`): one row per member and campaign they are eligible for,
  written to the stage's scratch by Spark.
- **Window functions keep the few.** The greedy choice takes members by uplift per fen (ties:
  larger uplift, then member id) until the campaign's count or budget is spent, and a member
  taken by an earlier campaign is skipped. Per campaign, ``row_number`` ranks the members in
  that order and a running sum of the coupons' values finds how many of the best its budget
  pays for: with coupons of one value that (or its count) is all it can choose, and the ones
  it chooses are among that many best rows plus the earlier campaigns' bounds. Only those rows
  come to the driver.
- **The driver chooses** with the embedded :func:`~.targeting.select_within_budget`, campaign
  by campaign in program order. When a budget skips a dear coupon and the kept rows run out
  before the budget does (coupons of different values), the campaign's next rows whose coupon
  what is left of the budget still pays for are fetched (as many again as it has), until the
  choice is provably the one over all members: the count is reached, every row the budget
  could still pay for was seen, or what is left is below the campaign's cheapest coupon.

Small results (the per-campaign counts, the kept rows, the peak hours' counts) are written by
the executors to the scratch folder and read from there: nothing is collected.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ibis
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from memberwise.kit import sparkframes
from memberwise.kit.storage import join
from memberwise.kit.warehouse import read_parquet, spark_write, storage_of
from memberwise.program.ledger import CouponTemplate
from memberwise.program.recommendations import CouponCampaign
from memberwise.recommend.targeting import (
    PROFILE_FIELDS,
    SUGGESTION_SCHEMA,
    admitted,
    coupon_values,
    eligible_rows,
    field_values,
    limits_of,
    propensities,
    reason_of,
    select_within_budget,
    template_for,
    top_categories,
    uplift_of,
)

if TYPE_CHECKING:
    from memberwise.builds import BuildContext

#: The scored rows the executors write: one per member and campaign they may get.
SCORED_DDL = (
    "campaign int, member_id string, value bigint, uplift double, ratio double, "
    "p_purchase double, interest double, sensitivity double, peak_hour double"
)
#: The fewest rows a further fetch for one campaign asks for.
MIN_FETCH = 64
#: The hour used when no member has a peak hour (as the embedded :func:`.best_hours`).
DEFAULT_HOUR = 20


@dataclass(frozen=True)
class Plan:
    """A campaign to target: its position in the program and its template."""

    index: int
    campaign: CouponCampaign
    template: CouponTemplate


def score_batch(batch: pa.Table, plans: Sequence[Plan]) -> pa.Table:
    """One batch of profiles (with ``_tier``, ``_segment``, ``_persona`` when joined) as
    :data:`SCORED_DDL` rows: each member and campaign whose restrictions, uplift floor and
    coupon value let them in, before one-coupon-per-member is applied."""
    ids = [str(m) for m in batch.column("member_id").to_pylist()]
    parts = propensities(batch)
    aov = field_values(batch, "aov_365d", 0.0)
    top = top_categories(batch)
    peak = field_values(batch, "peak_hour", np.nan)
    names = batch.column_names
    tiers = (
        dict(zip(ids, batch.column("_tier").to_pylist(), strict=True)) if "_tier" in names else {}
    )
    groups: dict[str, set[str]] = {}
    if "_segment" in names:
        personas = (
            batch.column("_persona").to_pylist() if "_persona" in names else [None] * len(ids)
        )
        for m, segment, persona in zip(
            ids, batch.column("_segment").to_pylist(), personas, strict=True
        ):
            found = {segment} if segment is not None else set()
            if persona is not None:
                found.add(f"persona-{persona}")
            groups[m] = found
    parts_out = []
    for plan in plans:
        allowed = admitted(plan.template, ids, tiers.get, lambda m: groups.get(m, set()))
        value = coupon_values(plan.template, aov)
        uplift = np.where(allowed, uplift_of(parts, plan.template, top, aov), 0.0)
        rows = eligible_rows(uplift, value, plan.campaign.min_uplift)
        parts_out.append(
            pa.table(
                {
                    "campaign": pa.array(np.full(len(rows), plan.index), pa.int32()),
                    "member_id": pa.array([ids[int(i)] for i in rows], pa.string()),
                    "value": pa.array(value[rows], pa.int64()),
                    "uplift": pa.array(uplift[rows], pa.float64()),
                    "ratio": pa.array(uplift[rows] / value[rows], pa.float64()),
                    "p_purchase": pa.array(parts.p_purchase[rows], pa.float64()),
                    "interest": pa.array(parts.interest[rows], pa.float64()),
                    "sensitivity": pa.array(parts.sensitivity[rows], pa.float64()),
                    "peak_hour": pa.array(peak[rows], pa.float64()),
                }
            )
        )
    return pa.concat_tables(parts_out)


def suggest_on_spark(ctx: BuildContext) -> tuple[pa.Table, list[str]]:
    """The build's coupon suggestions and targeting problems on Spark (the stage's call)."""
    scratch = ctx.scratch("targeting-spark")
    try:
        return target_on_spark(
            ctx.con,
            ctx.directory,
            scratch,
            ctx.program.recommendations.campaigns,
            ctx.program.coupons,
        )
    finally:
        ctx.drop_scratch(scratch)


def target_on_spark(
    con: ibis.BaseBackend,
    directory: Path,
    scratch: Path | str,
    campaigns: Sequence[CouponCampaign],
    templates: Mapping[str, CouponTemplate],
) -> tuple[pa.Table, list[str]]:
    """What :func:`.targeting.target` gives for the build in ``directory`` (its
    ``profiles.parquet``, ``segments.parquet``, ``tiers.parquet``), with the members scored
    in the executors and only the candidates the greedy choice can reach on the driver."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    has_tiers = (directory / "tiers.parquet").exists()
    plans: list[Plan] = []
    problems: list[str] = []
    for index, campaign in enumerate(campaigns):
        template, problem = template_for(campaign, templates, has_tiers=has_tiers)
        if template is None:
            problems.append(str(problem))
        else:
            plans.append(Plan(index, campaign, template))
    if not plans:
        return SUGGESTION_SCHEMA.empty_table(), problems

    storage = storage_of(con)

    def small(frame: Any, name: str) -> pa.Table:
        where = join(str(scratch), name)
        spark_write(frame, where, storage)
        return storage.read_table(where)

    profiles = sparkframes.to_spark(con, read_parquet(con, [directory / "profiles.parquet"]))
    frame = profiles.select(*[c for c in PROFILE_FIELDS if c in profiles.columns])
    if any(p.template.segments for p in plans) and (directory / "segments.parquet").exists():
        segments = sparkframes.to_spark(con, read_parquet(con, [directory / "segments.parquet"]))
        picked = [F.col("member_id").alias("_key"), F.col("segment").alias("_segment")]
        if "persona" in segments.columns:
            picked.append(F.col("persona").alias("_persona"))
        frame = _joined(frame, segments.select(*picked))
    if any(p.template.tiers for p in plans):
        tiers = sparkframes.to_spark(con, read_parquet(con, [directory / "tiers.parquet"]))
        frame = _joined(
            frame, tiers.select(F.col("member_id").alias("_key"), F.col("tier").alias("_tier"))
        )

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows:
                yield from score_batch(pa.Table.from_batches([batch]), plans).to_batches()

    scored_at = join(str(scratch), "scored")
    spark_write(frame.mapInArrow(score, SCORED_DDL), scored_at, storage)
    scored = sparkframes.to_spark(con, read_parquet(con, [scored_at]))
    # The greedy's order within each campaign.
    order = Window.partitionBy("campaign").orderBy(
        F.col("ratio").desc(), F.col("uplift").desc(), F.col("member_id").asc()
    )
    ranked = scored.withColumn("_rank", F.row_number().over(order))
    # Per campaign: its eligible rows, its cheapest coupon, and how many of its best rows its
    # budget pays for in that order (what the greedy takes before it starts skipping).
    limits = {plan.index: limits_of(plan.campaign, plan.template) for plan in plans}
    budget_of: Any = F.lit(None)
    for index, (_, money) in limits.items():
        if money is not None:
            budget_of = F.when(F.col("campaign") == index, F.lit(money)).otherwise(budget_of)
    so_far = (
        Window.partitionBy("campaign")
        .orderBy("_rank")
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    affords = budget_of.isNull() | (F.col("_paid") <= budget_of)
    stats = small(
        ranked.withColumn("_paid", F.sum("value").over(so_far))
        .groupBy("campaign")
        .agg(
            F.count("*").alias("eligible"),
            F.min("value").alias("cheapest"),
            F.sum(F.when(affords, 1).otherwise(0)).alias("affordable"),
        ),
        "stats",
    ).to_pylist()
    eligible = {int(r["campaign"]): int(r["eligible"]) for r in stats}
    cheapest = {int(r["campaign"]): int(r["cheapest"]) for r in stats}
    affordable = {int(r["campaign"]): int(r["affordable"]) for r in stats}

    # How many of each campaign's best rows to fetch first: what it takes before its budget
    # or count stops it, plus every member the earlier campaigns may take. With coupons of
    # one value that is all it can choose; otherwise the loop below fetches what else may be.
    keep: dict[int, int] = {}
    taken_at_most = 0
    for plan in plans:
        count, _ = limits[plan.index]
        n = eligible.get(plan.index, 0)
        bound = min(n if count is None else count, affordable.get(plan.index, 0) + 1)
        keep[plan.index] = min(n, bound + taken_at_most)
        taken_at_most += bound

    def best(limits: dict[int, int]) -> dict[int, pa.Table]:
        wanted = {k: v for k, v in limits.items() if v > 0}
        if not wanted:
            return {}
        bound: Any = F.lit(None)
        for index, limit in wanted.items():
            bound = F.when(F.col("campaign") == index, F.lit(limit)).otherwise(bound)
        rows = small(ranked.filter(F.col("_rank") <= bound), "best")
        return {index: rows.filter(pc.equal(rows.column("campaign"), index)) for index in wanted}

    def following(index: int, after: int, most: int | None, count: int, name: str) -> pa.Table:
        """The campaign's next ``count`` rows after rank ``after`` whose coupon is worth at
        most ``most`` (what is left of the budget: a dearer one would be skipped)."""
        rest = ranked.filter((F.col("campaign") == index) & (F.col("_rank") > after))
        if most is not None:
            rest = rest.filter(F.col("value") <= most)
        step = Window.partitionBy("campaign").orderBy("_rank")
        rest = rest.withColumn("_next", F.row_number().over(step))
        return small(rest.filter(F.col("_next") <= count).drop("_next"), name)

    candidates = best(keep)
    out: dict[str, list[object]] = {name: [] for name in SUGGESTION_SCHEMA.names}
    chosen_peaks: list[float] = []
    taken: set[str] = set()
    fetches = 0
    for plan in plans:
        count, budget = limits[plan.index]
        rows = candidates.get(plan.index)
        if rows is None:
            continue
        # Every row that could still be chosen is in ``rows`` once this is true.
        exhausted = rows.num_rows >= eligible[plan.index]
        while True:
            picks, spent = _choose(rows, taken, plan.campaign.min_uplift, count, budget)
            left = None if budget is None else budget - spent
            if (
                exhausted
                or (count is not None and len(picks) >= count)
                or (left is not None and left < cheapest[plan.index])
            ):
                break
            fetches += 1
            asked = max(rows.num_rows, MIN_FETCH)
            last = int(pc.max(rows.column("_rank")).as_py())
            more = following(plan.index, last, left, asked, f"more-{fetches}")
            exhausted = more.num_rows < asked
            rows = pa.concat_tables([rows, more])
        records = rows.to_pylist()
        for i in picks:
            record = records[i]
            taken.add(record["member_id"])
            out["member_id"].append(record["member_id"])
            out["campaign"].append(plan.campaign.name)
            out["template"].append(plan.campaign.template)
            out["value"].append(int(record["value"]))
            out["uplift"].append(round(float(record["uplift"]), 6))
            out["p_purchase"].append(round(float(record["p_purchase"]), 6))
            chosen_peaks.append(float(record["peak_hour"]))
            out["reason"].append(
                reason_of(
                    float(record["p_purchase"]),
                    float(record["interest"]),
                    float(record["sensitivity"]),
                )
            )
    common = DEFAULT_HOUR
    if any(math.isnan(p) for p in chosen_peaks):
        common = _common_hour(profiles, small)
    out["best_hour"] = [common if math.isnan(p) else int(p) for p in chosen_peaks]
    return pa.table(out, schema=SUGGESTION_SCHEMA), problems


def _joined(frame: Any, right: Any) -> Any:
    """``frame`` left-joined with ``right`` on member id (``right``'s key is ``_key``)."""
    return frame.join(right, frame["member_id"] == right["_key"], "left").drop("_key")


def _choose(
    rows: pa.Table, taken: set[str], min_uplift: float, count: int | None, budget: int | None
) -> tuple[list[int], int]:
    """The embedded greedy choice over a campaign's fetched rows (members already taken are
    not eligible): the chosen row indexes and the money they take."""
    ids = [str(m) for m in rows.column("member_id").to_pylist()]
    value = np.asarray(rows.column("value").to_numpy(zero_copy_only=False), dtype=np.int64)
    uplift = np.asarray(rows.column("uplift").to_numpy(zero_copy_only=False), dtype=np.float64)
    uplift = np.where(np.array([m in taken for m in ids], dtype=bool), 0.0, uplift)
    picks = select_within_budget(
        uplift, value, ids, max_coupons=count, budget=budget, min_uplift=min_uplift
    )
    return picks, int(sum(int(value[i]) for i in picks))


def _common_hour(profiles: Any, small: Any) -> int:
    """The most common peak hour of all members (the smallest on a tie; :data:`DEFAULT_HOUR`
    when nobody has one), as :func:`.targeting.best_hours` finds it."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    if "peak_hour" not in profiles.columns:
        return DEFAULT_HOUR
    peak = F.col("peak_hour").cast("double")
    known = profiles.filter(peak.isNotNull() & ~F.isnan(peak))
    counts = small(known.groupBy(peak.cast("bigint").alias("hour")).count(), "hours").to_pylist()
    if not counts:
        return DEFAULT_HOUR
    return int(min(counts, key=lambda r: (-int(r["count"]), int(r["hour"])))["hour"])
