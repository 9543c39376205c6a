"""Candidate sources: each proposes, for a batch of members, its best items with a score.

Every source is a small class with ``fit(data)``, ``candidates(data, members, c)`` (at most
``c`` items per member, best first) and ``state()`` / ``from_state()`` (NumPy arrays and JSON
scalars, saved without pickle). A candidate carries two reason arguments, ``arg`` and ``arg2``,
that :mod:`memberwise.recommend.model` turns into a sentence (the anchor item of "people who
bought X", the interval of "bought every 2 weeks", the category of "popular in 母婴 near you").

Sources: :class:`RepeatSource` (the member's own purchases, recency-decayed, with re-buy
behaviour learned per category), :class:`AlsSource` (``implicit`` ALS), :class:`CoocSource`
(items bought in the same basket or viewed in the same session), :class:`PopularSource`
(popular in the member's top categories, region and price band), :class:`NewArrivalsSource`
and :class:`NeighboursSource` (TIFU-KNN's neighbour smoothing of personal item frequencies).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from memberwise.recommend.interactions import (
    EVENT_WEIGHTS,
    KINDS,
    PURCHASE,
    BoolArray,
    FloatArray,
    IntArray,
    Interactions,
    distinct_pairs,
    first_of_runs,
)

State = dict[str, npt.NDArray[Any]]


@dataclass
class Candidates:
    """Proposed (member, item) pairs of one source: ``pos`` indexes the batch's members."""

    pos: IntArray
    item: IntArray
    score: FloatArray
    arg: IntArray
    arg2: FloatArray

    @classmethod
    def empty(cls) -> Candidates:
        """No candidates."""
        z = np.zeros(0, np.int64)
        return cls(z, z.copy(), np.zeros(0), z.copy(), np.zeros(0))

    def __len__(self) -> int:
        return len(self.pos)

    def take(self, index: IntArray | BoolArray) -> Candidates:
        """The selected rows."""
        return Candidates(
            self.pos[index], self.item[index], self.score[index], self.arg[index], self.arg2[index]
        )


def top_per_member(cands: Candidates, c: int) -> Candidates:
    """The ``c`` best-scored candidates of each member, sorted by member then score (ties by
    item id, so results do not depend on input order)."""
    if len(cands) == 0:
        return cands
    within = _within_top(cands, c)
    if within is not None:
        cands = cands.take(within)
    order = np.lexsort((cands.item, -cands.score, cands.pos))
    sorted_ = cands.take(order)
    starts = np.flatnonzero(np.r_[True, sorted_.pos[1:] != sorted_.pos[:-1]])
    rank = np.arange(len(sorted_)) - np.repeat(starts, np.diff(np.r_[starts, len(sorted_)]))
    return sorted_.take(rank < c)


def _within_top(cands: Candidates, c: int) -> IntArray | None:
    """Rows that can be among their member's ``c`` best: those scoring at least the member's
    ``c``-th best score (ties at it included, so the sort after them picks exactly what a sort
    of all rows would). None when nothing is cut or the shortcut does not apply (rows not
    grouped by member, or NaN scores).

    ``np.partition`` of a members × list-length block finds every member's ``c``-th best in
    linear time, so the three-key sort runs on about ``c`` rows per member instead of all of
    them (co-occurrence proposes up to 600 per member for 50 kept). Members are blocked by
    list length (within a factor of two), so a long list does not pad every short one.
    """
    pos, score = cands.pos, cands.score
    n = len(pos)
    if c < 1 or n <= c or not bool(np.all(pos[1:] >= pos[:-1])):
        return None
    starts = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])
    counts = np.diff(np.r_[starts, n])
    long = counts > c
    if not long.any() or bool(np.isnan(score).any()):
        return None
    threshold = np.full(len(starts), -np.inf)
    size_class = np.ceil(np.log2(np.maximum(counts, 1))).astype(np.int64)
    for b in np.unique(size_class[long]).tolist():
        groups = np.flatnonzero(long & (size_class == b))
        lens = counts[groups]
        width = int(lens.max())
        row = np.repeat(np.arange(len(groups)), lens)
        offset = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        block = np.full((len(groups), width), -np.inf)
        block[row, offset] = score[np.repeat(starts[groups], lens) + offset]
        threshold[groups] = np.partition(block, width - c, axis=1)[:, width - c]
    group = np.repeat(np.arange(len(starts)), counts)
    return np.flatnonzero(score >= threshold[group])


def dense_top(pos: IntArray, scores: FloatArray, c: int, *, positive: bool = True) -> Candidates:
    """The ``c`` best positive entries of each row of a dense score block (row ``r`` belongs to
    member position ``pos[r]``), sorted by member then score, ties by column."""
    k = min(c, scores.shape[1])
    if k == 0 or len(pos) == 0:
        return Candidates.empty()
    if k < scores.shape[1]:
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        top = np.tile(np.arange(scores.shape[1]), (len(pos), 1))
    val = np.take_along_axis(scores, top, 1)
    order = np.lexsort((top, -val))  # along each row: best first, ties by column
    top = np.take_along_axis(top, order, 1)
    val = np.take_along_axis(val, order, 1)
    p = np.repeat(pos, k)
    keep = val.ravel() > 0 if positive else np.ones(val.size, bool)
    z = np.full(int(keep.sum()), -1, np.int64)
    return Candidates(
        p[keep].astype(np.int64),
        top.ravel()[keep].astype(np.int64),
        val.ravel()[keep].astype(np.float64),
        z,
        np.zeros(len(z)),
    )


