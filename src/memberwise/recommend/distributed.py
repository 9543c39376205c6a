"""The ``recommendations`` stage on a Spark cluster: candidates, rules and ranking in the
executors, only item-sized tables and a bounded training sample on the driver.

When the build's engine is Spark, no member-sized table reaches the driver:

- **Interactions** are Spark SQL over the lake: one row per (member, item) with the embedded
  path's event-type weights (:data:`~.interactions.EVENT_WEIGHTS`), recency-decayed weights,
  purchase baskets, refunds and the last times seen and bought.
- **Candidates** come from four sources, unioned per (member, item):
  ``als`` -- Spark ML's ``ALS`` with ``implicitPrefs=True``, the rating chosen so that its
  confidence is the embedded ``alpha * log1p(weight)`` (:func:`als_candidates`), rank,
  iterations and regularization of :class:`~.model.RecommenderConfig`,
  ``recommendForAllUsers``; ``cooc`` -- item
  co-occurrence as a Spark SQL self-join within purchase baskets (an order) and browsing days
  (a member's item events of one day), groups of more than :data:`GROUP_CAP` distinct items
  left out (as the embedded ``max_group``), which bounds the self-join to ``GROUP_CAP**2``
  pairs per group, cosine-normalized, each item's :data:`NEIGHBOURS` best kept, and a member's
  candidates the neighbours of their :data:`ANCHORS` strongest recent items; ``repeat`` -- the
  items the member bought (as the embedded ``RepeatSource``: not those only viewed or
  carted); ``popular`` -- the most popular available items (a broadcast list).
- **Rules** are SQL: hidden, sold-out and not-yet-launched items are dropped, so are items the
  member refunded in as many baskets as they bought them, durables of a category the member
  bought in the last ``durable_cooldown`` days (consumable categories, re-bought by at least
  ``min_rebuy_rate`` of their buyers, and items the member bought twice are exempt), and
  each list holds at most ``max_per_category`` items of one category. Early access reuses the
  embedded path's pure :func:`~.model._insert_early_access` per group of members.
- **Ranking**: a LightGBM LambdaRank model over :data:`FEATURES` is trained on the driver on
  at most ``max_train_members`` members (the embedded cap, drawn by a hash of the member id)
  of a time split (trained on all but the last ``label_days``, labelled by what members bought
  in them), broadcast as text and scored in the executors with ``mapInPandas``. A fifth of the
  labelled members (by hash) is never trained on; the metrics are measured on them.
- Small tables the driver needs (the training sample, the fallback lists' item-by-region
  popularity) are written by Spark to the build's scratch folder and read back from there, so
  nothing is ever ``collect``-ed.

It is not the embedded recommender (``implicit``'s ALS, TIFU-KNN neighbours, the category
popularity and new-arrival sources and the own-history policy have no counterpart here), so
lists differ; ``tests/recommend/test_distributed.py`` checks that its recall and hit rate on the
held-out split stay within a stated tolerance of the embedded path's. ``docs/cluster.md``
lists the differences.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memberwise.kit import sparkframes, sparkstore
from memberwise.kit.storage import is_local, join, local_path
from memberwise.kit.warehouse import spark_uri
from memberwise.kit.warehouse import write_parquet as warehouse_write
from memberwise.recommend.interactions import EVENT_WEIGHTS
from memberwise.recommend.model import RecommenderConfig, _insert_early_access

if TYPE_CHECKING:
    from memberwise.builds import BuildContext

#: A pandas DataFrame / Spark DataFrame (neither ships type stubs here).
Frame = Any

DAY_US = 86_400_000_000
#: Baskets and browsing days with more distinct items than this are left out of the
#: co-occurrence self-join (each group then yields at most GROUP_CAP * (GROUP_CAP - 1) pairs).
GROUP_CAP = 50
#: Neighbours kept per item, and a member's strongest recent items whose neighbours they get.
NEIGHBOURS = 30
ANCHORS = 20
#: A purchase basket counts this many times a browsing day in the co-occurrence.
BASKET_WEIGHT = 3.0
#: Popular items every member is offered as candidates.
POPULAR = 30
#: Members whose ``crc32(member_id) % 5`` is below this are kept out of the ranker's
#: training and measured (a hash any tool can recompute, e.g. Python's ``zlib.crc32``).
HELD_OUT = 1
#: The ranker's features (one row per member x candidate item).
FEATURES: tuple[str, ...] = (
    "als_score",
    "cooc_score",
    "repeat_score",
    "popular_score",
    "als_rank",
    "cooc_rank",
    "repeat_rank",
    "pair_weight",
    "pair_purchases",
    "pair_baskets",
    "pair_since_seen",
    "pair_since_purchase",
    "item_popularity",
    "item_buyers",
    "category_share",
    "category_rebuy",
    "member_items",
    "member_weight",
)
SCORED_DDL = (
    "member_id string, item_id string, score double, source string, anchor string, "
    "anchor_bought int, pair_baskets double, category_id string"
)
RESULT_DDL = (
    "member_id string, rank int, item_id string, score double, reason string, source string"
)


@dataclass(frozen=True)
class SparkOutcome:
    """What the stage records: rows written, the metrics on the held-out members, and how the
    ranker was trained."""

    rows: int
    metrics: dict[str, Any]
    info: dict[str, Any]


def _weight_sql(column: str = "type") -> str:
    cases = " ".join(f"WHEN '{k}' THEN {float(w)}" for k, w in EVENT_WEIGHTS.items())
    return f"CASE {column} {cases} ELSE 0.0 END"


def _top(frame: Frame, key: str, order: Sequence[Any], n: int, name: str = "rk") -> Frame:
    """The first ``n`` rows of each ``key`` by ``order`` (a ``rk`` column, 1-based)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    w = Window.partitionBy(key).orderBy(*order)
    return frame.withColumn(name, F.row_number().over(w)).filter(F.col(name) <= n)


