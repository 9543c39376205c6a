"""Offline evaluation on a time split: the blend, each candidate source and simple baselines.

Protocol: fit on the history, recommend ``max(k)`` items to every member who bought something
after the split, score against what they bought. Metrics, as in Li et al. (TOIS 2023):

- Recall@k = |top-k ∩ truth| / |truth|, averaged over members;
- NDCG@k with binary gains, ideal DCG over ``min(|truth|, k)`` hits;
- hit rate = share of members with at least one hit in the top k;
- catalog coverage = distinct items recommended in any top k / items in the catalog;
- repeat share = share of recommended items the member had bought before (the rest are new).

Baselines computed in the same run: ``global_popular`` (most bought items), ``own_frequent``
(the member's most often bought items, ties to the most recent) and ``own_then_popular`` (own
frequent, then popular items not already listed).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from memberwise.recommend.candidates import Candidates, top_per_member
from memberwise.recommend.interactions import FloatArray, IntArray, Interactions
from memberwise.recommend.model import Recommender, RecommenderConfig
from memberwise.recommend.ranker import SOURCES

#: Method name prefix of the own-history policy's lists (see :mod:`.policy`).
POLICY_PREFIX = "policy: "
#: The simple baselines the build's ranker must beat to be published.
OWN_BASELINES: tuple[str, ...] = (
    "baseline: own most frequent",
    "baseline: own most recent",
    "baseline: own then popular",
)


@dataclass(frozen=True)
class Lists:
    """Ranked lists: member position, item and 1-based rank, sorted by member then rank."""

    pos: IntArray
    item: IntArray
    rank: IntArray

    @classmethod
    def from_candidates(cls, cands: Candidates) -> Lists:
        """Ranks from candidates already sorted best-first within each member."""
        if len(cands) == 0:
            z = np.zeros(0, np.int64)
            return cls(z, z.copy(), z.copy())
        starts = np.flatnonzero(np.r_[True, cands.pos[1:] != cands.pos[:-1]])
        rank = np.arange(len(cands)) - np.repeat(starts, np.diff(np.r_[starts, len(cands)])) + 1
        return cls(cands.pos, cands.item, rank.astype(np.int64))

    @classmethod
    def from_python(cls, lists: Sequence[Sequence[int]]) -> Lists:
        """Lists given as one sequence of item numbers per member (best first)."""
        pos = np.repeat(np.arange(len(lists)), [len(x) for x in lists]).astype(np.int64)
        item = np.array([i for x in lists for i in x], np.int64)
        rank = np.array([r + 1 for x in lists for r in range(len(x))], np.int64)
        return cls(pos, item, rank)


@dataclass(frozen=True)
class Truth:
    """What each evaluated member (position 0..n-1) bought after the split."""

    pos: IntArray
    item: IntArray
    n_members: int

    @classmethod
    def from_python(cls, sets: Sequence[Sequence[int]]) -> Truth:
        """One collection of item numbers per member (duplicates count once)."""
        distinct = [sorted(set(s)) for s in sets]
        pos = np.repeat(np.arange(len(distinct)), [len(s) for s in distinct]).astype(np.int64)
        return cls(pos, np.array([i for s in distinct for i in s], np.int64), len(distinct))

    @property
    def sizes(self) -> FloatArray:
        """Items bought per member."""
        return np.bincount(self.pos, minlength=self.n_members).astype(np.float64)


@dataclass(frozen=True)
class Scores:
    """One method's metrics at one k."""

    method: str
    k: int
    recall: float
    ndcg: float
    hit_rate: float
    coverage: float
    repeat_share: float
    members: int

    def as_dict(self) -> dict[str, float | int | str]:
        """JSON-ready."""
        return asdict(self)


def _hits(lists: Lists, truth: Truth, k: int) -> tuple[IntArray, IntArray]:
    """Positions and ranks of the top-k rows that are in the member's truth."""
    top = lists.rank <= k
    width = int(max(lists.item.max(initial=0), truth.item.max(initial=0))) + 1
    hit = top & np.isin(lists.pos * width + lists.item, truth.pos * width + truth.item)
    return lists.pos[hit], lists.rank[hit]


