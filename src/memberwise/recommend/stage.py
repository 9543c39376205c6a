"""The build's ``recommendations`` stage: train, evaluate and score the recommender, make the
fallback lists and target the coupon campaigns, writing everything into the build directory.

Inputs: the lake's events up to the build's clock (read through the build's Ibis backend, only
the columns the model needs), the item catalog from the operational store (hidden and sold-out
items, launch times, consumables), the build's ``profiles.parquet`` (regions, habits, the
targeting's propensities), ``segments.parquet`` and, when the build has one, ``tiers.parquet``
(members whose tier grants the ``early_access`` benefit get items not launched yet).

Outputs (read by :func:`memberwise.recommend.service.publish_build`):

- ``recommendations.parquet`` -- every member's list (member_id, rank, item_id, score, reason,
  source);
- ``similar_items.parquet`` -- each item's neighbours (item_id, rank, similar_item_id, score);
- ``fallbacks.parquet`` -- popular lists by region and category, new arrivals and overall
  (key, rank, item_id, score, reason), what unknown members and short lists are filled from;
- ``coupon_suggestions.parquet`` -- the campaigns' chosen members (:mod:`.targeting`);
- ``recommender/`` -- the model (``Recommender.save``);
- ``build.json["recommendations"]`` -- the model id, its offline metrics on a time split
  (trained on all but the last ``label_days``, scored against what members bought in them),
  the config serving applies, and the targeting's problems.

The publish gate (a new model replaces the serving one only if its metrics are at least as
good) is applied by the publisher, in the publish transaction, against the model serving then.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ibis
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Connection

from memberwise.kit.lake import fsync_file
from memberwise.kit.sparkframes import is_spark
from memberwise.recommend import service
from memberwise.recommend.evaluate import OWN_BASELINES, POLICY_PREFIX, Scores, evaluate
from memberwise.recommend.interactions import Interactions, from_events
from memberwise.recommend.model import Recommender, RecommenderConfig
from memberwise.recommend.policy import OWN_FREQUENT, OWN_RECENT, OwnHistory
from memberwise.recommend.targeting import PROFILE_FIELDS, target

if TYPE_CHECKING:
    from memberwise.builds import BuildContext
    from memberwise.program.schemas import Program

#: What the stage writes (besides the ``recommender/`` model directory) and reads; the build
#: links these from an earlier build when the stage runs alone. ``tiers.parquet`` is used when
#: the build has it (early access), so it is not required.
OUTPUTS: tuple[str, ...] = (
    service.RECOMMENDATIONS,
    service.SIMILAR,
    service.FALLBACKS,
    service.COUPONS,
)
INPUTS: tuple[str, ...] = ("profiles.parquet", "segments.parquet")
US = 1_000_000
#: Event columns the recommender reads.
EVENT_COLUMNS: tuple[str, ...] = (
    "member_id",
    "type",
    "ts",
    "item_id",
    "category_id",
    "price",
    "order_id",
    "region",
)
#: Event types that say something about items (the rest are not read).
ITEM_EVENTS: tuple[str, ...] = ("view", "favorite", "cart", "purchase", "review", "refund")
#: Weights of the fallback lists' popularity (as the profiles' category affinity).
POPULARITY_WEIGHTS: dict[str, float] = {"view": 1.0, "favorite": 2.0, "cart": 3.0, "purchase": 5.0}
#: Popularity counts events of this many days before the clock.
POPULAR_DAYS = 30
#: An item launched this many days before the clock is a new arrival.
NEW_DAYS = 30
#: Items per fallback list and per similar-items list.
FALLBACK_LENGTH = 50
SIMILAR_LENGTH = 20
#: Metrics at these k go into build.json; the gate compares GATE_METRICS.
KS: tuple[int, ...] = (10, 20)
FALLBACK_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("rank", pa.int32()),
        pa.field("item_id", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("reason", pa.string()),
    ]
)


def read_events(ctx: BuildContext) -> pa.Table:
    """The item events up to the build's clock, as Arrow (only the model's columns)."""
    events = ctx.runtime.lake.events_table(ctx.con)
    as_of = ctx.result.as_of
    expr = events.filter(
        (events.ts <= ibis.literal(as_of)) & events.type.isin(list(ITEM_EVENTS))
    ).select(*EVENT_COLUMNS)
    table: pa.Table = ctx.con.to_pyarrow(expr)
    return table


def early_access_tiers(program: Program) -> dict[str, int]:
    """Tier -> hours ahead of launch its members see new items, for the tiers granting an
    ``early_access`` benefit (none when the program has no tiers)."""
    from memberwise.program.benefits import BenefitKind

    tiers: Any = getattr(program, "tiers", None) or ()
    hours = {
        name: int(getattr(benefit, "hours_ahead", 24))
        for name, benefit in program.benefits.items()
        if benefit.kind == BenefitKind.early_access
    }
    granting: dict[str, int] = {}
    for tier in tiers:
        ahead = [hours[b] for b in getattr(tier, "benefits", ()) if b in hours]
        if ahead:
            granting[str(tier.name)] = max(ahead)
    return granting


def member_tiers(ctx: BuildContext) -> dict[str, str] | None:
    """member -> tier from the build's ``tiers.parquet`` (None when the build has none)."""
    path = ctx.path("tiers.parquet")
    if not path.is_file():
        return None
    table = pq.read_table(path, columns=["member_id", "tier"])
    return dict(
        zip(table.column("member_id").to_pylist(), table.column("tier").to_pylist(), strict=True)
    )