def dense_index(frame: Frame, column: str, name: str, buckets: int = 64) -> Frame:
    """``frame``'s distinct ``column`` values numbered 0.. in ``name`` (an int, as Spark ML's
    ALS needs), without sorting everything in one task: rows are numbered within hash buckets
    and each bucket is offset by the sizes of the buckets before it (a ``buckets``-row table)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    values = (
        frame.select(column).distinct().withColumn("_b", F.pmod(F.xxhash64(column), F.lit(buckets)))
    )
    sizes = values.groupBy("_b").count()
    offsets = sizes.withColumn(
        "_off", F.sum("count").over(Window.orderBy("_b")) - F.col("count")
    ).select("_b", "_off")
    within = Window.partitionBy("_b").orderBy(column)
    return (
        values.join(F.broadcast(offsets), "_b")
        .withColumn(name, (F.col("_off") + F.row_number().over(within) - 1).cast("int"))
        .select(column, name)
    )


def read_small(ctx: BuildContext, frame: Frame, name: str) -> pa.Table:
    """A small Spark result (item-sized, or a bounded sample) on the driver: the executors
    write it to the build's scratch folder and the driver reads the files (no ``collect``)."""
    from memberwise.kit.warehouse import spark_write, storage_of

    scratch = ctx.scratch("recommend-spark")
    target = join(scratch, name)
    storage = storage_of(ctx.con)
    # (Spark's own writer for a local or HDFS path, the executors' objects on a store.)
    spark_write(frame, target, storage)
    if is_local(target):
        files = sorted(p for p in local_path(target).glob("*.parquet"))
        tables = [pq.read_table(p) for p in files]
    else:  # remote scratch, read through the storage's file system
        tables = [storage.read_table(f) for f in storage.parquet_files(target)]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="default")


# -- interactions -------------------------------------------------------------------------------
def item_events(ctx: BuildContext, until_day: float) -> Frame:
    """The lake's item events before ``until_day`` (days since the epoch), as a Spark view:
    member_id, item_id, type, day, basket, weight, region, category_id."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    from memberwise.recommend.stage import EVENT_COLUMNS, ITEM_EVENTS

    events = ctx.runtime.lake.events_table(ctx.con)
    expr = events.filter(events.type.isin(list(ITEM_EVENTS))).select(*EVENT_COLUMNS)
    frame = sparkframes.to_spark(ctx.con, expr)
    day = F.unix_micros(F.col("ts")) / F.lit(float(DAY_US))
    return (
        frame.filter(F.col("item_id").isNotNull())
        .withColumn("day", day)
        .filter(F.col("day") <= F.lit(until_day))
        .withColumn(
            "basket",
            F.coalesce(F.col("order_id"), F.floor(F.col("day")).cast("string")),
        )
        .withColumn("weight", F.expr(_weight_sql()))
        .select("member_id", "item_id", "type", "day", "basket", "weight", "region", "category_id")
    )


def interactions(events: Frame, now_day: float, config: RecommenderConfig) -> Frame:
    """One row per (member, item): summed event weight, its recency-decayed forms (the own
    history's and the co-occurrence anchors' half-lives), purchases, purchase baskets, refunds,
    and the last days seen and bought."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    age = F.lit(now_day) - F.col("day")
    buy = F.col("type") == "purchase"
    return events.groupBy("member_id", "item_id").agg(
        F.sum("weight").alias("weight"),
        F.sum(F.col("weight") * F.exp(-math.log(2) * age / config.half_life)).alias("recent"),
        F.sum(F.col("weight") * F.exp(-math.log(2) * age / 30.0)).alias("anchor_weight"),
        F.sum(F.when(buy, 1.0).otherwise(0.0)).alias("purchases"),
        F.countDistinct(F.when(buy, F.col("basket"))).cast("double").alias("baskets"),
        F.sum(F.when(F.col("type") == "refund", 1.0).otherwise(0.0)).alias("refunds"),
        F.max(F.when(F.col("weight") > 0, F.col("day"))).alias("last_seen"),
        F.max(F.when(buy, F.col("day"))).alias("last_purchase"),
        F.first("category_id", ignorenulls=True).alias("event_category"),
    )