def recall_at_k(lists: Lists, truth: Truth, k: int) -> float:
    """Mean over members of hits in the top k / items bought (members who bought nothing are
    not counted)."""
    pos, _ = _hits(lists, truth, k)
    sizes = truth.sizes
    hits = np.bincount(pos, minlength=truth.n_members)
    ok = sizes > 0
    return float(np.mean(hits[ok] / sizes[ok])) if ok.any() else 0.0


def ndcg_at_k(lists: Lists, truth: Truth, k: int) -> float:
    """Mean NDCG@k with binary gains: ``Σ_hits 1/log2(rank+1)`` over the ideal
    ``Σ_{i=1}^{min(|truth|, k)} 1/log2(i+1)``."""
    pos, rank = _hits(lists, truth, k)
    dcg = np.bincount(pos, weights=1.0 / np.log2(rank + 1.0), minlength=truth.n_members)
    discounts = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    sizes = truth.sizes
    ok = sizes > 0
    ideal = discounts[np.minimum(sizes[ok], k).astype(np.int64) - 1]
    return float(np.mean(dcg[ok] / ideal)) if ok.any() else 0.0


def hit_rate_at_k(lists: Lists, truth: Truth, k: int) -> float:
    """Share of members with at least one bought item in their top k."""
    pos, _ = _hits(lists, truth, k)
    ok = truth.sizes > 0
    hit = np.zeros(truth.n_members, bool)
    hit[pos] = True
    return float(hit[ok].mean()) if ok.any() else 0.0


def coverage_at_k(lists: Lists, k: int, n_items: int) -> float:
    """Distinct items in any member's top k over the catalog size."""
    if n_items == 0:
        return 0.0
    return float(len(np.unique(lists.item[lists.rank <= k])) / n_items)


def repeat_share_at_k(lists: Lists, bought: Truth, k: int) -> float:
    """Share of top-k rows whose item the member had bought before (``bought``)."""
    top = lists.rank <= k
    if not top.any():
        return 0.0
    width = int(max(lists.item.max(initial=0), bought.item.max(initial=0))) + 1
    seen = np.isin(lists.pos[top] * width + lists.item[top], bought.pos * width + bought.item)
    return float(seen.mean())


# -- baselines ----------------------------------------------------------------------------------
def _bought(
    data: Interactions, members: IntArray
) -> tuple[IntArray, IntArray, FloatArray, FloatArray]:
    """Per (member position, item) bought: number of baskets and last purchase time."""
    index = np.full(data.n_members, -1, np.int64)
    index[members] = np.arange(len(members))
    buy = data.is_purchase & (index[data.member] >= 0)
    pos = index[data.member[buy]]
    item = data.item[buy].astype(np.int64)
    key = np.unique(np.stack([pos, item, data.group[buy]], 1), axis=0)
    group_time = np.zeros(int(data.group.max(initial=0)) + 1)
    group_time[data.group[buy]] = data.ts[buy]
    pair, counts = np.unique(key[:, 0] * data.n_items + key[:, 1], return_counts=True)
    last = np.full(len(pair), -np.inf)
    times = group_time[key[:, 2]]
    np.maximum.at(last, np.searchsorted(pair, key[:, 0] * data.n_items + key[:, 1]), times)
    return pair // data.n_items, pair % data.n_items, counts.astype(np.float64), last


def global_popular(data: Interactions, n_members: int, n: int) -> Lists:
    """The ``n`` items bought in most baskets, for everyone."""
    buy = data.is_purchase
    key = np.unique(np.stack([data.group[buy], data.item[buy].astype(np.int64)], 1), axis=0)
    counts = np.bincount(key[:, 1], minlength=data.n_items)
    order = np.lexsort((np.arange(data.n_items), -counts))[:n]
    order = order[counts[order] > 0]
    return Lists(
        np.repeat(np.arange(n_members), len(order)).astype(np.int64),
        np.tile(order, n_members).astype(np.int64),
        np.tile(np.arange(1, len(order) + 1), n_members).astype(np.int64),
    )


