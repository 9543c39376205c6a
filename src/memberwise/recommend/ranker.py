"""The ranker: blends the candidate sources into one ordered list per member.

The learned ranker is LightGBM LambdaRank (Burges 2010) trained on a time split of the training
data — features from the history before the cut, label 1 for candidates the member bought after
it — with each source's score and rank plus member, item and member × item features
(:data:`FEATURES`). When the split has fewer than ``min_groups`` members with a bought
candidate, the :func:`fallback_scores` blend is used instead: each source's score divided by the
member's best score from that source, weighted by :data:`FALLBACK_WEIGHTS`, summed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from memberwise.recommend.candidates import (
    Candidates,
    RepeatSource,
    category_shares,
    member_rows,
    personal_vectors,
    price_bands,
)
from memberwise.recommend.interactions import (
    FloatArray,
    IntArray,
    Interactions,
    distinct_pairs,
    sorted_unique,
)

#: The candidate sources in feature order.
SOURCES: tuple[str, ...] = ("repeat", "als", "cooc", "popular", "new", "neighbours")

#: Weights of the fallback blend (and of the choice of the reason shown): own re-buys first,
#: then collaborative signals, then popularity and novelty.
FALLBACK_WEIGHTS: dict[str, float] = {
    "repeat": 1.0,
    "neighbours": 0.6,
    "cooc": 0.5,
    "als": 0.5,
    "popular": 0.3,
    "new": 0.2,
}

FEATURES: tuple[str, ...] = (
    *(f"{s}_score" for s in SOURCES),
    *(f"{s}_rank" for s in SOURCES),
    *(f"{s}_norm" for s in SOURCES),
    "pair_baskets",
    "pair_weight",
    "pair_since_purchase",
    "pair_since_seen",
    "pair_due_ratio",
    "item_popularity",
    "item_buyers",
    "item_rebuy_share",
    "category_rebuy",
    "category_share",
    "member_baskets",
    "member_items",
    "band_match",
    # Repeat behaviour (issue 21): personalized frequency, TIFU-KNN's decayed frequency for
    # every candidate (not only the repeat source's), recency in the member's own baskets,
    # the member's own interval for the item against the time since, basket size and how
    # much of the member's buying is re-buying.
    "pair_share",
    "pair_tifu",
    "pair_baskets_since",
    "pair_own_interval",
    "pair_own_due",
    "member_basket_size",
    "member_repeat_ratio",
)


@dataclass
class ItemStats:
    """Per-item counts the features use, learned at fit time."""

    popularity: FloatArray
    buyers: FloatArray
    rebuy_share: FloatArray
    band: IntArray

    @classmethod
    def fit(cls, data: Interactions) -> ItemStats:
        """Purchase popularity, buyers and the share of buyers who bought again."""
        buy = data.is_purchase
        m, it, g = (
            data.member[buy].astype(np.int64),
            data.item[buy].astype(np.int64),
            data.group[buy],
        )
        first = distinct_pairs(g, it)
        m, it = m[first], it[first]
        pop = np.bincount(it, minlength=data.n_items).astype(np.float64)
        pairs, counts = np.unique(m * data.n_items + it, return_counts=True)
        pair_item = pairs % data.n_items
        buyers = np.bincount(pair_item, minlength=data.n_items).astype(np.float64)
        again = np.bincount(pair_item, weights=counts > 1, minlength=data.n_items)
        share = np.divide(again, buyers, out=np.full(data.n_items, np.nan), where=buyers > 0)
        return cls(pop, buyers, share, price_bands(data))

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """For saving."""
        return {
            "popularity": self.popularity,
            "buyers": self.buyers,
            "rebuy_share": self.rebuy_share,
            "band": self.band,
        }


def _pair_max(keys: IntArray, values: FloatArray, query: IntArray, default: float) -> FloatArray:
    """``max(values)`` per key looked up for each query key (``default`` when absent)."""
    if len(keys) == 0:
        return np.full(len(query), default)
    order = np.lexsort((values, keys))
    k, v = keys[order], values[order]
    last = np.r_[k[1:] != k[:-1], True]
    uk, uv = k[last], v[last]
    idx = np.minimum(np.searchsorted(uk, query), len(uk) - 1)
    return np.where(uk[idx] == query, uv[idx], default)


@dataclass
class OwnPairs:
    """The member × item purchase history of candidate pairs and the members' buying habits.

    Per pair: ``baskets`` (the member's baskets with the item), ``first`` / ``last``
    (purchase times, NaN when never bought), ``baskets_since`` (the member's baskets after
    the last purchase of the item, NaN when never bought). Per member (indexed like
    ``members``): ``member_baskets``, ``member_basket_size`` (mean distinct items a basket),
    ``member_repeat_ratio`` (share of bought basket lines whose item the member had bought in
    an earlier basket) and ``member_max`` (most baskets of any one item).
    """

    baskets: FloatArray
    first: FloatArray
    last: FloatArray
    baskets_since: FloatArray
    member_baskets: FloatArray
    member_basket_size: FloatArray
    member_repeat_ratio: FloatArray
    member_max: FloatArray


def own_pairs(data: Interactions, members: IntArray, pos: IntArray, item: IntArray) -> OwnPairs:
    """:class:`OwnPairs` of the candidate pairs (``pos`` indexes ``members``)."""
    n, n_m = len(pos), len(members)
    rows, rpos = member_rows(data, members)
    buy = data.is_purchase[rows]
    rows, rpos = rows[buy], rpos[buy]
    grp = data.group[rows]
    # One line per (member position, basket, item).
    if len(rows):
        first_line = distinct_pairs(rpos * (int(data.group.max()) + 1) + grp, data.item[rows])
        rows, rpos, grp = rows[first_line], rpos[first_line], grp[first_line]
    n_items = data.n_items
    key = rpos * n_items + data.item[rows].astype(np.int64)
    ts = data.ts[rows]
    query = pos * n_items + item
    uk, counts = np.unique(key, return_counts=True)
    idx = np.minimum(np.searchsorted(uk, query), max(len(uk) - 1, 0))
    found = (uk[idx] == query) if len(uk) else np.zeros(n, bool)
    baskets = np.where(found, counts[idx] if len(uk) else 0, 0).astype(np.float64)
    last = _pair_max(key, ts, query, np.nan)
    first = -_pair_max(key, -ts, query, np.nan)
    # The member's baskets (position, time), sorted, to count baskets after a time.
    bfirst = distinct_pairs(rpos, grp) if len(rows) else np.zeros(0, np.int64)
    bpos, btime = rpos[bfirst], ts[bfirst]
    member_baskets = np.bincount(bpos, minlength=n_m).astype(np.float64)
    span = float(np.max(np.abs(btime), initial=0.0)) + 2.0
    bkey = np.sort(bpos * span + btime)
    after = np.searchsorted(bkey, pos * span + span - 1.0, side="right") - np.searchsorted(
        bkey, pos * span + np.nan_to_num(last, nan=0.0), side="right"
    )
    baskets_since = np.where(baskets > 0, after, np.nan).astype(np.float64)
    lines = np.bincount(rpos, minlength=n_m).astype(np.float64)
    distinct_items = np.bincount(
        (uk // n_items).astype(np.int64) if len(uk) else np.zeros(0, np.int64), minlength=n_m
    ).astype(np.float64)
    basket_size = np.divide(
        lines, member_baskets, out=np.full(n_m, np.nan), where=member_baskets > 0
    )
    repeat_ratio = np.divide(
        lines - distinct_items, lines, out=np.full(n_m, np.nan), where=lines > 0
    )
    member_max = np.zeros(n_m)
    if len(uk):
        np.maximum.at(member_max, uk // n_items, counts.astype(np.float64))
    return OwnPairs(
        baskets,
        first,
        last,
        baskets_since,
        member_baskets,
        basket_size,
        repeat_ratio,
        member_max,
    )


def features(
    data: Interactions,
    members: IntArray,
    pos: IntArray,
    item: IntArray,
    source_scores: dict[str, FloatArray],
    source_ranks: dict[str, FloatArray],
    stats: ItemStats,
    repeat: RepeatSource,
) -> npt.NDArray[np.float32]:
    """The :data:`FEATURES` matrix of candidate pairs (``pos`` indexes ``members``)."""
    n = len(pos)
    cols: list[FloatArray] = []
    for s in SOURCES:
        cols.append(source_scores[s])
    for s in SOURCES:
        cols.append(source_ranks[s])
    for s in SOURCES:
        cols.append(_normalized(pos, source_scores[s], len(members)))
    rows, rpos = member_rows(data, members)
    n_items = data.n_items
    key_rows = rpos * n_items + data.item[rows].astype(np.int64)
    query = pos * n_items + item
    buy = data.is_purchase[rows]
    # Distinct baskets with the item.
    kb = key_rows[buy]
    bk = kb[distinct_pairs(kb, data.group[rows][buy])]
    uk, counts = np.unique(bk, return_counts=True)
    idx = np.minimum(np.searchsorted(uk, query), max(len(uk) - 1, 0))
    pair_baskets = (
        np.where(uk[idx] == query, counts[idx], 0).astype(np.float64) if len(uk) else np.zeros(n)
    )
    weight = sp.csr_matrix(
        (data.weight[rows].astype(np.float64), (rpos, data.item[rows])),
        shape=(len(members), n_items),
    )
    pair_weight = np.asarray(weight[pos, item]).ravel() if n else np.zeros(0)
    now = np.where(members >= 0, data.now[np.maximum(members, 0)], 0.0)[pos]
    last_buy = _pair_max(key_rows[buy], data.ts[rows][buy], query, np.nan)
    last_seen = _pair_max(key_rows, data.ts[rows], query, np.nan)
    since_buy = now - last_buy
    interval = repeat.category_interval[
        np.minimum(
            np.where(
                data.item_category[item] < 0,
                len(repeat.category_interval) - 1,
                data.item_category[item],
            ),
            len(repeat.category_interval) - 1,
        )
    ]
    due_ratio = np.divide(since_buy, interval, out=np.full(n, np.nan), where=interval > 0)
    shares = category_shares(data, members, 30.0)
    cat = data.item_category[item].astype(np.int64)
    cat_share = (
        np.asarray(shares[pos, np.maximum(cat, 0)]).ravel()
        if data.n_categories and n
        else np.zeros(n)
    )
    cat_share = np.where(cat >= 0, cat_share, np.nan)
    member_baskets = np.zeros(len(members))
    member_items = np.zeros(len(members))
    if len(rows):
        bpos = rpos[buy]
        grp = bpos[distinct_pairs(bpos, data.group[rows][buy])]
        member_baskets = np.bincount(grp, minlength=len(members)).astype(np.float64)
        it = rpos[distinct_pairs(rpos, data.item[rows])]
        member_items = np.bincount(it, minlength=len(members)).astype(np.float64)
    band = stats.band
    member_band = np.full(len(members), -1.0)
    b = band[data.item[rows]]
    ok = b >= 0
    if ok.any():
        sums = np.bincount(rpos[ok], weights=b[ok], minlength=len(members))
        cnt = np.bincount(rpos[ok], minlength=len(members))
        member_band = np.divide(sums, cnt, out=np.full(len(members), -1.0), where=cnt > 0)
    band_match = np.where(
        (band[item] >= 0) & (member_band[pos] >= 0), -np.abs(band[item] - member_band[pos]), np.nan
    )
    own = own_pairs(data, members, pos, item)
    tifu = personal_vectors(
        data, members, half_life=repeat.half_life, basket_decay=repeat.basket_decay
    )
    pair_tifu = np.asarray(tifu[pos, item]).ravel() if n else np.zeros(0)
    own_interval = np.divide(
        own.last - own.first,
        own.baskets - 1.0,
        out=np.full(n, np.nan),
        where=own.baskets > 1,
    )
    own_due = np.divide(
        now - own.last, own_interval, out=np.full(n, np.nan), where=own_interval > 0
    )
    pair_share = np.divide(
        own.baskets,
        own.member_baskets[pos],
        out=np.zeros(n),
        where=own.member_baskets[pos] > 0,
    )
    cols += [
        pair_baskets,
        pair_weight,
        since_buy,
        now - last_seen,
        due_ratio,
        np.log1p(stats.popularity[item]),
        np.log1p(stats.buyers[item]),
        stats.rebuy_share[item],
        repeat.rebuy_rate(data, item),
        cat_share,
        member_baskets[pos],
        member_items[pos],
        band_match,
        pair_share,
        pair_tifu,
        own.baskets_since,
        own_interval,
        own_due,
        own.member_basket_size[pos],
        own.member_repeat_ratio[pos],
    ]
    return _stack(cols, n)


def _stack(cols: list[FloatArray], n: int) -> npt.NDArray[np.float32]:
    """Columns as one float32 matrix, filled column by column (Fortran order: each column is
    contiguous, several times faster than ``np.column_stack`` on millions of rows)."""
    x = np.empty((n, len(cols)), np.float32, order="F")
    for j, col in enumerate(cols):
        x[:, j] = col
    return x


def _normalized(pos: IntArray, score: FloatArray, n_pos: int) -> FloatArray:
    """Each score divided by the member's best score of that source (0 where absent)."""
    best = np.zeros(n_pos)
    np.maximum.at(best, pos, score)
    return np.divide(score, best[pos], out=np.zeros_like(score), where=best[pos] > 0)


def fallback_scores(pos: IntArray, source_scores: dict[str, FloatArray], n_pos: int) -> FloatArray:
    """The documented fallback blend: ``Σ_s FALLBACK_WEIGHTS[s] * score_s / best_s(member)``."""
    total = np.zeros(len(pos))
    for s, w in FALLBACK_WEIGHTS.items():
        total += w * _normalized(pos, source_scores[s], n_pos)
    return total


def source_tables(
    by_source: dict[str, Candidates], n_items: int
) -> tuple[IntArray, IntArray, dict[str, FloatArray], dict[str, FloatArray], dict[str, Candidates]]:
    """The union of all sources' candidates with each source's score and rank per pair.

    Returns ``pos, item, scores, ranks, aligned`` where ``aligned[s]`` holds source ``s``'s
    reason arguments for every union pair (``arg = -2`` where ``s`` did not propose it).
    Ranks are 1-based; absent pairs get rank ``max + 1`` of that source and score 0.
    """
    keys = [c.pos * n_items + c.item for c in by_source.values() if len(c)]
    union = sorted_unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
    pos, item = union // n_items, union % n_items
    scores: dict[str, FloatArray] = {}
    ranks: dict[str, FloatArray] = {}
    aligned: dict[str, Candidates] = {}
    for s in SOURCES:
        cand = by_source.get(s, Candidates.empty())
        sc = np.zeros(len(union))
        rk = np.full(len(union), 1000.0)
        arg = np.full(len(union), -2, np.int64)
        arg2 = np.zeros(len(union))
        if len(cand):
            idx = np.searchsorted(union, cand.pos * n_items + cand.item)
            # Candidates come sorted by member then score: rank = position within member.
            starts = np.flatnonzero(np.r_[True, cand.pos[1:] != cand.pos[:-1]])
            within = np.arange(len(cand)) - np.repeat(starts, np.diff(np.r_[starts, len(cand)]))
            sc[idx] = cand.score
            rk[idx] = within + 1
            arg[idx] = cand.arg
            arg2[idx] = cand.arg2
        scores[s] = sc
        ranks[s] = rk
        aligned[s] = Candidates(pos, item, sc, arg, arg2)
    return pos, item, scores, ranks, aligned


#: Candidate sets smaller than this many rows are boosted on one thread whatever ``threads``
#: says. LightGBM's OpenMP threads meet at a barrier several times per boosting round; on a
#: machine whose cores are busy with other work (a build beside tests, a shared server) a
#: second thread waits there for a core, spinning: on the 20 k-member demo (146 k rows, load
#: 14 on 2 cores) 38 rounds took 38-54 s wall and 11-17 s CPU on two threads against 5.7 s
#: wall and 1.6 s CPU on one (docs/performance.md). Above it the work per round is large
#: enough for the threads to pay.
PARALLEL_TRAINING_ROWS = 1_000_000


class Ranker:
    """LightGBM LambdaRank over :data:`FEATURES`, or the fallback blend when untrained."""

    def __init__(
        self,
        *,
        min_groups: int = 50,
        rounds: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        seed: int = 7,
        threads: int = 2,
    ) -> None:
        self.min_groups = min_groups
        self.rounds = rounds
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.seed = seed
        self.threads = threads
        self.booster: lgb.Booster | None = None
        self.train_info: dict[str, float] = {}

    @property
    def kind(self) -> str:
        """``"lambdarank"`` when a model was trained, else ``"fallback"``."""
        return "lambdarank" if self.booster is not None else "fallback"

    def train(self, x: npt.NDArray[np.float32], y: npt.NDArray[np.float32], pos: IntArray) -> bool:
        """Train on candidate rows grouped by member (``pos`` sorted); False if too little data.

        Members without any bought candidate carry no ranking signal and are dropped; a fifth
        of the members (every fifth) is held out to stop boosting when NDCG@10 stops improving.
        Fewer than :data:`PARALLEL_TRAINING_ROWS` rows train on one thread.
        """
        self.booster = None
        if len(pos) == 0:
            return False
        starts = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])
        sizes = np.diff(np.r_[starts, len(pos)])
        has_pos = np.add.reduceat(y, starts) > 0
        n_groups = int(has_pos.sum())
        self.train_info = {"groups": float(n_groups), "rows": float(len(pos))}
        if n_groups < self.min_groups:
            return False
        keep_row = np.repeat(has_pos, sizes)
        valid_group = np.arange(len(starts)) % 5 == 4
        valid_row = np.repeat(valid_group, sizes)
        params: dict[str, Any] = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [10, 20],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": 50,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambdarank_truncation_level": 30,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.threads if len(pos) >= PARALLEL_TRAINING_ROWS else 1,
            "verbosity": -1,
        }
        tr = keep_row & ~valid_row
        va = keep_row & valid_row
        train_set = lgb.Dataset(
            x[tr], y[tr], group=sizes[has_pos & ~valid_group], feature_name=list(FEATURES)
        )
        valid_sets = [train_set]
        callbacks: list[Callable[..., Any]] = []
        if va.any():
            valid = lgb.Dataset(
                x[va], y[va], group=sizes[has_pos & valid_group], reference=train_set
            )
            valid_sets = [valid]
            callbacks = [lgb.early_stopping(30, first_metric_only=True, verbose=False)]
        self.booster = lgb.train(
            params,
            train_set,
            num_boost_round=self.rounds,
            valid_sets=valid_sets,
            callbacks=callbacks,
        )
        self.train_info["rounds"] = float(self.booster.best_iteration or self.rounds)
        return True

    def score(
        self,
        x: npt.NDArray[np.float32],
        pos: IntArray,
        source_scores: dict[str, FloatArray],
        n_pos: int,
        *,
        threads: int | None = None,
    ) -> FloatArray:
        """Scores of candidate rows: the booster's, or the fallback blend's.

        ``threads``: LightGBM's prediction threads (default: the booster's own setting).
        """
        if self.booster is None:
            return fallback_scores(pos, source_scores, n_pos)
        if len(x) == 0:
            return np.zeros(0)
        extra: dict[str, Any] = {} if threads is None else {"num_threads": threads}
        pred = self.booster.predict(x, num_iteration=self.booster.best_iteration or None, **extra)
        return np.asarray(pred, np.float64)

    def model_text(self) -> str | None:
        """The booster in LightGBM's text format (None for the fallback)."""
        if self.booster is None:
            return None
        return str(self.booster.model_to_string(num_iteration=self.booster.best_iteration or -1))

    def load_text(self, text: str | None) -> None:
        """Restore a booster written by :meth:`model_text`."""
        self.booster = lgb.Booster(model_str=text) if text else None