# -- candidates ---------------------------------------------------------------------------------
def als_candidates(pairs: Frame, config: RecommenderConfig, c: int) -> Frame:
    """Spark ML's implicit ALS: each member's ``c`` best items.

    ``implicit`` (the embedded path) takes ``alpha * log1p(weight)`` as the confidence, Spark
    ``1 + alpha * rating``; the rating ``alpha * log1p(weight) - 1`` with Spark's alpha at 1
    gives the same confidences (one below 1, which Spark cannot express, becomes 1: the
    rating is floored just above 0, as Spark reads a rating of 0 or less as no preference)."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    rated = pairs.filter(F.col("weight") > 0)
    members = dense_index(rated, "member_id", "m")
    items = dense_index(rated, "item_id", "i")
    data = (
        rated.join(members, "member_id")
        .join(F.broadcast(items), "item_id")
        .select(
            "m",
            "i",
            F.greatest(F.lit(config.als_alpha) * F.log1p("weight") - F.lit(1.0), F.lit(1e-6))
            .cast("float")
            .alias("rating"),
        )
    )
    # Spark ML's default of 10 blocks per side is meant for large data: at 100,000 ratings per
    # block small builds do not pay for tasks with nothing to do.
    blocks = max(1, min(10, rated.count() // 100_000))
    als = ALS(
        numUserBlocks=blocks,
        numItemBlocks=blocks,
        rank=config.als_factors,
        maxIter=config.als_iterations,
        regParam=config.als_regularization,
        alpha=1.0,
        implicitPrefs=True,
        userCol="m",
        itemCol="i",
        ratingCol="rating",
        seed=config.seed,
        coldStartStrategy="drop",
    )
    model = als.fit(data)
    recs = model.recommendForAllUsers(c).select("m", F.posexplode("recommendations"))
    return (
        recs.select(
            "m",
            (F.col("pos") + 1).cast("double").alias("als_rank"),
            F.col("col.i").alias("i"),
            F.col("col.rating").cast("double").alias("als_score"),
        )
        .join(members, "m")
        .join(F.broadcast(items), "i")
        .select("member_id", "item_id", "als_score", "als_rank")
    )


def neighbours(events: Frame) -> Frame:
    """Each item's :data:`NEIGHBOURS` most co-occurring items (item_id, similar_item_id,
    score): a self-join within baskets and browsing days of 2..:data:`GROUP_CAP` items, counts
    weighted by :data:`BASKET_WEIGHT` for baskets, normalized by both items' counts (cosine)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    buy = F.col("type") == "purchase"
    groups = (
        events.filter(F.col("weight") > 0)
        .select(
            "item_id",
            F.when(
                buy,
                F.concat_ws("\u0001", F.lit("b"), "member_id", "basket"),
            )
            .otherwise(
                F.concat_ws("\u0001", F.lit("d"), "member_id", F.floor("day").cast("string"))
            )
            .alias("grp"),
            F.when(buy, BASKET_WEIGHT).otherwise(1.0).alias("gw"),
        )
        .distinct()
    )
    size = Window.partitionBy("grp")
    groups = (
        groups.withColumn("n", F.count("*").over(size))
        .filter((F.col("n") >= 2) & (F.col("n") <= GROUP_CAP))
        .drop("n")
    )
    counts = groups.groupBy("item_id").agg(F.sum("gw").alias("cnt"))
    a, b = groups.alias("a"), groups.alias("b")
    co = (
        a.join(b, (F.col("a.grp") == F.col("b.grp")) & (F.col("a.item_id") != F.col("b.item_id")))
        .groupBy(F.col("a.item_id").alias("item_id"), F.col("b.item_id").alias("similar_item_id"))
        .agg(F.sum("a.gw").alias("co"))
    )
    ca = counts.select(F.col("item_id"), F.col("cnt").alias("ca"))
    cb = counts.select(F.col("item_id").alias("similar_item_id"), F.col("cnt").alias("cb"))
    scored = (
        co.join(F.broadcast(ca), "item_id")
        .join(F.broadcast(cb), "similar_item_id")
        .select(
            "item_id",
            "similar_item_id",
            (
                F.col("co")
                / F.sqrt(F.greatest(F.col("ca"), F.lit(1.0)))
                / F.sqrt(F.greatest(F.col("cb"), F.lit(1.0)))
            ).alias("score"),
        )
    )
    return _top(
        scored, "item_id", [F.col("score").desc(), F.col("similar_item_id")], NEIGHBOURS
    ).drop("rk")


def cooc_candidates(pairs: Frame, nb: Frame, c: int) -> Frame:
    """The neighbours of each member's :data:`ANCHORS` strongest recent items, summed; the
    anchor contributing most and whether the member bought it (for the reason)."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    anchors = _top(
        pairs.filter(F.col("anchor_weight") > 0),
        "member_id",
        [F.col("anchor_weight").desc(), F.col("item_id")],
        ANCHORS,
    ).select(
        "member_id",
        F.col("item_id").alias("anchor"),
        "anchor_weight",
        (F.col("purchases") > 0).cast("int").alias("anchor_bought"),
    )
    joined = anchors.join(nb.withColumnRenamed("item_id", "anchor"), "anchor").select(
        "member_id",
        F.col("similar_item_id").alias("item_id"),
        (F.col("anchor_weight") * F.col("score")).alias("contrib"),
        "anchor",
        "anchor_bought",
    )
    summed = joined.groupBy("member_id", "item_id").agg(
        F.sum("contrib").alias("cooc_score"),
        F.max_by(F.struct("anchor", "anchor_bought"), F.col("contrib")).alias("best"),
    )
    top = _top(summed, "member_id", [F.col("cooc_score").desc(), F.col("item_id")], c, "cooc_rank")
    return top.select(
        "member_id",
        "item_id",
        "cooc_score",
        F.col("cooc_rank").cast("double"),
        F.col("best.anchor").alias("anchor"),
        F.col("best.anchor_bought").alias("anchor_bought"),
    )


def item_stats(pairs: Frame, catalog: Frame) -> Frame:
    """Per item: popularity (log of the recency-decayed weight over members), buyers, and its
    category (the catalog's, else the events')."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    stats = pairs.groupBy("item_id").agg(
        F.log1p(F.sum("recent")).alias("item_popularity"),
        F.sum((F.col("purchases") > 0).cast("double")).alias("item_buyers"),
        F.first("event_category", ignorenulls=True).alias("event_category"),
    )
    return stats.join(
        F.broadcast(catalog.select("item_id", "category_id")), "item_id", "left"
    ).select(
        "item_id",
        "item_popularity",
        "item_buyers",
        F.coalesce("category_id", "event_category").alias("category_id"),
    )