def own_frequent(data: Interactions, members: IntArray, n: int) -> Lists:
    """Each member's most often bought items (ties: most recently bought first)."""
    pos, item, counts, last = _bought(data, members)
    # Score orders by count, then recency; top_per_member breaks remaining ties by item.
    span = float(np.max(np.abs(last), initial=0.0)) + 1.0
    score = counts + last / (2.0 * span) + 0.5
    z = np.zeros(len(pos), np.int64)
    return Lists.from_candidates(
        top_per_member(Candidates(pos, item, score, z, np.zeros(len(z))), n)
    )


def own_recent(data: Interactions, members: IntArray, n: int) -> Lists:
    """Each member's most recently bought items (ties: most often bought first)."""
    pos, item, counts, last = _bought(data, members)
    # Score = rank of (last purchase, count) over all pairs: recency first, then count.
    score = np.empty(len(pos))
    score[np.lexsort((counts, last))] = np.arange(len(pos), dtype=np.float64)
    z = np.zeros(len(pos), np.int64)
    return Lists.from_candidates(
        top_per_member(Candidates(pos, item, score, z, np.zeros(len(z))), n)
    )


def own_then_popular(data: Interactions, members: IntArray, n: int) -> Lists:
    """Own most frequent items, then globally popular items not already listed."""
    own = own_frequent(data, members, n)
    pop = global_popular(data, len(members), n)
    width = data.n_items
    dup = np.isin(pop.pos * width + pop.item, own.pos * width + own.item)
    pos = np.concatenate([own.pos, pop.pos[~dup]])
    item = np.concatenate([own.item, pop.item[~dup]])
    # Own items first (by their rank), popular after (offset past any own rank).
    score = np.concatenate([-own.rank.astype(np.float64), -(n + pop.rank[~dup]).astype(np.float64)])
    z = np.zeros(len(pos), np.int64)
    return Lists.from_candidates(
        top_per_member(Candidates(pos, item, score, z, np.zeros(len(z))), n)
    )


# -- the whole comparison -----------------------------------------------------------------------
def _merged(parts: Sequence[Candidates]) -> Candidates:
    """The candidates of a method's member batches, as one set (batches cover disjoint
    members, so this is a plain concatenation)."""
    if not parts:
        return Candidates.empty()
    fields = ("pos", "item", "score", "arg", "arg2")
    return Candidates(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))