def member_rows(data: Interactions, members: IntArray) -> tuple[IntArray, IntArray]:
    """Row indices of the given members' events and each row's position in ``members``.

    Members with row number -1 (unknown) have no rows.
    """
    starts = data.member_starts()
    known = members >= 0
    m = np.where(known, members, 0)
    lo = np.where(known, starts[m], 0)
    hi = np.where(known, starts[m + 1], 0)
    counts = hi - lo
    pos = np.repeat(np.arange(len(members)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(lo, counts) + offsets, pos


def _group_sum(
    pos: IntArray, item: IntArray, value: FloatArray, n_pos: int, n_items: int
) -> sp.csr_matrix:
    """Sum of ``value`` per (pos, item) as a CSR matrix (duplicates add up)."""
    return sp.csr_matrix(
        (value.astype(np.float64), (pos, item)), shape=(n_pos, n_items), dtype=np.float64
    )


def _from_csr(mat: sp.csr_matrix) -> tuple[IntArray, IntArray, FloatArray]:
    coo = mat.tocoo()
    keep = coo.data != 0
    return (
        coo.row[keep].astype(np.int64),
        coo.col[keep].astype(np.int64),
        coo.data[keep].astype(np.float64),
    )


def decay_weights(
    data: Interactions, rows: IntArray, half_life: float, basket_decay: float
) -> FloatArray:
    """Recency weight of event rows: ``0.5 ** (age / half_life)`` in days, or
    ``basket_decay ** baskets_ago`` in baskets (TIFU-KNN's time decay)."""
    age = data.now[data.member[rows]] - data.ts[rows]
    if data.unit == "basket":
        return np.power(basket_decay, np.maximum(age - 1.0, 0.0))
    return np.power(0.5, np.maximum(age, 0.0) / half_life)


def personal_vectors(
    data: Interactions, members: IntArray, *, half_life: float, basket_decay: float
) -> sp.csr_matrix:
    """Each member's recency-decayed share of baskets containing each item (TIFU-KNN's user
    vector): ``Σ_b w_b x_b / Σ_b w_b`` over the member's purchase baskets ``x_b``."""
    rows, pos = member_rows(data, members)
    buy = data.is_purchase[rows]
    rows, pos = rows[buy], pos[buy]
    # One row per (member, basket, item): an item twice in a basket counts once.
    if len(rows):
        # Groups belong to one member, but a member may be asked for twice: key on pos too.
        first = distinct_pairs(
            pos * (int(data.group.max()) + 1) + data.group[rows], data.item[rows]
        )
        rows, pos = rows[first], pos[first]
    w = decay_weights(data, rows, half_life, basket_decay)
    mat = _group_sum(pos, data.item[rows].astype(np.int64), w, len(members), data.n_items)
    # Normalizer: the sum of basket weights per member (each basket once).
    grp = data.group[rows]
    first_of_basket = np.zeros(len(grp), bool)
    if len(grp):
        first_of_basket[distinct_pairs(pos, grp)] = True
    norm = np.bincount(pos[first_of_basket], weights=w[first_of_basket], minlength=len(members))
    scale = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
    return sp.csr_matrix(sp.diags(scale) @ mat)


class Source(ABC):
    """The interface every candidate source keeps."""

    name: ClassVar[str] = ""

    def fit(self, data: Interactions) -> None:
        """Learn what the source needs from the training interactions (default: nothing)."""
        return None

    @abstractmethod
    def candidates(self, data: Interactions, members: IntArray, c: int) -> Candidates:
        """At most ``c`` candidates per member (row numbers; -1 = unknown member)."""

    def state(self) -> State:
        """Learned arrays, for saving."""
        return {}

    def load_state(self, state: State) -> None:
        """Restore the arrays :meth:`state` returned (default: there are none)."""
        return None


# ---------------------------------------------------------------------------------------------
class RepeatSource(Source):
    """The member's own purchases, recency-decayed, weighted by how often they are re-bought.

    ``fit`` learns per category (from the data, not the catalog) the share of buyers who bought
    it again on another basket — consumables high, durables near zero — and the median interval
    between purchases. Items are scored by the member's decayed purchase frequency (TIFU-KNN's
    personal vector) times the category's re-buy rate; with calendar time, an item whose typical
    interval has elapsed ("due") scores up to twice as high. ``arg`` is the member's number of
    baskets with the item, ``arg2`` the interval (member's own median, else the category's).
    """

    name = "repeat"

    def __init__(
        self, *, half_life: float = 45.0, basket_decay: float = 0.9, min_rebuy_rate: float = 0.08
    ) -> None:
        self.half_life = half_life
        self.basket_decay = basket_decay
        self.min_rebuy_rate = min_rebuy_rate
        self.category_rebuy = np.zeros(1)
        self.category_interval = np.full(1, np.nan)

    def fit(self, data: Interactions) -> None:
        n_cat = data.n_categories
        buy = data.is_purchase
        m, it, t, g = data.member[buy], data.item[buy], data.ts[buy], data.group[buy]
        cat = data.item_category[it]
        cat = np.where(cat < 0, n_cat, cat).astype(np.int64)
        # One row per (member, category, basket): re-buying a category counts across brands.
        first = distinct_pairs(g, cat)
        key = np.stack([m[first].astype(np.int64), cat[first], g[first]], 1)
        bought = np.zeros(n_cat + 1)
        again = np.zeros(n_cat + 1)
        intervals = np.full(n_cat + 1, np.nan)
        if len(key):
            times = np.zeros(len(key))
            # time of each (member, category, basket): the basket's time
            g_time = np.zeros(int(g.max()) + 1)
            g_time[g] = t
            times = g_time[key[:, 2]]
            pair = key[:, 0] * (n_cat + 1) + key[:, 1]
            order = np.lexsort((times, pair))
            pair, times, kc = pair[order], times[order], key[order, 1]
            _, first, counts = np.unique(pair, return_index=True, return_counts=True)
            pair_cat = kc[first]
            np.add.at(bought, pair_cat, 1)
            np.add.at(again, pair_cat, counts > 1)
            same = pair[1:] == pair[:-1]
            gaps = (times[1:] - times[:-1])[same]
            gap_cat = kc[1:][same]
            for c in np.unique(gap_cat):
                intervals[c] = float(np.median(gaps[gap_cat == c]))
        self.category_rebuy = np.divide(again, bought, out=np.zeros_like(again), where=bought > 0)
        # Categories never bought take the overall rate.
        overall = again.sum() / bought.sum() if bought.sum() else 0.0
        self.category_rebuy[bought == 0] = overall
        self.category_interval = intervals

    def consumable(self, data: Interactions, items: IntArray) -> BoolArray:
        """Whether each item's category is re-bought (rate at least ``min_rebuy_rate``)."""
        return np.asarray(self.rebuy_rate(data, items) >= self.min_rebuy_rate)

    def rebuy_rate(self, data: Interactions, items: IntArray) -> FloatArray:
        """The learned re-buy rate of each item's category."""
        cat = data.item_category[items]
        cat = np.where(cat < 0, len(self.category_rebuy) - 1, cat)
        cat = np.minimum(cat, len(self.category_rebuy) - 1)
        return np.asarray(self.category_rebuy[cat])

    def candidates(self, data: Interactions, members: IntArray, c: int) -> Candidates:
        rows, pos = member_rows(data, members)
        buy = data.is_purchase[rows]
        rows, pos = rows[buy], pos[buy]
        if len(rows) == 0:
            return Candidates.empty()
        vec = personal_vectors(
            data, members, half_life=self.half_life, basket_decay=self.basket_decay
        )
        p, it, score = _from_csr(vec)
        # Count of baskets with the item, last purchase time and the member's own median gap.
        items = data.item[rows].astype(np.int64)
        key = pos * data.n_items + items
        order = np.lexsort((data.ts[rows], key))
        k_sorted, t_sorted = key[order], data.ts[rows][order]
        uniq, first, counts = np.unique(k_sorted, return_index=True, return_counts=True)
        last_t = t_sorted[first + counts - 1]
        gaps = np.diff(t_sorted)
        same = k_sorted[1:] == k_sorted[:-1]
        gap_key = k_sorted[1:][same]
        own = np.full(len(uniq), np.nan)
        if same.any():
            gi = np.searchsorted(uniq, gap_key)
            g_sorted = np.lexsort((gaps[same], gi))
            gi_s, gv = gi[g_sorted], gaps[same][g_sorted]
            starts = np.flatnonzero(np.r_[True, gi_s[1:] != gi_s[:-1]])
            ends = np.r_[starts[1:], len(gi_s)]
            own[gi_s[starts]] = gv[(starts + ends - 1) // 2]
        idx = np.searchsorted(uniq, p * data.n_items + it)
        n_buys = counts[idx]
        interval = own[idx]
        cat = data.item_category[it]
        cat = np.where(cat < 0, len(self.category_interval) - 1, cat)
        interval = np.where(np.isnan(interval), self.category_interval[cat], interval)
        rate = self.rebuy_rate(data, it)
        score = score * (0.05 + rate)
        if data.unit == "day":
            elapsed = data.now[members[p]] - last_t[idx]
            due = np.where(
                np.isnan(interval) | (interval <= 0),
                0.0,
                np.exp(-0.5 * ((elapsed - interval) / np.maximum(interval, 1.0)) ** 2),
            )
            score = score * (1.0 + due)
        return top_per_member(
            Candidates(p, it, score, n_buys.astype(np.int64), interval.astype(np.float64)), c
        )

    def state(self) -> State:
        return {
            "category_rebuy": self.category_rebuy,
            "category_interval": self.category_interval,
        }

    def load_state(self, state: State) -> None:
        self.category_rebuy = state["category_rebuy"]
        self.category_interval = state["category_interval"]


# ---------------------------------------------------------------------------------------------
class AlsSource(Source):
    """Collaborative filtering: ``implicit``'s CPU ALS on event-type-weighted interactions.

    Confidence is ``1 + alpha * log1p(weight sum)`` (Hu, Koren & Volinsky 2008, with the log
    scaling of their section 4). Members are scored against the ``pool`` most interacted items
    only, which bounds scoring at scale; own items are not filtered (re-buys are real answers).
    """

    name = "als"

    def __init__(
        self,
        *,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 2.0,
        iterations: int = 15,
        seed: int = 7,
        threads: int = 2,
        pool: int = 20_000,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.threads = threads
        self.pool = pool
        self.user_factors = np.zeros((0, factors), np.float32)
        self.item_factors = np.zeros((0, factors), np.float32)
        self.pool_items = np.zeros(0, np.int64)
        self._pool_factors: npt.NDArray[np.float32] | None = None

    def fit(self, data: Interactions) -> None:
        self.fit_from(data, None, self.iterations)

    def fit_from(self, data: Interactions, start: AlsSource | None, iterations: int) -> None:
        """Fit with ``iterations`` sweeps starting from ``start``'s factors (same members and
        items, e.g. fitted on the history before a time split) instead of random ones: the
        factors of a nearly identical matrix are already close, so a few sweeps converge."""
        from implicit.cpu.als import AlternatingLeastSquares

        mat = data.matrix()
        mat.data = np.log1p(mat.data).astype(np.float32)
        # implicit parallelizes itself; a BLAS thread pool underneath only oversubscribes (and
        # implicit warns about it when the model is made, so the limit covers that too).
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=iterations,
                random_state=self.seed,
                num_threads=self.threads,
                calculate_training_loss=False,
            )
            if (
                start is not None
                and start.user_factors.shape == (data.n_members, self.factors)
                and start.item_factors.shape == (data.n_items, self.factors)
            ):
                model.user_factors = start.user_factors.copy()
                model.item_factors = start.item_factors.copy()
            model.fit(mat.tocsr(), show_progress=False)
        self.user_factors = np.asarray(model.user_factors, np.float32)
        self.item_factors = np.asarray(model.item_factors, np.float32)
        counts = np.asarray((mat > 0).sum(axis=0)).ravel()
        order = np.lexsort((np.arange(len(counts)), -counts))
        self.pool_items = np.sort(
            order[: min(self.pool, len(order))][counts[order[: self.pool]] > 0]
        )
        self._pool_factors = None

    def candidates(self, data: Interactions, members: IntArray, c: int) -> Candidates:
        known = np.flatnonzero(members >= 0)
        if len(known) == 0 or len(self.pool_items) == 0:
            return Candidates.empty()
        from implicit.cpu.topk import topk

        k = min(c, len(self.pool_items))
        if k == 0:
            return Candidates.empty()
        if self._pool_factors is None or len(self._pool_factors) != len(self.pool_items):
            self._pool_factors = np.ascontiguousarray(self.item_factors[self.pool_items])
        # implicit's top-k (a BLAS product per block of members, then a heap per row in C++,
        # without the GIL) is about 5x cheaper than NumPy's argpartition over the whole
        # members × pool score block. One thread: the recommender scores batches concurrently.
        query = np.ascontiguousarray(self.user_factors[members[known]])
        ids, val = topk(self._pool_factors, query, k, num_threads=1)
        # Best first, ties by item (as every source's candidates are ordered).
        order = np.lexsort((ids, -val), axis=1)
        ids = np.take_along_axis(ids, order, 1)
        val = np.take_along_axis(val, order, 1)
        z = np.full(ids.size, -1, np.int64)
        return Candidates(
            np.repeat(known, k).astype(np.int64),
            self.pool_items[ids.ravel()].astype(np.int64),
            val.ravel().astype(np.float64),
            z,
            np.zeros(len(z)),
        )

    def state(self) -> State:
        return {
            "user_factors": self.user_factors,
            "item_factors": self.item_factors,
            "pool_items": self.pool_items,
        }

    def load_state(self, state: State) -> None:
        self.user_factors = state["user_factors"]
        self.item_factors = state["item_factors"]
        self.pool_items = state["pool_items"]
        self._pool_factors = None


# ---------------------------------------------------------------------------------------------
class CoocSource(Source):
    """Item-to-item co-occurrence within purchase baskets and browsing sessions.

    ``fit`` counts, over groups (a basket counts ``basket_weight`` times a session), how often
    two items appear together, normalizes by the items' counts (cosine, so best-sellers do not
    neighbour everything) and keeps each item's ``k`` nearest neighbours. A member's candidates
    are the neighbours of their last ``anchors`` distinct items, each anchor weighted by event
    type and recency; ``arg`` is the anchor that contributes most ("people who bought X also
    bought this") and ``arg2`` is 1.0 when that anchor was bought.
    """

    name = "cooc"

    def __init__(
        self,
        *,
        k: int = 30,
        anchors: int = 20,
        basket_weight: float = 3.0,
        max_group: int = 50,
        half_life: float = 30.0,
        basket_decay: float = 0.8,
    ) -> None:
        self.k = k
        self.anchors = anchors
        self.basket_weight = basket_weight
        self.max_group = max_group
        self.half_life = half_life
        self.basket_decay = basket_decay
        self.neighbours = sp.csr_matrix((0, 0), dtype=np.float32)

    def fit(self, data: Interactions) -> None:
        n_items = data.n_items
        if len(data.group) == 0:
            self.neighbours = sp.csr_matrix((n_items, n_items), dtype=np.float32)
            return
        first = distinct_pairs(data.group, data.item)
        grp, item = data.group[first], data.item[first].astype(np.int64)
        _, grp_idx, sizes = np.unique(grp, return_inverse=True, return_counts=True)
        ok = (sizes[grp_idx] >= 2) & (sizes[grp_idx] <= self.max_group)
        purchase_groups = np.zeros(int(grp.max()) + 1, bool)
        purchase_groups[data.group[data.is_purchase]] = True
        w = np.where(purchase_groups[grp], self.basket_weight, 1.0)
        g = sp.csr_matrix(
            (w[ok], (grp_idx[ok], item[ok])),
            shape=(int(grp_idx.max()) + 1, n_items),
            dtype=np.float32,
        )
        gb = g.copy()
        gb.data = np.ones_like(gb.data)
        co = sp.csr_matrix(g.T @ gb)
        co.setdiag(0)
        co.eliminate_zeros()
        count = np.asarray(g.sum(axis=0)).ravel()
        norm = np.sqrt(np.maximum(count, 1.0))
        co = sp.csr_matrix(sp.diags(1.0 / norm) @ co @ sp.diags(1.0 / norm))
        self.neighbours = _top_k_rows(co, self.k)

    def candidates(self, data: Interactions, members: IntArray, c: int) -> Candidates:
        rows, pos = member_rows(data, members)
        if len(rows) == 0 or self.neighbours.nnz == 0:
            return Candidates.empty()
        w = data.weight[rows].astype(np.float64) * decay_weights(
            data, rows, self.half_life, self.basket_decay
        )
        items = data.item[rows].astype(np.int64)
        anchor = _group_sum(pos, items, w, len(members), data.n_items)
        bought = _group_sum(
            pos, items, data.is_purchase[rows].astype(np.float64), len(members), data.n_items
        )
        a_pos, a_item, a_w = _from_csr(anchor)
        keep = top_per_member(
            Candidates(a_pos, a_item, a_w, a_item, np.zeros(len(a_pos))), self.anchors
        )
        a_pos, a_item, a_w = keep.pos, keep.item, keep.score
        nb = self.neighbours
        lens = np.diff(nb.indptr)[a_item]
        starts = nb.indptr[a_item]
        total = int(lens.sum())
        if total == 0:
            return Candidates.empty()
        rep = np.repeat(np.arange(len(a_item)), lens)
        off = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
        nz = np.repeat(starts, lens) + off
        c_pos = a_pos[rep]
        c_item = nb.indices[nz].astype(np.int64)
        contrib = a_w[rep] * nb.data[nz]
        c_anchor = a_item[rep]
        # Sum contributions per (member, item); remember the anchor contributing most (ties:
        # the smallest anchor id). One sort by the pair, then per-run reductions: a sort by
        # (pair, contribution, anchor) cost several times more on millions of rows.
        key = c_pos * data.n_items + c_item
        order = np.argsort(key, kind="stable")
        key, contrib, c_anchor = key[order], contrib[order], c_anchor[order]
        first = first_of_runs(key)
        uniq = key[first]
        total_score = np.add.reduceat(contrib, first)
        run = np.repeat(np.arange(len(first)), np.diff(np.r_[first, len(key)]))
        best = np.maximum.reduceat(contrib, first)
        contender = np.where(contrib == best[run], c_anchor, np.iinfo(np.int64).max)
        best_anchor = np.minimum.reduceat(contender, first)
        pos_u, item_u = uniq // data.n_items, uniq % data.n_items
        was_bought = np.asarray(bought[pos_u, best_anchor]).ravel() > 0
        return top_per_member(
            Candidates(pos_u, item_u, total_score, best_anchor, was_bought.astype(np.float64)), c
        )

    def similar(self, n: int) -> tuple[IntArray, IntArray, FloatArray]:
        """Every item's ``n`` most similar items: (item, similar item, score), best first."""
        p, it, score = _from_csr(self.neighbours)
        z = np.zeros(len(p), np.int64)
        top = top_per_member(Candidates(p, it, score, z, np.zeros(len(p))), n)
        return top.pos, top.item, top.score

    def state(self) -> State:
        nb = self.neighbours
        return {
            "indptr": nb.indptr.astype(np.int64),
            "indices": nb.indices.astype(np.int64),
            "data": nb.data.astype(np.float32),
            "shape": np.array(nb.shape, np.int64),
        }

    def load_state(self, state: State) -> None:
        shape = tuple(int(x) for x in state["shape"])
        self.neighbours = sp.csr_matrix(
            (state["data"], state["indices"], state["indptr"]), shape=shape
        )


def _top_k_rows(mat: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """The ``k`` largest entries of each row (ties by column), as a CSR matrix."""
    mat = sp.csr_matrix(mat)
    rows = np.repeat(np.arange(mat.shape[0]), np.diff(mat.indptr)).astype(np.int64)
    z = np.zeros(len(rows), np.int64)
    top = top_per_member(
        Candidates(
            rows, mat.indices.astype(np.int64), mat.data.astype(np.float64), z, np.zeros(len(z))
        ),
        k,
    )
    return sp.csr_matrix(
        (top.score.astype(np.float32), (top.pos, top.item)), shape=mat.shape, dtype=np.float32
    )


# ---------------------------------------------------------------------------------------------
def category_shares(data: Interactions, members: IntArray, half_life: float) -> sp.csr_matrix:
    """Each member's recency-weighted share of interest per category (rows sum to 1)."""
    rows, pos = member_rows(data, members)
    cat = data.item_category[data.item[rows]].astype(np.int64)
    ok = cat >= 0
    if data.n_categories == 0 or not ok.any():
        return sp.csr_matrix((len(members), max(data.n_categories, 1)))
    w = data.weight[rows].astype(np.float64) * decay_weights(data, rows, half_life, 0.9)
    mat = _group_sum(pos[ok], cat[ok], w[ok], len(members), data.n_categories)
    sums = np.asarray(mat.sum(axis=1)).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sp.csr_matrix(sp.diags(scale) @ mat)


def price_bands(data: Interactions, bands: int = 5) -> IntArray:
    """Each item's price band (0 cheapest .. ``bands - 1``) within its category; -1 unknown."""
    out = np.full(data.n_items, -1, np.int64)
    price = data.item_price
    ok = ~np.isnan(price)
    cat = data.item_category.astype(np.int64)
    for c in np.unique(cat[ok]):
        sel = np.flatnonzero(ok & (cat == c))
        ranks = np.argsort(np.argsort(price[sel], kind="stable"), kind="stable")
        out[sel] = ranks * bands // max(len(sel), 1)
    return out


class PopularSource(Source):
    """Popular items in the member's top categories, near them (region) and in their price band.

    Popularity is the recency-decayed event weight over all members (purchases count most).
    For each of the member's ``top_categories`` categories the ``per_category`` most popular
    items in the member's region (else anywhere) are scored by the member's share of interest
    in the category times the item's popularity relative to the category's best seller, and by
    1.5 when the item is in the member's usual price band. Without categories (Ta-Feng) it is
    global popularity. ``arg`` is the category (-1 none), ``arg2`` 1.0 when regional.
    """

    name = "popular"

    def __init__(
        self, *, half_life: float = 14.0, top_categories: int = 3, per_category: int = 30
    ) -> None:
        self.half_life = half_life
        self.top_categories = top_categories
        self.per_category = per_category
        self.popularity: FloatArray = np.zeros(0)
        self.regional = np.zeros((0, 0))
        self.band = np.zeros(0, np.int64)
        self._tables: dict[tuple[int, int], tuple[IntArray, FloatArray, float]] = {}
        self._cat_order: IntArray | None = None

    def fit(self, data: Interactions) -> None:
        self._tables = {}
        self._cat_order = None
        rows = np.arange(len(data.member))
        w = data.weight.astype(np.float64) * decay_weights(data, rows, self.half_life, 0.95)
        self.popularity = np.bincount(data.item, weights=w, minlength=data.n_items).astype(
            np.float64
        )
        n_regions = len(data.region_ids)
        self.regional = np.zeros((0, data.n_items))
        if n_regions and data.n_categories:
            region = data.member_region[data.member].astype(np.int64)
            ok = region >= 0
            reg = _group_sum(
                region[ok], data.item[ok].astype(np.int64), w[ok], n_regions, data.n_items
            )
            self.regional = reg.toarray()
        self.band = price_bands(data)

    def _table(self, data: Interactions, k: int, r: int) -> tuple[IntArray, FloatArray, float]:
        """Category ``k``'s most popular items in region ``r`` (anywhere when the region has
        fewer than 5 of them, or ``r == -1``), their popularity relative to the first, and 1.0
        when regional. Cached: the same for every batch."""
        cached = self._tables.get((k, r))
        if cached is not None:
            return cached
        if self._cat_order is None or len(self._cat_order) != data.n_items:
            self._cat_order = np.argsort(data.item_category, kind="stable")
        cat_sorted = data.item_category[self._cat_order]
        lo, hi = np.searchsorted(cat_sorted, [k, k + 1])
        items = np.sort(self._cat_order[lo:hi]).astype(np.int64)
        ranked = np.zeros(0, np.int64)
        regional = 0.0
        if r >= 0:
            ranked = self._ranked(self.regional[r][items], items)
            if len(ranked) >= min(5, len(items)):
                scores = self.regional[r][ranked]
                regional = 1.0
            else:
                ranked = np.zeros(0, np.int64)
        if len(ranked) == 0:
            ranked = self._ranked(self.popularity[items], items)
            scores = self.popularity[ranked]
        rel = scores / scores.max() if len(ranked) else np.zeros(0)
        self._tables[(k, r)] = (ranked, rel, regional)
        return ranked, rel, regional

    def _ranked(self, scores: FloatArray, items: IntArray) -> IntArray:
        """``items`` by ``scores`` (best first, ties by item), the first ``per_category``."""
        order = np.lexsort((items, -scores))
        keep = order[: self.per_category]
        return np.asarray(items[keep][scores[keep] > 0])

    def candidates(self, data: Interactions, members: IntArray, c: int) -> Candidates:
        pop = self.popularity
        if data.n_categories == 0 or not (data.item_category >= 0).any():
            items = self._ranked(pop, np.arange(data.n_items))
            if len(items) == 0:
                return Candidates.empty()
            score = pop[items] / pop[items[0]]
            n = len(members)
            pos = np.repeat(np.arange(n), len(items))
            return top_per_member(
                Candidates(
                    pos,
                    np.tile(items, n),
                    np.tile(score, n),
                    np.full(len(pos), -1, np.int64),
                    np.zeros(len(pos)),
                ),
                c,
            )
        shares = category_shares(data, members, self.half_life)
        s_pos, s_cat, s_share = _from_csr(shares)
        top = top_per_member(
            Candidates(s_pos, s_cat, s_share, s_cat, np.zeros(len(s_pos))), self.top_categories
        )
        # Members' usual price band: the median band of the items they bought or carted.
        rows, pos = member_rows(data, members)
        b = self.band[data.item[rows]]
        ok = b >= 0
        member_band = np.full(len(members), -1, np.int64)
        if ok.any():
            order = np.lexsort((b[ok], pos[ok]))
            pb, bb = pos[ok][order], b[ok][order]
            starts = np.flatnonzero(np.r_[True, pb[1:] != pb[:-1]])
            ends = np.r_[starts[1:], len(pb)]
            member_band[pb[starts]] = bb[(starts + ends - 1) // 2]
        region = np.where(members >= 0, data.member_region[np.maximum(members, 0)], -1)
        if self.regional.shape[0] == 0:
            region = np.full(len(members), -1)
        pair_region = region[top.pos].astype(np.int64)
        n_reg = len(data.region_ids) + 1
        pair_key, inverse = np.unique(top.item * n_reg + pair_region + 1, return_inverse=True)
        pairs = np.stack([pair_key // n_reg, pair_key % n_reg - 1], 1)
        inverse = inverse.ravel()
        width = self.per_category
        tab_items = np.full((len(pairs), width), -1, np.int64)
        tab_score = np.zeros((len(pairs), width))
        tab_regional = np.zeros(len(pairs))
        for u, (k, r) in enumerate(pairs.tolist()):
            ranked, rel, regional = self._table(data, int(k), int(r))
            tab_items[u, : len(ranked)] = ranked
            tab_score[u, : len(ranked)] = rel
            tab_regional[u] = regional
        item_of = tab_items[inverse]
        rel = tab_score[inverse]
        p = np.repeat(top.pos, width)
        items_flat = item_of.ravel()
        valid = items_flat >= 0
        safe = np.maximum(items_flat, 0)
        bonus = np.where((member_band[p] >= 0) & (self.band[safe] == member_band[p]), 1.5, 1.0)
        score = np.repeat(top.score, width) * rel.ravel() * bonus
        merged = Candidates(
            p[valid],
            items_flat[valid],
            score[valid],
            np.repeat(top.item, width)[valid],
            np.repeat(tab_regional[inverse], width)[valid],
        )
        return top_per_member(merged, c)

    def state(self) -> State:
        return {"popularity": self.popularity, "band": self.band, "regional": self.regional}

    def load_state(self, state: State) -> None:
        self._tables = {}
        self.popularity = state["popularity"]
        self.band = state["band"]
        self.regional = state["regional"]


def _concat(parts: list[Candidates]) -> Candidates:
    return Candidates(
        np.concatenate([p.pos for p in parts]),
        np.concatenate([p.item for p in parts]),
        np.concatenate([p.score for p in parts]),
        np.concatenate([p.arg for p in parts]),
        np.concatenate([p.arg2 for p in parts]),
    )


# ---------------------------------------------------------------------------------------------
class NewArrivalsSource(Source):
    """Items first seen (or launched) in the last ``days``, in the member's categories.

    Scored by the member's share of interest in the item's category times the item's
    popularity among new items; members without category interest get the most popular new
    items at a tenth of the score. Needs calendar time (none in Ta-Feng). ``arg`` = category.
    """

    name = "new"

    def __init__(self, *, days: float = 14.0) -> None:
        self.days = days
        self.new_items = np.zeros(0, np.int64)
        self.new_score = np.zeros(0)

    def fit(self, data: Interactions) -> None:
        if data.unit != "day" or data.n_items == 0:
            self.new_items = np.zeros(0, np.int64)
            self.new_score = np.zeros(0)
            return
        end = float(data.now.max()) if data.n_members else 0.0
        first = data.item_first_seen
        new = np.flatnonzero(~np.isnan(first) & (first >= end - self.days) & (first <= end))
        pop = np.bincount(data.item, weights=data.weight, minlength=data.n_items)[new]
        order = np.lexsort((new, -pop))
        self.new_items = new[order]
        best = pop[order][0] if len(order) and pop[order][0] > 0 else 1.0
        self.new_score = (pop[order] + 1.0) / (best + 1.0)

    def candidates(self, data: Interactions, members: IntArray, c: int) -> Candidates:
        if len(self.new_items) == 0:
            return Candidates.empty()
        items, score = self.new_items, self.new_score
        cat = data.item_category[items].astype(np.int64)
        parts: list[Candidates] = []
        if data.n_categories and (cat >= 0).any():
            shares = category_shares(data, members, 30.0)
            s_pos, s_cat, s_share = _from_csr(shares)
            order = np.argsort(cat, kind="stable")
            cs = cat[order]
            lo = np.searchsorted(cs, s_cat)
            hi = np.searchsorted(cs, s_cat, side="right")
            lens = hi - lo
            rep = np.repeat(np.arange(len(s_pos)), lens)
            off = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
            idx = order[np.repeat(lo, lens) + off]
            parts.append(
                Candidates(
                    s_pos[rep], items[idx], s_share[rep] * score[idx], cat[idx], np.zeros(len(rep))
                )
            )
        head = min(c, len(items))
        n = len(members)
        parts.append(
            Candidates(
                np.repeat(np.arange(n), head),
                np.tile(items[:head], n),
                np.tile(score[:head] * 0.1, n),
                np.tile(cat[:head], n),
                np.zeros(n * head),
            )
        )
        merged = _concat(parts)
        # A pair proposed twice keeps its best score.
        merged = top_per_member(merged, len(items) + 1)
        key = merged.pos * data.n_items + merged.item
        _, first = np.unique(key, return_index=True)
        return top_per_member(merged.take(np.sort(first)), c)

    def state(self) -> State:
        return {"new_items": self.new_items, "new_score": self.new_score}

    def load_state(self, state: State) -> None:
        self.new_items = state["new_items"]
        self.new_score = state["new_score"]


# ---------------------------------------------------------------------------------------------
class NeighboursSource(Source):
    """TIFU-KNN's neighbour smoothing: the mean personal vector of the ``k`` most similar members.

    Hu, Hu, Lim, Ding: "Modeling Personalized Item Frequency Information for Next-basket
    Recommendation" (SIGIR 2020). Personal vectors are recency-decayed basket frequencies
    (:func:`personal_vectors`); similarity is cosine. Exact search costs members², so it runs
    only up to ``max_members`` members (above that ALS carries the collaborative signal).
    """

    name = "neighbours"

    def __init__(
        self,
        *,
        k: int = 300,
        half_life: float = 45.0,
        basket_decay: float = 0.9,
        max_members: int = 15_000,
        batch: int = 512,
    ) -> None:
        self.k = k
        self.half_life = half_life
        self.basket_decay = basket_decay
        self.max_members = max_members
        self.batch = batch
        self._vectors: sp.csr_matrix | None = None
        self._normed: sp.csr_matrix | None = None
        # Batches are scored in concurrent threads: the first one builds the vectors.
        self._lock = threading.Lock()

    def _prepare(self, data: Interactions) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        with self._lock:
            return self._prepare_locked(data)

    def _prepare_locked(self, data: Interactions) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        if self._vectors is None or self._vectors.shape[0] != data.n_members:
            vec = personal_vectors(
                data,
                np.arange(data.n_members),
                half_life=self.half_life,
                basket_decay=self.basket_decay,
            )
            norms = np.sqrt(np.asarray(vec.multiply(vec).sum(axis=1)).ravel())
            inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
            self._vectors = vec
            self._normed = sp.csr_matrix(sp.diags(inv) @ vec)
        normed = self._normed
        assert normed is not None
        return self._vectors, normed

    def fit(self, data: Interactions) -> None:
        self._vectors = None
        self._normed = None

    def candidates(self, data: Interactions, members: IntArray, c: int) -> Candidates:
        if data.n_members > self.max_members or data.n_members < 2:
            return Candidates.empty()
        vec, normed = self._prepare(data)
        known = np.flatnonzero(members >= 0)
        k = min(self.k, data.n_members - 1)
        out: list[Candidates] = []
        normed_t = sp.csr_matrix(normed.T)
        for lo in range(0, len(known), self.batch):
            b = known[lo : lo + self.batch]
            sims = (normed[members[b]] @ normed_t).toarray()
            sims[np.arange(len(b)), members[b]] = -1.0  # not one's own neighbour
            nn = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            w = np.take_along_axis(sims, nn, 1)
            w = np.where(w > 0, 1.0 / k, 0.0)
            wmat = sp.csr_matrix(
                (w.ravel(), (np.repeat(np.arange(len(b)), k), nn.ravel())),
                shape=(len(b), data.n_members),
            )
            pred = sp.csr_matrix(wmat @ vec).toarray()
            out.append(dense_top(b, pred, c))
        if not out:
            return Candidates.empty()
        return _concat(out)


SOURCE_TYPES: dict[str, type[Source]] = {
    s.name: s
    for s in (
        RepeatSource,
        AlsSource,
        CoocSource,
        PopularSource,
        NewArrivalsSource,
        NeighboursSource,
    )
}

#: Event kinds, re-exported for reason building.
EVENT_KINDS = KINDS
PURCHASE_KIND = PURCHASE
WEIGHTS = EVENT_WEIGHTS