def category_rebuy(pairs: Frame, stats: Frame) -> Frame:
    """Per category: the share of its buyers who bought it in two baskets or more."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    bought = pairs.filter(F.col("baskets") > 0).join(
        stats.select("item_id", "category_id"), "item_id"
    )
    per_member = bought.groupBy("member_id", "category_id").agg(F.sum("baskets").alias("b"))
    return per_member.groupBy("category_id").agg(
        (F.sum((F.col("b") >= 2).cast("double")) / F.count("*")).alias("category_rebuy")
    )


def candidate_features(
    pairs: Frame,
    stats: Frame,
    nb: Frame,
    *,
    now_day: float,
    config: RecommenderConfig,
) -> Frame:
    """Every member's candidates (ALS, co-occurrence, own purchases, popular), the rules applied,
    with :data:`FEATURES` and what the reason needs. ``stats``: :func:`item_stats` of the
    available items; ``nb``: :func:`neighbours`. Lazy except the ALS fit."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    c = config.candidates
    rebuy = category_rebuy(pairs, stats)
    # Own items are the member's purchases, as the embedded RepeatSource's: items only viewed
    # or carted were ~40 of a member's ~100 candidates on the demo and, scored as own items,
    # filled the whole top 20 ahead of the ALS, co-occurrence and popular candidates (and
    # were told "you bought this before"). ALS and co-occurrence still propose them.
    own = _top(
        pairs.filter(F.col("purchases") > 0),
        "member_id",
        [F.col("recent").desc(), F.col("item_id")],
        c,
        "repeat_rank",
    ).select(
        "member_id",
        "item_id",
        F.col("recent").alias("repeat_score"),
        F.col("repeat_rank").cast("double"),
    )
    als = als_candidates(pairs, config, c)
    cooc = cooc_candidates(pairs, nb, c)
    top_items = _top(
        stats.withColumn("_all", F.lit(1)),
        "_all",
        [F.col("item_popularity").desc(), F.col("item_id")],
        POPULAR,
    )
    best = F.max("item_popularity").over(Window.partitionBy("_all"))
    popular = top_items.withColumn("popular_score", F.col("item_popularity") / best).select(
        "item_id", "popular_score"
    )
    members = pairs.select("member_id").distinct()
    pop = members.crossJoin(F.broadcast(popular))
    keys = (
        own.select("member_id", "item_id")
        .unionByName(als.select("member_id", "item_id"))
        .unionByName(cooc.select("member_id", "item_id"))
        .unionByName(pop.select("member_id", "item_id"))
        .distinct()
    )
    member_totals = pairs.groupBy("member_id").agg(
        F.count("*").cast("double").alias("member_items"),
        F.log1p(F.sum("weight")).alias("member_weight"),
    )
    member_cats = (
        pairs.join(stats.select("item_id", "category_id"), "item_id")
        .groupBy("member_id", "category_id")
        .agg(F.sum("weight").alias("cat_weight"))
    )
    recent_buys = (
        pairs.filter(F.col("last_purchase") >= F.lit(now_day - config.durable_cooldown))
        .join(stats.select("item_id", "category_id"), "item_id")
        .select("member_id", "category_id")
        .distinct()
        .withColumn("recently_bought_category", F.lit(1))
    )
    frame = (
        keys.join(stats, "item_id")  # unavailable items are not in stats
        .join(own, ["member_id", "item_id"], "left")
        .join(als, ["member_id", "item_id"], "left")
        .join(cooc, ["member_id", "item_id"], "left")
        .join(pop.select("member_id", "item_id", "popular_score"), ["member_id", "item_id"], "left")
        .join(
            pairs.select(
                "member_id",
                "item_id",
                F.col("weight").alias("pair_weight"),
                F.col("purchases").alias("pair_purchases"),
                F.col("baskets").alias("pair_baskets"),
                F.col("refunds").alias("pair_refunds"),
                (F.lit(now_day) - F.col("last_seen")).alias("pair_since_seen"),
                (F.lit(now_day) - F.col("last_purchase")).alias("pair_since_purchase"),
            ),
            ["member_id", "item_id"],
            "left",
        )
        .join(member_totals, "member_id", "left")
        .join(member_cats, ["member_id", "category_id"], "left")
        .join(F.broadcast(rebuy), "category_id", "left")
        .join(recent_buys, ["member_id", "category_id"], "left")
    )
    # Rules: refunded as often as bought; a durable of a category bought lately.
    refunded = F.coalesce(F.col("pair_refunds"), F.lit(0.0)) > 0
    bought_more = F.coalesce(F.col("pair_baskets"), F.lit(0.0)) > F.col("pair_refunds")
    durable = F.coalesce(F.col("category_rebuy"), F.lit(0.0)) < F.lit(config.min_rebuy_rate)
    blocked = (
        durable
        & F.col("recently_bought_category").isNotNull()
        & (F.coalesce(F.col("pair_baskets"), F.lit(0.0)) < 2)
    )
    frame = frame.filter(~(refunded & ~bought_more)).filter(~blocked)
    share = F.coalesce(F.col("cat_weight"), F.lit(0.0)) / F.exp(F.col("member_weight"))
    return frame.select(
        "member_id",
        "item_id",
        "category_id",
        "anchor",
        F.coalesce("anchor_bought", F.lit(0)).alias("anchor_bought"),
        *(
            F.coalesce(F.col(f), F.lit(0.0)).cast("float").alias(f)
            for f in ("als_score", "cooc_score", "repeat_score", "popular_score")
        ),
        *(
            F.coalesce(F.col(f), F.lit(float(c + 1))).cast("float").alias(f)
            for f in ("als_rank", "cooc_rank", "repeat_rank")
        ),
        *(
            F.coalesce(F.col(f), F.lit(0.0)).cast("float").alias(f)
            for f in ("pair_weight", "pair_purchases", "pair_baskets")
        ),
        *(
            F.coalesce(F.col(f), F.lit(9999.0)).cast("float").alias(f)
            for f in ("pair_since_seen", "pair_since_purchase")
        ),
        F.col("item_popularity").cast("float"),
        F.col("item_buyers").cast("float"),
        F.least(share, F.lit(1.0)).cast("float").alias("category_share"),
        F.coalesce("category_rebuy", F.lit(0.0)).cast("float").alias("category_rebuy"),
        F.coalesce("member_items", F.lit(0.0)).cast("float").alias("member_items"),
        F.coalesce("member_weight", F.lit(0.0)).cast("float").alias("member_weight"),
    )


