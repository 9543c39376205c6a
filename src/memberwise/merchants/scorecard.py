"""Merchant scorecards as pure functions of tables: Taobao's DSR rules, refund, dispute and
complaint rates, after-sales handling time, and an industry percentile with shrinkage.

DSR (店铺动态评分, "detailed seller ratings"): three 1-5 scores a buyer gives with a review --
item as described, service attitude, logistics speed -- shown as the plain average over the
last 180 days, where (Taobao's published rules)

- a rating given more than 15 days after the order is not recorded,
- only the first 3 ratings a buyer gives a shop in a calendar month count (in the program's
  display time zone), and
- a rating counts while it is at most 180 days old.

The scores come from a review event's ``properties`` (``dsr_described``, ``dsr_service``,
``dsr_logistics``); a review without them counts its star ``rating`` for all three. Every
function here is an Ibis expression (no I/O, no engine named), so the build runs it on DuckDB
or Spark over the same lake.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import ibis
import ibis.expr.types as ir

from memberwise.program.merchants import MerchantSettings

DSR_FIELDS: tuple[str, ...] = ("described", "service", "logistics")


def _property(properties: ir.StringValue, key: str, value: str) -> ir.StringValue:
    """One top-level value of the ``properties`` JSON text, or null: a regular expression, not
    a JSON parse, because it compiles to a native function on DuckDB and on Spark (Ibis's JSON
    extraction becomes a Python UDF on Spark) and costs less over every review."""
    found = properties.re_extract(rf'"{key}"\s*:\s*{value}', 1)
    return found.nullif("")


def _local(ts: ir.TimestampValue, utc_offset: timedelta) -> ir.TimestampValue:
    return ts + ibis.interval(seconds=int(utc_offset.total_seconds()))


def counted_ratings(
    events: ir.Table,
    *,
    as_of: datetime,
    settings: MerchantSettings,
    utc_offset: timedelta = timedelta(hours=8),
) -> ir.Table:
    """The DSR ratings that count at ``as_of``: one row per counted review with its three
    scores, after the 15-day, 3-a-month and 180-day rules (applied in that order: a rating
    that is not recorded does not use up one of the month's three)."""
    reviews = events.filter(
        events.type == "review",
        events.merchant_id.notnull(),
        events.order_id.notnull(),
        events.ts <= ibis.literal(as_of),
    )
    scores = {
        name: ibis.coalesce(
            _property(reviews.properties, f"dsr_{name}", r"(\d+)").cast("int64"),
            reviews.rating.cast("int64"),
        )
        for name in DSR_FIELDS
    }
    reviews = reviews.select("event_id", "member_id", "merchant_id", "order_id", "ts", **scores)
    valid = ibis.and_(*(reviews[n].between(1, 5) for n in DSR_FIELDS))
    reviews = reviews.filter(valid)
    buys = events.filter(
        events.type == "purchase", events.merchant_id.notnull(), events.order_id.notnull()
    )
    orders = buys.group_by(["order_id", "merchant_id"]).aggregate(ordered_at=buys.ts.min())
    joined = reviews.join(orders, ["order_id", "merchant_id"])
    recorded = joined.filter(
        joined.ts <= joined.ordered_at + ibis.interval(days=settings.rating_window_days)
    )
    month = _local(recorded.ts, utc_offset).truncate("M")
    ranked = recorded.mutate(
        nth=ibis.row_number().over(
            group_by=[recorded.member_id, recorded.merchant_id, month],
            order_by=[recorded.ts, recorded.event_id],
        )
    )
    start = as_of - timedelta(days=settings.dsr_window_days)
    return ranked.filter(
        ranked.nth < settings.ratings_per_buyer_month, ranked.ts > ibis.literal(start)
    ).drop("nth")


def dsr(ratings: ir.Table) -> ir.Table:
    """Per merchant: counted ratings and the plain average of each score."""
    return ratings.group_by("merchant_id").aggregate(
        ratings=ratings.count().cast("int64"),
        **{f"dsr_{n}": ratings[n].mean().cast("float64") for n in DSR_FIELDS},
    )


def service_rates(events: ir.Table, *, as_of: datetime, days: int) -> ir.Table:
    """Per merchant over the ``days`` before ``as_of``: orders, refunds (successful refund
    events), disputes (refunds the platform ruled for the member: ``properties.ruling`` is
    ``member``, or -- when no ruling is recorded -- a refund on an order the member complained
    about first), complaints, and the mean after-sales handling time in hours (from the
    order's first complaint or service contact to its refund)."""
    start = as_of - timedelta(days=days)
    rows = events.filter(
        events.merchant_id.notnull(),
        events.type.isin(["purchase", "refund", "complaint", "service"]),
        events.ts > ibis.literal(start),
        events.ts <= ibis.literal(as_of),
    )
    per_order = rows.group_by(["merchant_id", "order_id"]).aggregate(
        bought=(rows.type == "purchase").any(),
        refunded_at=rows.ts.min(where=rows.type == "refund"),
        complained_at=rows.ts.min(where=rows.type == "complaint"),
        contact_at=rows.ts.min(where=rows.type.isin(["complaint", "service"])),
        ruling=_property(rows.properties, "ruling", r'"([^"]*)"').max(where=rows.type == "refund"),
        complaints=(rows.type == "complaint").sum(),
    )
    refunded = per_order.refunded_at.notnull()
    disputed = refunded & (
        (per_order.ruling == "member")
        | (per_order.ruling.isnull() & (per_order.complained_at < per_order.refunded_at))
    )
    handled = refunded & (per_order.contact_at < per_order.refunded_at)
    # Whole microseconds between the two, then hours: Spark's epoch seconds drop the fraction
    # of a second that DuckDB's keep, the difference in microseconds is exact on both.
    waited = per_order.refunded_at.delta(per_order.contact_at, unit="microsecond")
    hours = waited / 3_600_000_000
    return per_order.group_by("merchant_id").aggregate(
        orders=per_order.bought.sum().cast("int64"),
        refunds=refunded.sum().cast("int64"),
        disputes=disputed.sum().cast("int64"),
        complaints=per_order.complaints.sum().cast("int64"),
        handling_hours=hours.mean(where=handled).cast("float64"),
    )


def industries(events: ir.Table, parents: ir.Table, *, as_of: datetime, days: int) -> ir.Table:
    """Each merchant's industry: the top-level category (``parents``: category_id,
    parent_id) of most of its purchases in the ``days`` before ``as_of``."""
    start = as_of - timedelta(days=days)
    buys = events.filter(
        events.type == "purchase",
        events.merchant_id.notnull(),
        events.category_id.notnull(),
        events.ts > ibis.literal(start),
        events.ts <= ibis.literal(as_of),
    )
    joined = buys.left_join(parents, buys.category_id == parents.category_id)
    top = ibis.coalesce(joined.parent_id, joined.category_id)
    counts = joined.group_by([joined.merchant_id, top.name("industry")]).aggregate(n=joined.count())
    ranked = counts.mutate(
        r=ibis.row_number().over(
            group_by=counts.merchant_id, order_by=[ibis.desc(counts.n), counts.industry]
        )
    )
    return ranked.filter(ranked.r == 0).select("merchant_id", "industry")


def scorecards(
    ratings: ir.Table, rates: ir.Table, industry: ir.Table, *, shrinkage: float
) -> ir.Table:
    """One row per merchant: DSR averages, each shrunk towards its industry's mean as if it
    had ``shrinkage`` more ratings there (an empirical-Bayes mean), the rates, and industry
    percentiles (0-100, 100 best) of the shrunk DSR and of a quality score: the mean of the
    percentiles of shrunk DSR and of shrunk refund, dispute and complaint rates (lower is
    better)."""
    scores = dsr(ratings)
    merchants = rates.select("merchant_id").union(scores.select("merchant_id")).distinct()
    t = (
        merchants.left_join(scores, "merchant_id")
        .drop("merchant_id_right")
        .left_join(rates, "merchant_id")
        .drop("merchant_id_right")
        .left_join(industry, "merchant_id")
        .drop("merchant_id_right")
    )
    t = t.mutate(
        industry=t.industry.fill_null("unknown"),
        ratings=t.ratings.fill_null(0),
        orders=t.orders.fill_null(0),
        refunds=t.refunds.fill_null(0),
        disputes=t.disputes.fill_null(0),
        complaints=t.complaints.fill_null(0),
    )
    by_industry = ibis.window(group_by=t.industry)
    everyone = ibis.window()
    shrunk = {}
    for n in DSR_FIELDS:
        col = t[f"dsr_{n}"]
        weight = t.ratings.cast("float64")
        # The industry's rating-weighted mean; an industry without ratings uses everyone's,
        # and a platform without any rating scores 0 (nothing to rank by).
        total = col.fill_null(0) * weight
        mean = ibis.coalesce(
            total.sum().over(by_industry) / weight.sum().over(by_industry).nullif(0),
            total.sum().over(everyone) / weight.sum().over(everyone).nullif(0),
            ibis.literal(0.0),
        )
        shrunk[f"shrunk_{n}"] = ibis.coalesce(
            (total + mean * shrinkage) / (weight + shrinkage).nullif(0), mean
        )
    t = t.mutate(**shrunk)
    orders = ibis.greatest(t.orders, 1).cast("float64")
    t = t.mutate(
        dsr_score=sum((t[f"shrunk_{n}"] for n in DSR_FIELDS), ibis.literal(0.0)) / len(DSR_FIELDS),
        refund_rate=t.refunds / orders,
        dispute_rate=t.disputes / orders,
        complaint_rate=t.complaints / orders,
    )
    # The percentiles rank rates shrunk the same way (as if ``shrinkage`` more orders at the
    # industry's rate): a shop with 2 orders and 1 refund is not ranked as a 50 % refunder.
    n = t.orders.cast("float64")
    ranked = {}
    for name, count in (("refund", t.refunds), ("dispute", t.disputes),
                        ("complaint", t.complaints)):  # fmt: skip
        industry_rate = count.sum().over(by_industry) / ibis.greatest(
            n.sum().over(by_industry), 1.0
        )
        ranked[f"shrunk_{name}"] = (count + industry_rate * shrinkage) / (n + shrinkage)
    t = t.mutate(**ranked)

    def percentile(value: ir.NumericValue) -> ir.FloatingValue:
        rank = ibis.percent_rank().over(group_by=t.industry, order_by=value)
        return (rank * 100).cast("float64")

    t = t.mutate(
        dsr_percentile=percentile(t.dsr_score),
        p_refund=percentile(-t.shrunk_refund),
        p_dispute=percentile(-t.shrunk_dispute),
        p_complaint=percentile(-t.shrunk_complaint),
    )
    t = t.mutate(quality=(t.dsr_percentile + t.p_refund + t.p_dispute + t.p_complaint) / 4)
    t = t.mutate(quality_percentile=percentile(t.quality))
    return t.select(
        "merchant_id", "industry", "ratings",
        *(f"dsr_{n}" for n in DSR_FIELDS), *(f"shrunk_{n}" for n in DSR_FIELDS),
        "dsr_score", "dsr_percentile", "orders", "refunds", "disputes", "complaints",
        "refund_rate", "dispute_rate", "complaint_rate", "handling_hours",
        "quality", "quality_percentile",
    ).order_by("merchant_id")  # fmt: skip