def evaluate(
    train: Interactions,
    labels: dict[int, IntArray],
    ks: Sequence[int] = (10, 20),
    *,
    config: RecommenderConfig | None = None,
    recommender: Recommender | None = None,
) -> tuple[list[Scores], dict[str, float]]:
    """Fit on ``train`` (unless a fitted ``recommender`` is given), score every method.

    ``labels`` maps member row numbers to the items they bought after the split. Returns the
    scores (blend, each source, baselines, at each k) and timings in seconds.
    """
    timings: dict[str, float] = {}
    began = time.perf_counter()
    rec = recommender or Recommender(config).fit(train)
    timings["fit"] = time.perf_counter() - began
    members = np.array(sorted(labels), np.int64)
    truth = Truth(
        np.repeat(np.arange(len(members)), [len(labels[int(m)]) for m in members]).astype(np.int64),
        np.concatenate([labels[int(m)] for m in members]).astype(np.int64)
        if len(members)
        else np.zeros(0, np.int64),
        len(members),
    )
    n = max(ks)
    b_pos, b_item, _, _ = _bought(train, members)
    bought = Truth(b_pos, b_item, len(members))
    methods: dict[str, Lists] = {}
    began = time.perf_counter()
    single = 1 if rec.config.scoring_threads > 1 else None

    def ranked(own_history: bool) -> Lists:
        def batch(lo: int, hi: int) -> Candidates:
            r = rec.rank(members[lo:hi], n, predict_threads=single, own_history=own_history)
            return Candidates(r.pos + lo, r.item, r.score, r.arg, r.arg2)

        return Lists.from_candidates(_merged(rec.map_batches(batch, len(members))))

    if rec.config.policy == "ranker":
        methods[f"blend ({rec.ranker.kind})"] = ranked(False)
    timings["recommend"] = time.perf_counter() - began
    methods[f"{POLICY_PREFIX}{rec.own_policy.name}"] = ranked(True)
    for s in SOURCES:

        def source_batch(lo: int, hi: int, s: str = s) -> Candidates:
            c = rec.source_candidates(members[lo:hi], s, n)
            return Candidates(c.pos + lo, c.item, c.score, c.arg, c.arg2)

        merged = _merged(rec.map_batches(source_batch, len(members)))
        if len(merged):
            methods[f"source: {s}"] = Lists.from_candidates(merged)
    methods["baseline: global popular"] = global_popular(train, len(members), n)
    methods["baseline: own most frequent"] = own_frequent(train, members, n)
    methods["baseline: own most recent"] = own_recent(train, members, n)
    methods["baseline: own then popular"] = own_then_popular(train, members, n)
    scores = [
        Scores(
            method=name,
            k=k,
            recall=recall_at_k(lists, truth, k),
            ndcg=ndcg_at_k(lists, truth, k),
            hit_rate=hit_rate_at_k(lists, truth, k),
            coverage=coverage_at_k(lists, k, train.n_items),
            repeat_share=repeat_share_at_k(lists, bought, k),
            members=len(members),
        )
        for k in ks
        for name, lists in methods.items()
    ]
    return scores, timings


def evaluate_tafeng(
    ks: Sequence[int] = (10, 20), *, config: RecommenderConfig | None = None
) -> tuple[list[Scores], dict[str, float]]:
    """The Ta-Feng protocol: fit on every user's history, predict their next basket."""
    from memberwise.recommend.interactions import from_baskets
    from memberwise.recommend.tafeng import load_tafeng

    tf = load_tafeng()
    data = from_baskets(tf.history)
    rows = data.member_index(list(tf.future))
    items = [data.item_index(basket) for basket in tf.future.values()]
    labels = {
        int(r): np.unique(i[i >= 0]) for r, i in zip(rows.tolist(), items, strict=True) if r >= 0
    }
    # Items never seen in the history cannot be recommended but still count in |truth|.
    unseen = {
        int(r): int((i < 0).sum()) for r, i in zip(rows.tolist(), items, strict=True) if r >= 0
    }
    scores, timings = evaluate(data, _with_unseen(labels, unseen, data.n_items), ks, config=config)
    return scores, timings


def _with_unseen(
    labels: dict[int, IntArray], unseen: dict[int, int], n_items: int
) -> dict[int, IntArray]:
    """Add placeholder ids (past the catalog, never recommended) for truth items the history
    never saw, so Recall's denominator is the whole next basket, as in the protocol."""
    out: dict[int, IntArray] = {}
    for m, items in labels.items():
        extra = np.arange(n_items, n_items + unseen.get(m, 0), dtype=np.int64)
        out[m] = np.concatenate([items.astype(np.int64), extra])
    return out


def evaluate_events(
    events: object,
    ks: Sequence[int] = (10, 20),
    *,
    label_days: float = 7.0,
    config: RecommenderConfig | None = None,
    items: object | None = None,
    categories: object | None = None,
) -> tuple[list[Scores], dict[str, float]]:
    """The time-split protocol on event data: fit on everything before the last
    ``label_days`` days, score against each member's purchases in them."""
    import pyarrow as pa

    from memberwise.recommend.interactions import from_events

    if not isinstance(events, pa.Table):
        raise TypeError("events must be a pyarrow Table")
    data = from_events(
        events,
        items=items if isinstance(items, pa.Table) else None,
        categories=categories if isinstance(categories, pa.Table) else None,
    )
    history, labels = data.split_last(label_days=label_days)
    return evaluate(history, labels, ks, config=config)