# -- ranking ------------------------------------------------------------------------------------
def member_hash(column: str = "member_id", seed: int = 7) -> Any:
    """A seeded hash of the member id in [0, 1_000_000) (samples and the held-out fifth)."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    return F.pmod(F.xxhash64(F.lit(seed), F.col(column)), F.lit(1_000_000))


def train_ranker(
    x: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    sizes: Sequence[int],
    config: RecommenderConfig,
) -> Any:
    """LambdaRank on the sample's groups (members with at least one bought candidate), the
    embedded :class:`~.ranker.Ranker`'s parameters, every fifth group held out for early
    stopping; None when fewer than ``min_train_groups`` groups."""
    import lightgbm as lgb

    sizes_arr = np.asarray(sizes, np.int64)
    if len(sizes_arr) < config.min_train_groups:
        return None
    valid_group = np.arange(len(sizes_arr)) % 5 == 4
    valid_row = np.repeat(valid_group, sizes_arr)
    params: dict[str, Any] = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10, 20],
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambdarank_truncation_level": 30,
        "seed": config.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": config.threads,
        "verbosity": -1,
    }
    train = lgb.Dataset(
        x[~valid_row], y[~valid_row], group=sizes_arr[~valid_group], feature_name=list(FEATURES)
    )
    valid = lgb.Dataset(x[valid_row], y[valid_row], group=sizes_arr[valid_group], reference=train)
    return lgb.train(
        params,
        train,
        num_boost_round=config.ranker_rounds,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(30, first_metric_only=True, verbose=False)],
    )


def blend(frame: Frame) -> np.ndarray[Any, Any]:
    """The score without a trained ranker: own purchases first, then the other sources' scores
    (each already in [0, 1] or ranked)."""
    own = np.asarray(frame["repeat_score"], np.float64)
    return np.asarray(
        np.log1p(own) * 2.0
        + 1.0 / np.asarray(frame["als_rank"], np.float64)
        + 1.0 / np.asarray(frame["cooc_rank"], np.float64)
        + 0.3 * np.asarray(frame["popular_score"], np.float64),
        np.float64,
    )


def score_partitions(model_text: str | None) -> Any:
    """A ``mapInPandas`` function scoring candidate rows with the broadcast booster (or the
    blend) and naming each row's leading source."""

    def run(batches: Iterator[Frame]) -> Iterator[Frame]:
        import lightgbm as lgb

        booster = lgb.Booster(model_str=model_text) if model_text else None
        for frame in batches:
            if booster is not None and len(frame):
                x = frame[list(FEATURES)].to_numpy(np.float32)
                score = np.asarray(booster.predict(x, num_iteration=booster.best_iteration or None))
            else:
                score = blend(frame)
            source = np.where(
                frame["repeat_score"] > 0,
                "repeat",
                np.where(
                    frame["cooc_rank"] <= frame["als_rank"],
                    np.where(frame["cooc_score"] > 0, "cooc", "popular"),
                    np.where(frame["als_score"] != 0, "als", "popular"),
                ),
            )
            out = frame[
                ["member_id", "item_id", "anchor", "anchor_bought", "pair_baskets", "category_id"]
            ].copy()
            out["score"] = score.astype(np.float64)
            out["source"] = source
            out["anchor_bought"] = out["anchor_bought"].astype(np.int32)
            out["pair_baskets"] = out["pair_baskets"].astype(np.float64)
            yield out[
                [
                    "member_id",
                    "item_id",
                    "score",
                    "source",
                    "anchor",
                    "anchor_bought",
                    "pair_baskets",
                    "category_id",
                ]
            ]

    return run


def ranked_lists(scored: Frame, n: int, config: RecommenderConfig) -> Frame:
    """Each member's best ``n`` after the diversity rule (at most ``max_per_category`` per
    category, items without one not limited): member_id, rk, item_id, score, source, ..."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    per_cat = Window.partitionBy("member_id", "category_id").orderBy(
        F.col("score").desc(), F.col("item_id")
    )
    diverse = scored.withColumn("_c", F.row_number().over(per_cat)).filter(
        F.col("category_id").isNull() | (F.col("_c") <= config.max_per_category)
    )
    return _top(diverse, "member_id", [F.col("score").desc(), F.col("item_id")], n).drop("_c")


def metrics_sql(lists: Frame, labels: Frame, ks: Sequence[int], n_items: int) -> Frame:
    """Recall@k, NDCG@k, hit rate@k and coverage@k of ``lists`` against ``labels``
    (member_id, item_id), as :mod:`.evaluate` defines them, in one row."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    truth = labels.groupBy("member_id").agg(F.count("*").alias("size"))
    hits = lists.join(labels, ["member_id", "item_id"])
    aggs = []
    per_member = truth
    for k in ks:
        h = (
            hits.filter(F.col("rk") <= k)
            .groupBy("member_id")
            .agg(
                F.count("*").alias(f"h{k}"),
                F.sum(1.0 / F.log2(F.col("rk") + 1.0)).alias(f"d{k}"),
            )
        )
        per_member = per_member.join(h, "member_id", "left")
    ideal_terms = {k: np.cumsum(1.0 / np.log2(np.arange(2, k + 2))) for k in ks}
    for k in ks:
        ideal = F.element_at(
            F.array(*(F.lit(float(v)) for v in ideal_terms[k])),
            F.least(F.col("size"), F.lit(k)).cast("int"),
        )
        aggs += [
            F.avg(F.coalesce(F.col(f"h{k}"), F.lit(0)) / F.col("size")).alias(f"recall@{k}"),
            F.avg(F.coalesce(F.col(f"d{k}"), F.lit(0.0)) / ideal).alias(f"ndcg@{k}"),
            F.avg((F.coalesce(F.col(f"h{k}"), F.lit(0)) > 0).cast("double")).alias(f"hit@{k}"),
        ]
    row = per_member.agg(*aggs, F.count("*").alias("members"))
    for k in ks:
        cov = lists.filter(F.col("rk") <= k).agg(
            (F.countDistinct("item_id") / F.lit(float(max(n_items, 1)))).alias(f"coverage@{k}")
        )
        row = row.crossJoin(cov)
    return row