def _top_per_key(
    keys: Sequence[str], items: Sequence[str], scores: np.ndarray[Any, Any], k: int
) -> tuple[list[str], list[int], list[str], list[float]]:
    """The ``k`` best items of each key (ties by item id), as (key, rank, item, score)."""
    key_arr = np.asarray(keys, dtype=np.str_)
    item_arr = np.asarray(items, dtype=np.str_)
    order = np.lexsort((item_arr, -scores, key_arr))
    key_sorted = key_arr[order]
    starts: np.ndarray[Any, np.dtype[np.intp]] = (
        np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
        if len(order)
        else np.zeros(0, np.intp)
    )
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)])) + 1
    keep = order[rank <= k]
    kept_rank = rank[rank <= k]
    return (
        key_arr[keep].tolist(),
        kept_rank.astype(int).tolist(),
        item_arr[keep].tolist(),
        scores[keep].astype(float).tolist(),
    )


def fallback_lists(
    events: pa.Table, catalog: pa.Table, *, as_of_us: int, names: Mapping[str, str]
) -> pa.Table:
    """Popular items overall, by region, by category (leaf and parent), by region and
    category, and new arrivals -- the lists serving falls back on (:data:`FALLBACK_SCHEMA`).

    Popularity is the weighted count of the last :data:`POPULAR_DAYS` days' events (all
    events when those days have none); unavailable items (hidden, sold out, not launched) are
    left out. New arrivals are items launched in the last :data:`NEW_DAYS` days (by the
    catalog, else first seen in events), most popular first. ``events`` may carry a ``count``
    column: each row then stands for that many events of its type (the Spark path hands over
    events grouped by item, region, category, type and window, ``ts`` their first time).
    """
    ts = pc.cast(pc.cast(events.column("ts"), pa.timestamp("us", tz="UTC")), pa.int64())
    recent = pc.greater(ts, as_of_us - POPULAR_DAYS * 86_400_000_000)
    window = events.filter(recent) if pc.any(recent).as_py() else events
    kinds = window.column("type").to_numpy(zero_copy_only=False).astype(np.str_)
    weight = np.zeros(len(kinds))
    for kind, w in POPULARITY_WEIGHTS.items():
        weight[kinds == kind] = w
    if "count" in window.column_names:  # pre-aggregated rows (the Spark path): one per group
        weight = weight * window.column("count").to_numpy(zero_copy_only=False)
    has_item = pc.is_valid(window.column("item_id")).to_numpy(zero_copy_only=False) & (weight > 0)
    # Rows as codes: the window's distinct items (``names``), regions; weights summed per
    # (item, region) once, then each list family is a sum over those pairs (no Python per row).
    encoded = window.column("item_id").filter(pa.array(has_item)).combine_chunks()
    encoded = encoded.dictionary_encode()
    item_names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    item = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    n_items = len(item_names)
    if "region" in window.column_names:
        region_col = window.column("region").filter(pa.array(has_item)).fill_null("")
        region_enc = region_col.combine_chunks().dictionary_encode()
        region_names = np.asarray(region_enc.dictionary.to_pylist(), dtype=object)
        region = region_enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        region_names = np.asarray([""], dtype=object)
        region = np.zeros(len(item), np.int64)
    weight = weight[has_item]
    # Each item's category and parent: the catalog's, else the events' own (the first seen).
    leaf_of: dict[str, str] = {}
    parent_of: dict[str, str] = {}
    if "category_id" in window.column_names and len(item):
        cats = window.column("category_id").filter(pa.array(has_item)).combine_chunks()
        named = pc.fill_null(pc.not_equal(cats, ""), False).to_numpy(zero_copy_only=False)
        first_item, first_row = np.unique(item[named], return_index=True)
        first_cats = cats.filter(pa.array(named)).take(pa.array(first_row)).to_pylist()
        leaf_of = dict(zip(item_names[first_item].tolist(), first_cats, strict=True))
    unavailable: set[str] = set()
    launched: dict[str, int] = {}
    if catalog.num_rows:
        for row in catalog.select(
            ["item_id", "category_id", "parent_category_id", "hidden", "in_stock", "launched_at"]
        ).to_pylist():
            if row["category_id"]:
                leaf_of[row["item_id"]] = row["category_id"]
            if row["parent_category_id"]:
                parent_of[row["item_id"]] = row["parent_category_id"]
            if row["launched_at"] is not None:
                launched[row["item_id"]] = int(row["launched_at"].timestamp() * 1_000_000)
            if row["hidden"] or not row["in_stock"]:
                unavailable.add(row["item_id"])
    unavailable |= {i for i, t in launched.items() if t > as_of_us}
    ok = ~np.isin(item_names, np.asarray(sorted(unavailable), dtype=object))[item]
    n_regions = len(region_names)
    pair_weight = np.bincount(
        item[ok] * n_regions + region[ok], weights=weight[ok], minlength=n_items * n_regions
    )
    pair = np.flatnonzero(pair_weight > 0)
    p_item, p_region, p_weight = pair // n_regions, pair % n_regions, pair_weight[pair]
    leaf = np.asarray([leaf_of.get(i) or "" for i in item_names.tolist()], dtype=object)
    parent = np.asarray([parent_of.get(i) or "" for i in item_names.tolist()], dtype=object)
    own_parent = (parent != "") & (parent != leaf)

    keys: list[npt.NDArray[Any]] = []
    items: list[npt.NDArray[np.int64]] = []
    scores: list[npt.NDArray[np.float64]] = []

    def add(key: npt.NDArray[Any], rows: npt.NDArray[np.bool_]) -> None:
        """Sum the (item, region) pairs' weights per (key, item) over the selected pairs."""
        codes, inverse = np.unique(key[rows].astype(str), return_inverse=True)
        group, at = np.unique(inverse.ravel() * n_items + p_item[rows], return_inverse=True)
        keys.append(np.asarray(codes, dtype=object)[group // n_items])
        items.append(group % n_items)
        scores.append(
            np.bincount(at.ravel(), weights=p_weight[rows], minlength=len(group)).astype(np.float64)
        )

    everywhere = np.ones(len(pair), bool)
    region_of = region_names[p_region]
    in_region = region_of != ""
    add(np.full(len(pair), "all", dtype=object), everywhere)
    add("category:" + leaf[p_item], leaf[p_item] != "")
    add("category:" + parent[p_item], own_parent[p_item])
    add("region:" + region_of, in_region)
    add("region:" + region_of + "|category:" + leaf[p_item], in_region & (leaf[p_item] != ""))
    add("region:" + region_of + "|category:" + parent[p_item], in_region & own_parent[p_item])
    popularity = np.bincount(p_item, weights=p_weight, minlength=n_items)
    start = as_of_us - NEW_DAYS * 86_400_000_000
    if launched:
        new = [i for i, t in launched.items() if start < t <= as_of_us and i not in unavailable]
    else:
        first: dict[str, int] = {}
        all_items = events.column("item_id").to_pylist()
        for i, t in zip(all_items, ts.to_pylist(), strict=True):
            if i is not None:
                first[i] = min(first.get(i, t), t)
        new = [i for i, t in first.items() if t > start and i not in unavailable]
    code_of = {name: c for c, name in enumerate(item_names.tolist())}
    new_pop = np.asarray([popularity[code_of[i]] if i in code_of else 0.0 for i in new])
    key_list = [str(k) for part in keys for k in part.tolist()] + ["new"] * len(new)
    item_list = [*item_names[np.concatenate(items)].tolist(), *new] if items else new
    score_arr = np.concatenate([*scores, new_pop + 1.0])
    k, r, it, sc = _top_per_key(key_list, item_list, score_arr, FALLBACK_LENGTH)

    def reason(key: str) -> str:
        if key == "new":
            return "new arrival"
        if key == "all":
            return "popular right now"
        parts = dict(part.split(":", 1) for part in key.split("|"))
        category = parts.get("category")
        label = names.get(category, category) if category else None
        if label and "region" in parts:
            return f"popular in {label} near you"
        if label:
            return f"popular in {label}"
        return "popular near you"

    return pa.table(
        {
            "key": k,
            "rank": pa.array(r, pa.int32()),
            "item_id": it,
            "score": pa.array(sc, pa.float64()),
            "reason": [reason(x) for x in k],
        },
        schema=FALLBACK_SCHEMA,
    )


@dataclass(frozen=True)
class Choice:
    """What the build publishes: ``method`` ``ranker`` or ``own_history`` (with ``policy``
    fixed, or re-learned on all the data when ``learn``), the evaluated method whose metrics
    it carries, and why, in a sentence."""

    method: str
    evaluated: str
    policy: OwnHistory | None
    learn: bool
    decision: str


def choose(scores: Sequence[Scores], k: int = 10) -> Choice:
    """The ranker when it beats the best own-history baseline (own most frequent, own most
    recent, own then popular) on both Recall@k and NDCG@k; else the learned own-history
    policy when it is at least as good as that baseline on Recall@k; else that baseline
    itself (own most frequent or own most recent, then popular items)."""
    at_k = {s.method: s for s in scores if s.k == k}
    baselines = [at_k[m] for m in OWN_BASELINES if m in at_k]
    blend = next((s for m, s in at_k.items() if m.startswith("blend")), None)
    policy = next((s for m, s in at_k.items() if m.startswith(POLICY_PREFIX)), None)
    if not baselines:
        return Choice("ranker", blend.method if blend else "", None, False, "no baseline scored")
    best = max(baselines, key=lambda s: (s.recall, s.ndcg))
    versus = (
        f"{best.method.removeprefix('baseline: ')} recall@{k} {best.recall:.4f}, "
        f"ndcg@{k} {best.ndcg:.4f}"
    )
    if blend is not None and blend.recall > best.recall and blend.ndcg > best.ndcg:
        return Choice(
            "ranker",
            blend.method,
            None,
            False,
            f"ranker published: recall@{k} {blend.recall:.4f}, ndcg@{k} {blend.ndcg:.4f} beat "
            f"the best own-history baseline ({versus})",
        )
    lost = (
        f"the ranker (recall@{k} {blend.recall:.4f}, ndcg@{k} {blend.ndcg:.4f}) did not beat "
        f"the best own-history baseline ({versus})"
        if blend is not None
        else f"no ranker was evaluated (best own-history baseline: {versus})"
    )
    if policy is not None and policy.recall >= best.recall:
        return Choice(
            "own_history",
            policy.method,
            None,
            True,
            f"{lost}; published the learned own-history blend (recall@{k} "
            f"{policy.recall:.4f}, ndcg@{k} {policy.ndcg:.4f})",
        )
    fixed = OWN_RECENT if best.method == "baseline: own most recent" else OWN_FREQUENT
    return Choice(
        "own_history",
        best.method,
        fixed,
        False,
        f"{lost}; published that baseline ({fixed.name})",
    )


@dataclass
class SplitFit:
    """What :func:`time_split_metrics` built, kept for the serving fit so it is not built
    twice: the interactions of all the events, and the recommender fitted on all but the
    last ``label_days`` (the history the serving fit trains its ranker on too)."""

    data: Interactions | None = None
    model: Recommender | None = None


def time_split_metrics(
    events: pa.Table,
    *,
    as_of: Any,
    items: pa.Table | None,
    categories: pa.Table | None = None,
    config: RecommenderConfig,
    label_days: float,
    keep: SplitFit | None = None,
) -> dict[str, Any]:
    """Recall@k, NDCG@k, hit rate@k and coverage@k (flat keys such as ``recall@10``, what
    the publish gate compares) of the method the build publishes (:func:`choose`), from a
    model trained on all but the last ``label_days`` and asked for the members who bought in
    them, plus the ranker's, the own-history policy's, every source's and every baseline's
    scores under ``evaluation`` (:func:`memberwise.recommend.evaluate.evaluate`, the protocol
    of ``memberwise recommend evaluate --dataset lake``), the choice under ``method``,
    ``published_method`` and ``decision``. The flat metrics are None, and the ranker is
    kept, when no member bought in the held-out days. ``keep`` receives the interactions
    and the fitted recommender (:class:`SplitFit`)."""
    data = from_events(events, now=as_of, items=items, categories=categories)
    if keep is not None:
        keep.data = data
    history, labels = data.split_last(label_days=label_days)
    flat: dict[str, Any] = {
        f"{m}@{k}": None for k in KS for m in ("recall", "ndcg", "hit", "coverage")
    }
    if not labels:
        return {
            **flat,
            "members": 0,
            "evaluation": [],
            "method": "ranker",
            "published_method": "ranker",
            "decision": "ranker kept: nobody bought in the held-out days, nothing to compare",
        }
    fitted = Recommender(config).fit(history)
    if keep is not None:
        keep.model = fitted
    scores, _ = evaluate(history, labels, KS, recommender=fitted)
    choice = choose(scores)
    for s in scores:
        if s.method == choice.evaluated:
            flat[f"recall@{s.k}"] = round(s.recall, 6)
            flat[f"ndcg@{s.k}"] = round(s.ndcg, 6)
            flat[f"hit@{s.k}"] = round(s.hit_rate, 6)
            flat[f"coverage@{s.k}"] = round(s.coverage, 6)
    evaluation = [
        {
            "method": s.method,
            "k": s.k,
            "recall": round(s.recall, 6),
            "ndcg": round(s.ndcg, 6),
            "hit_rate": round(s.hit_rate, 6),
        }
        for s in scores
    ]
    return {
        **flat,
        "members": len(labels),
        "evaluation": evaluation,
        "method": choice.method,
        "published_method": choice.evaluated,
        "fixed_policy": choice.policy.as_dict() if choice.policy else None,
        "learn_policy": choice.learn,
        "decision": choice.decision,
    }


def serving_config(config: RecommenderConfig, metrics: Mapping[str, Any]) -> RecommenderConfig:
    """The config of the model the build publishes: the ranker's, or the own-history
    policy's (fixed weights, or learned again on all the data)."""
    if metrics.get("method") != "own_history":
        return config
    fixed = metrics.get("fixed_policy")
    if fixed:
        return dataclasses.replace(
            config,
            policy="own_history",
            learn_policy=False,
            own_recency=float(fixed["recency"]),
            own_category_power=float(fixed["category_power"]),
            own_explore=float(fixed["explore"]),
        )
    return dataclasses.replace(config, policy="own_history", learn_policy=True)


class Laps:
    """Seconds of each phase of the stage, recorded as ``build.json``'s ``phases`` (where
    the stage's time goes, without a profiler)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, name: str) -> dict[str, float]:
        """End the phase ``name`` now; the phases so far."""
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now
        return self.seconds


def stage_recommendations(ctx: BuildContext) -> int:
    """Train, evaluate and score; write the artifacts the publisher reads. Returns the
    number of recommendation rows."""
    settings = ctx.program.recommendations
    steps = 6
    ctx.progress("recommendations", 0, steps)
    began = time.perf_counter()
    lap = Laps()
    as_of = ctx.result.as_of
    as_of_us = int(as_of.timestamp() * US)
    if is_spark(ctx.con):
        return _stage_on_spark(ctx, began)
    events = read_events(ctx)
    with ctx.runtime.engine.connect() as conn:
        catalog = service.catalog_table(conn)
        categories = service.categories_table(conn)
    ctx.progress("recommendations", 1, steps)
    lap("read")

    items = catalog.select(["item_id", "category_id", "price", "launched_at", "title"])
    unavailable = catalog.filter(
        pc.or_(catalog.column("hidden"), pc.invert(catalog.column("in_stock")))
    ).column("item_id")
    tiers = member_tiers(ctx)
    granting = early_access_tiers(ctx.program)
    early_members = (
        sorted(m for m, t in tiers.items() if t in granting) if tiers and granting else []
    )
    # Items launching within the longest early-access window of the granting tiers.
    ahead_us = max(granting.values(), default=0) * 3_600 * US
    launched = catalog.column("launched_at").cast(pa.int64()).fill_null(0)
    upcoming = catalog.filter(
        pc.and_(
            pc.and_(pc.greater(launched, as_of_us), pc.less_equal(launched, as_of_us + ahead_us)),
            pc.and_(pc.invert(catalog.column("hidden")), catalog.column("in_stock")),
        )
    ).sort_by([("launched_at", "ascending"), ("item_id", "ascending")])
    early_items = upcoming.column("item_id").to_pylist() if early_members else []

    config = RecommenderConfig(seed=7)
    label_days = config.label_days
    known_items = items if items.num_rows else None
    known_categories = categories if categories.num_rows else None
    split = SplitFit()
    metrics = time_split_metrics(
        events,
        as_of=as_of,
        items=known_items,
        categories=known_categories,
        config=config,
        label_days=label_days,
        keep=split,
    )
    ctx.progress("recommendations", 2, steps)
    lap("evaluate")
    config = serving_config(config, metrics)
    # The evaluation's interactions and its model (fitted on the history the serving fit
    # trains its ranker on) are reused, not built again.
    model = Recommender(config).fit(
        split.data if split.data is not None else events,
        now=as_of,
        items=known_items,
        categories=known_categories,
        history_fit=split.model,
    )
    del split
    model.save(ctx.path("recommender"))
    ctx.progress("recommendations", 3, steps)
    lap("fit")

    # Every profiled member gets a list (one the model does not know gets its fallback).
    profiles = pq.read_table(ctx.path("profiles.parquet"))
    members = sorted(
        set(profiles.column("member_id").to_pylist()) | set(model.data.member_ids.tolist())
    )
    lists = model.recommend(
        members,
        n=settings.list_length,
        exclude_items=unavailable.to_pylist(),
        early_access_items=early_items,
        early_access_members=early_members,
    )
    rows = service_write(ctx, service.RECOMMENDATIONS, lists)
    service_write(ctx, service.SIMILAR, model.similar_items(n=SIMILAR_LENGTH))
    ctx.progress("recommendations", 4, steps)
    lap("lists")

    names = _category_names(categories)
    service_write(
        ctx, service.FALLBACKS, fallback_lists(events, catalog, as_of_us=as_of_us, names=names)
    )
    ctx.progress("recommendations", 5, steps)
    lap("fallbacks")

    wanted = [c for c in PROFILE_FIELDS if c in profiles.column_names]
    segments = _segments(ctx)
    suggestions, problems = target(
        profiles.select(wanted),
        settings.campaigns,
        ctx.program.coupons,
        segments=segments,
        tiers=tiers,
    )
    service_write(ctx, service.COUPONS, suggestions)
    ctx.progress("recommendations", 6, steps)

    sections = ctx.meta.setdefault("sections", {})
    sections[service.SECTION] = {
        "model_id": ctx.result.build_id,
        "metrics": metrics,
        "method": metrics["method"],
        "published_method": metrics["published_method"],
        "decision": metrics["decision"],
        "own_policy": model.info.get("own_policy"),
        "gate_metrics": list(service.GATE_METRICS),
        "label_days": label_days,
        "config": {
            "list_length": settings.list_length,
            "diversity_share": settings.diversity_share,
            "publish_tolerance": settings.publish_tolerance,
            "model": config.to_json(),
        },
        "info": model.info,
        "members": len(members),
        "early_access_members": len(early_members),
        "coupon_suggestions": suggestions.num_rows,
        "targeting_problems": problems,
        "seconds": round(time.perf_counter() - began, 3),
        "phases": lap("targeting"),
    }
    return rows


def _upcoming(catalog: pa.Table, as_of_us: int, ahead_us: int) -> list[str]:
    """Items launching within ``ahead_us`` after the clock, visible and in stock, by launch."""
    launched = catalog.column("launched_at").cast(pa.int64()).fill_null(0)
    upcoming = catalog.filter(
        pc.and_(
            pc.and_(pc.greater(launched, as_of_us), pc.less_equal(launched, as_of_us + ahead_us)),
            pc.and_(pc.invert(catalog.column("hidden")), catalog.column("in_stock")),
        )
    ).sort_by([("launched_at", "ascending"), ("item_id", "ascending")])
    return [str(i) for i in upcoming.column("item_id").to_pylist()]


def spark_popularity(ctx: BuildContext) -> pa.Table:
    """The lake's item events grouped by item, region, category, type and popularity window
    (``count``, ``ts`` = the group's first time), computed by Spark: what
    :func:`fallback_lists` needs, item-sized, read from the scratch folder."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    from memberwise.kit import sparkframes
    from memberwise.recommend.distributed import read_small

    as_of = ctx.result.as_of
    as_of_us = int(as_of.timestamp() * US)
    events = ctx.runtime.lake.events_table(ctx.con)
    expr = events.filter(
        (events.ts <= ibis.literal(as_of)) & events.type.isin(list(ITEM_EVENTS))
    ).select("item_id", "region", "category_id", "type", "ts")
    frame = sparkframes.to_spark(ctx.con, expr)
    recent = F.unix_micros("ts") > F.lit(as_of_us - POPULAR_DAYS * 86_400_000_000)
    grouped = (
        frame.withColumn("_recent", recent)
        .groupBy("item_id", "region", "category_id", "type", "_recent")
        .agg(F.count("*").alias("count"), F.min("ts").alias("ts"))
        .drop("_recent")
    )
    try:
        table = read_small(ctx, grouped, "popularity")
    finally:
        ctx.drop_scratch(ctx.scratch("recommend-spark"))
    if not table.num_rows:
        return pa.table(
            {
                "item_id": pa.array([], pa.string()),
                "region": pa.array([], pa.string()),
                "category_id": pa.array([], pa.string()),
                "type": pa.array([], pa.string()),
                "count": pa.array([], pa.int64()),
                "ts": pa.array([], pa.timestamp("us", tz="UTC")),
            }
        )
    return table.sort_by(
        [
            ("item_id", "ascending"),
            ("region", "ascending"),
            ("type", "ascending"),
            ("ts", "ascending"),
        ]
    )


def _stage_on_spark(ctx: BuildContext, began: float) -> int:
    """The stage when the engine is Spark (:mod:`.distributed`): lists and similar items
    written from the executors, the fallback lists from item-sized aggregates."""
    from memberwise.recommend.distributed import recommendations_on_spark
    from memberwise.recommend.targeting_spark import suggest_on_spark

    settings = ctx.program.recommendations
    steps = 6
    as_of = ctx.result.as_of
    as_of_us = int(as_of.timestamp() * US)
    with ctx.runtime.engine.connect() as conn:
        catalog = service.catalog_table(conn)
        categories = service.categories_table(conn)
    ctx.progress("recommendations", 1, steps)
    unavailable = catalog.filter(
        pc.or_(catalog.column("hidden"), pc.invert(catalog.column("in_stock")))
    ).column("item_id")
    granting = early_access_tiers(ctx.program)
    ahead_us = max(granting.values(), default=0) * 3_600 * US
    early_items = _upcoming(catalog, as_of_us, ahead_us) if granting else []
    config = RecommenderConfig(seed=7)
    outcome = recommendations_on_spark(
        ctx,
        catalog=catalog,
        unavailable=[str(i) for i in unavailable.to_pylist()],
        early_items=early_items,
        granting=granting,
        list_length=settings.list_length,
        config=config,
        ks=KS,
    )
    ctx.progress("recommendations", 4, steps)
    names = _category_names(categories)
    service_write(
        ctx,
        service.FALLBACKS,
        fallback_lists(spark_popularity(ctx), catalog, as_of_us=as_of_us, names=names),
    )
    ctx.progress("recommendations", 5, steps)
    suggestions, problems = suggest_on_spark(ctx)  # scored in the executors
    service_write(ctx, service.COUPONS, suggestions)
    ctx.progress("recommendations", 6, steps)
    metrics = outcome.metrics
    sections = ctx.meta.setdefault("sections", {})
    sections[service.SECTION] = {
        "model_id": ctx.result.build_id,
        "metrics": metrics,
        "method": metrics["method"],
        "published_method": metrics["published_method"],
        "decision": metrics["decision"],
        "own_policy": None,
        "gate_metrics": list(service.GATE_METRICS),
        "label_days": config.label_days,
        "config": {
            "list_length": settings.list_length,
            "diversity_share": settings.diversity_share,
            "publish_tolerance": settings.publish_tolerance,
            "model": config.to_json(),
        },
        "info": outcome.info,
        "members": None,
        "early_access_members": None,
        "coupon_suggestions": suggestions.num_rows,
        "targeting_problems": problems,
        "seconds": round(time.perf_counter() - began, 3),
    }
    return outcome.rows


def service_write(ctx: BuildContext, name: str, table: pa.Table) -> int:
    """Write an artifact atomically (temp name, fsync, rename); its row count."""
    path = ctx.path(name)
    tmp = path.with_name(f".tmp-{path.name}")
    pq.write_table(table, tmp, compression="zstd")
    fsync_file(tmp)
    os.replace(tmp, path)
    return int(table.num_rows)


def publish(conn: Connection, build_dir: Path) -> int:
    """The build's publisher: lists published (0 when the gate kept the serving model or
    the build has no recommendations)."""
    outcome = service.publish_build(conn, build_dir)
    return 0 if outcome is None else outcome.members


def _segments(ctx: BuildContext) -> dict[str, set[str]]:
    """member -> {lifecycle segment, persona group name} from the build's segments.parquet."""
    path = ctx.path("segments.parquet")
    if not path.is_file():
        return {}
    table = pq.read_table(path)
    out: dict[str, set[str]] = {}
    personas = table.column("persona").to_pylist() if "persona" in table.column_names else None
    for i, (m, s) in enumerate(
        zip(table.column("member_id").to_pylist(), table.column("segment").to_pylist(), strict=True)
    ):
        groups = {s}
        if personas is not None and personas[i] is not None:
            groups.add(f"persona-{personas[i]}")
        out[m] = groups
    return out


def _category_names(categories: pa.Table) -> dict[str, str]:
    """Category id -> name, for the fallback lists' reasons (both engines)."""
    return dict(
        zip(
            categories.column("category_id").to_pylist(),
            categories.column("name").to_pylist(),
            strict=True,
        )
    )