# -- the stage ----------------------------------------------------------------------------------
def recommendations_on_spark(
    ctx: BuildContext,
    *,
    catalog: pa.Table,
    unavailable: Sequence[str],
    early_items: Sequence[str],
    granting: dict[str, int],
    list_length: int,
    config: RecommenderConfig,
    ks: Sequence[int],
) -> SparkOutcome:
    """Train on the time split, measure on the held-out members, score every member and write
    ``recommendations.parquet`` and ``similar_items.parquet`` from the executors."""
    spark = sparkframes.session(ctx.con)
    began = time.perf_counter()
    scratch = ctx.scratch("recommend-spark")
    # ALS's iterations make a lineage deep enough to overflow the stack when tasks are
    # deserialized; Spark ML cuts it every 10 iterations once a checkpoint folder is set.
    checkpoints, local_checkpoints = checkpoint_folder(spark, scratch)
    spark.sparkContext.setCheckpointDir(checkpoints)
    try:
        return _run(
            ctx,
            spark,
            began,
            catalog=catalog,
            unavailable=unavailable,
            early_items=early_items,
            granting=granting,
            list_length=list_length,
            config=config,
            ks=ks,
        )
    finally:
        ctx.drop_scratch(scratch)
        if local_checkpoints is not None:
            shutil.rmtree(local_checkpoints, ignore_errors=True)


#: Spark setting naming the folder of ALS's checkpoints (a Hadoop file system path every
#: executor reaches), overriding :func:`checkpoint_folder`'s choice.
CHECKPOINT_DIR_KEY = "spark.memberwise.checkpointDir"


def checkpoint_folder(spark: Any, scratch: Path | str) -> tuple[str, Path | None]:
    """Where ALS checkpoints its lineage, and the local temp folder to delete afterwards.

    Checkpoints are written and read by Spark's Hadoop file systems, not through fsspec: the
    stage's scratch when Hadoop reaches it (a local disk, HDFS, S3 with the S3A connector).
    An object store reached only through memberwise's Python data source (no hadoop-aws, as on
    these machines) is out of Hadoop's reach, so the checkpoints go to a temp folder on this
    machine's disk: right in local mode and on a one-machine cluster; a cluster of several
    machines without S3A names a shared Hadoop path (HDFS) in ``spark.memberwise.checkpointDir``.
    """
    named = str(spark.conf.get(CHECKPOINT_DIR_KEY, "") or "")
    if named:
        return named, None
    text = str(scratch)
    if not sparkstore.through_python(spark, text):
        return spark_uri(join(scratch, "checkpoints")), None
    local = Path(tempfile.mkdtemp(prefix="memberwise-als-checkpoints-"))
    return str(local), local


def _run(
    ctx: BuildContext,
    spark: Any,
    began: float,
    *,
    catalog: pa.Table,
    unavailable: Sequence[str],
    early_items: Sequence[str],
    granting: dict[str, int],
    list_length: int,
    config: RecommenderConfig,
    ks: Sequence[int],
) -> SparkOutcome:
    """:func:`recommendations_on_spark`'s body (the caller owns the scratch folder)."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    from memberwise.recommend import service

    as_of: datetime = ctx.result.as_of
    now_day = as_of.timestamp() * 1_000_000 / DAY_US
    cut_day = now_day - config.label_days
    as_of_us = int(as_of.timestamp() * 1_000_000)
    items_schema = "item_id string, category_id string"
    cat_rows = catalog.select(["item_id", "category_id"]).to_pylist() if catalog.num_rows else []
    catalog_df = spark.createDataFrame(
        [(r["item_id"], r["category_id"]) for r in cat_rows], items_schema
    )
    launched = (
        catalog.column("launched_at").cast(pa.int64()).fill_null(0).to_pylist()
        if catalog.num_rows
        else []
    )
    not_launched = [
        i
        for i, t in zip(
            catalog.column("item_id").to_pylist() if catalog.num_rows else [], launched, strict=True
        )
        if t > as_of_us
    ]
    excluded = F.broadcast(
        spark.createDataFrame(
            [(i,) for i in sorted(set(unavailable) | set(not_launched))], "item_id string"
        )
    )
    info: dict[str, Any] = {"engine": "spark", "group_cap": GROUP_CAP, "neighbours": NEIGHBOURS}

    # 1. The time split: candidates and features on the history, labels after the cut.
    all_events = item_events(ctx, now_day).cache()
    history = all_events.filter(F.col("day") < F.lit(cut_day))
    h_pairs = interactions(history, cut_day, config).cache()
    labels = (
        all_events.filter((F.col("day") >= F.lit(cut_day)) & (F.col("type") == "purchase"))
        .select("member_id", "item_id")
        .distinct()
        .join(h_pairs.select("member_id").distinct(), "member_id")
        .cache()
    )
    h = member_hash()
    h_stats = item_stats(h_pairs, catalog_df).join(excluded, "item_id", "left_anti").cache()
    h_nb = neighbours(history).cache()
    h_feats = candidate_features(h_pairs, h_stats, h_nb, now_day=cut_day, config=config).cache()
    labelled = (
        labels.select("member_id")
        .distinct()
        .withColumn("_h", h)
        .withColumn("_out", F.pmod(F.crc32(F.col("member_id")), F.lit(5)) < HELD_OUT)
    )
    train_members = labelled.filter(~F.col("_out"))
    n_train = train_members.count()
    share = min(1.0, config.max_train_members / max(n_train, 1))
    sample = train_members.filter(F.col("_h") < F.lit(int(share * 1_000_000))).select("member_id")
    rows = (
        h_feats.join(F.broadcast(sample) if n_train <= 50_000 else sample, "member_id")
        .join(labels.withColumn("label", F.lit(1.0)), ["member_id", "item_id"], "left")
        .withColumn("label", F.coalesce("label", F.lit(0.0)))
        .select("member_id", "item_id", "label", *FEATURES)
    )
    # Groups with a bought candidate only (the others carry no ranking signal).
    useful = rows.groupBy("member_id").agg(F.max("label").alias("_any")).filter("_any > 0")
    table = read_small(ctx, rows.join(useful.select("member_id"), "member_id"), "train")
    booster = None
    if table.num_rows:
        table = table.sort_by([("member_id", "ascending"), ("item_id", "ascending")])
        ids = table.column("member_id").to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        sizes = np.diff(np.r_[starts, len(ids)])
        x = np.column_stack([table.column(f).to_numpy().astype(np.float32) for f in FEATURES])
        y = table.column("label").to_numpy().astype(np.float32)
        booster = train_ranker(x, y, sizes.tolist(), config)
        info["ranker_sample"] = {"members": len(sizes), "rows": len(ids), "of": n_train}
    model_text = (
        None
        if booster is None
        else booster.model_to_string(num_iteration=booster.best_iteration or -1)
    )
    info["ranker"] = "lambdarank" if booster is not None else "blend"
    if booster is not None:
        info["ranker_rounds"] = int(booster.best_iteration or config.ranker_rounds)

    info["seconds_train"] = round(time.perf_counter() - began, 3)

    # 2. Metrics on the held-out members, ranker against the blend.
    eval_feats = h_feats.join(labelled.filter(F.col("_out")).select("member_id"), "member_id")
    n_items = all_events.select("item_id").distinct().count()
    evaluation: list[dict[str, Any]] = []
    found: dict[str, dict[str, Any]] = {}
    methods = (
        {"spark ranker": model_text, "spark blend": None} if model_text else {"spark blend": None}
    )
    eval_labels = labels.join(labelled.filter(F.col("_out")).select("member_id"), "member_id")
    for name, text in methods.items():
        scored = eval_feats.mapInPandas(score_partitions(text), SCORED_DDL)
        lists = ranked_lists(scored, max(ks), config)
        got = read_small(ctx, metrics_sql(lists, eval_labels, ks, n_items), f"metrics-{len(found)}")
        values = got.to_pylist()[0] if got.num_rows else {}
        found[name] = values
        for k in ks:
            evaluation.append(
                {
                    "method": name,
                    "k": k,
                    "recall": round(float(values.get(f"recall@{k}") or 0.0), 6),
                    "ndcg": round(float(values.get(f"ndcg@{k}") or 0.0), 6),
                    "hit_rate": round(float(values.get(f"hit@{k}") or 0.0), 6),
                }
            )
    k0 = ks[0]
    best = max(
        found,
        key=lambda m: (found[m].get(f"recall@{k0}") or 0.0, found[m].get(f"ndcg@{k0}") or 0.0),
    )
    chosen = model_text if best == "spark ranker" else None
    chosen_metrics = found[best]
    flat = {
        f"{m}@{k}": (
            round(float(chosen_metrics[f"{m}@{k}"]), 6)
            if chosen_metrics.get(f"{m}@{k}") is not None
            else None
        )
        for k in ks
        for m in ("recall", "ndcg", "hit", "coverage")
    }
    members_measured = int(chosen_metrics.get("members") or 0)
    metrics: dict[str, Any] = {
        **flat,
        "members": members_measured,
        "evaluation": evaluation,
        "method": "ranker",
        "published_method": best,
        "decision": (
            f"{best} published: best recall@{k0} on the held-out fifth of the labelled members"
        ),
        "fixed_policy": None,
        "learn_policy": False,
    }
    if not members_measured:
        metrics.update(
            {f"{m}@{k}": None for k in ks for m in ("recall", "ndcg", "hit", "coverage")}
        )
        metrics["decision"] = "ranker kept: nobody bought in the held-out days, nothing to compare"
    for cached in (h_feats, h_pairs, h_stats, h_nb, labels):
        cached.unpersist()

    info["seconds_evaluate"] = round(time.perf_counter() - began, 3)

    # 3. Every member: candidates and features on all the events, scored in the executors.
    pairs = interactions(all_events, now_day, config).cache()
    stats = item_stats(pairs, catalog_df).join(excluded, "item_id", "left_anti").cache()
    nb = neighbours(all_events).cache()
    feats = candidate_features(pairs, stats, nb, now_day=now_day, config=config)
    scored = feats.mapInPandas(score_partitions(chosen), SCORED_DDL)
    lists = ranked_lists(scored, list_length, config)
    titles = spark.createDataFrame(
        [
            (r["item_id"], r["title"])
            for r in (catalog.select(["item_id", "title"]).to_pylist() if catalog.num_rows else [])
        ],
        "item_id string, title string",
    )
    baskets = F.col("pair_baskets").cast("int")
    anchor_title = F.coalesce(F.col("title"), F.col("anchor"))
    reason = (
        F.when(
            F.col("source") == "repeat",
            F.when(baskets >= 2, F.format_string("bought %d times", baskets)).otherwise(
                F.lit("you bought this before")
            ),
        )
        .when(
            (F.col("source") == "cooc") & (F.col("anchor_bought") == 1),
            F.format_string("people who bought %s also bought this", anchor_title),
        )
        .when(
            F.col("source") == "cooc",
            F.format_string("people who viewed %s also viewed this", anchor_title),
        )
        .when(F.col("source") == "als", F.lit("members with tastes like yours like this"))
        .otherwise(F.lit("popular right now"))
    )
    listed = lists.join(
        F.broadcast(titles.withColumnRenamed("item_id", "anchor")), "anchor", "left"
    ).select("member_id", "rk", "item_id", "score", reason.alias("reason"), "source")
    # Profiled members the events do not know get the popular list.
    profiles = sparkframes.to_spark(ctx.con, ctx.table("profiles.parquet")).select("member_id")
    unknown = profiles.join(pairs.select("member_id").distinct(), "member_id", "left_anti")
    popular = stats.withColumn("_all", F.lit(1))
    popular = _top(
        popular, "_all", [F.col("item_popularity").desc(), F.col("item_id")], list_length
    )
    fill = unknown.crossJoin(
        F.broadcast(popular.select("rk", "item_id", F.col("item_popularity").alias("score")))
    ).select(
        "member_id",
        "rk",
        "item_id",
        "score",
        F.lit("popular right now").alias("reason"),
        F.lit("popular").alias("source"),
    )
    result = listed.unionByName(fill)
    early = [i for i in dict.fromkeys(early_items) if i not in set(unavailable)]
    early = early[: max(config.early_access_slots, 0)]
    tiers_path = ctx.path("tiers.parquet")
    if early and granting and tiers_path.exists():
        tiers = sparkframes.to_spark(ctx.con, ctx.table("tiers.parquet")).select(
            "member_id", "tier"
        )
        eligible = (
            tiers.filter(F.col("tier").isin(list(granting)))
            .select("member_id")
            .withColumn("eligible", F.lit(True))
        )
        result = (
            result.join(eligible, "member_id", "left")
            .withColumn("eligible", F.coalesce("eligible", F.lit(False)))
            .withColumn(
                "_b",
                F.pmod(
                    F.xxhash64("member_id"),
                    F.lit(max(spark.sparkContext.defaultParallelism, 1) * 4),
                ),
            )
            .groupBy("_b")
            .applyInPandas(
                early_access(early, list_length, config.early_access_position),
                RESULT_DDL.replace("rank int", "rk int"),
            )
        )
    final = result.select(
        "member_id",
        F.col("rk").cast("int").alias("rank"),
        "item_id",
        F.col("score").cast("double"),
        "reason",
        "source",
    )
    info["seconds_before_write"] = round(time.perf_counter() - began, 3)
    written = warehouse_write(
        ctx.con, sparkframes.from_spark(ctx.con, final), ctx.path(service.RECOMMENDATIONS)
    )
    similar = nb.join(excluded, "item_id", "left_anti").join(
        excluded.withColumnRenamed("item_id", "similar_item_id"), "similar_item_id", "left_anti"
    )
    from pyspark.sql import Window

    similar = (
        similar.withColumn(
            "rank",
            F.row_number()
            .over(Window.partitionBy("item_id").orderBy(F.col("score").desc(), "similar_item_id"))
            .cast("int"),
        )
        .filter(F.col("rank") <= 20)
        .select("item_id", "rank", "similar_item_id", F.col("score").cast("double"))
    )
    warehouse_write(ctx.con, sparkframes.from_spark(ctx.con, similar), ctx.path(service.SIMILAR))
    for cached in (pairs, stats, nb, all_events):
        cached.unpersist()
    info["seconds_spark"] = round(time.perf_counter() - began, 3)
    info["model_text_bytes"] = len(model_text or "")
    if chosen:
        directory = ctx.path("recommender")
        directory.mkdir(exist_ok=True)
        (directory / "ranker.txt").write_text(chosen)
    return SparkOutcome(rows=written, metrics=metrics, info=info)


def early_access(early: list[str], n: int, position: int) -> Any:
    """An ``applyInPandas`` function placing the early-access items in eligible members'
    lists with the embedded path's :func:`~.model._insert_early_access`."""

    def run(frame: Frame) -> Frame:
        frame = frame.sort_values(["member_id", "rk"], kind="stable")
        ids, pos = np.unique(frame["member_id"].to_numpy(dtype=str), return_inverse=True)
        eligible = np.zeros(len(ids), bool)
        flags = frame["eligible"].to_numpy(dtype=bool)
        eligible[pos[flags]] = True
        p, item, score, src, reason = _insert_early_access(
            pos.astype(np.int64),
            frame["item_id"].to_numpy(dtype=str),
            frame["score"].to_numpy(dtype=np.float64),
            frame["source"].to_numpy(dtype=str),
            frame["reason"].to_numpy(dtype=str),
            early,
            eligible,
            n,
            position,
        )
        starts = np.searchsorted(p, np.arange(len(ids) + 1))
        rank = np.arange(len(p)) - np.repeat(starts[:-1], np.diff(starts)) + 1
        return pa.table(
            {
                "member_id": pa.array(ids[p].tolist(), pa.string()),
                "rk": pa.array(rank.astype(np.int32), pa.int32()),
                "item_id": pa.array(item.tolist(), pa.string()),
                "score": pa.array(score, pa.float64()),
                "reason": pa.array(reason.tolist(), pa.string()),
                "source": pa.array(src.tolist(), pa.string()),
            }
        ).to_pandas()

    return run
