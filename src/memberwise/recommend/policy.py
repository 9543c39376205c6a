"""The own-history policy: the member's own purchases first, then popular items, with the
repeat-versus-explore balance learned from the platform's data.

This is the "best baseline blend" the build publishes when the learned ranker does not beat
the simple own-history baselines on the build's time split (see ``stage.py``). For a member ×
item candidate it scores::

    own     = ((1 - recency) * baskets / member's max baskets + recency * 0.5 ** (since / half))
              * (category re-buy rate / best rate) ** category_power        (own items only)
    score   = own + explore * popular score / member's best popular score

``recency`` trades frequency for recency (0: own most frequent, 1: own most recent),
``category_power`` lets categories that are re-bought more keep their own items (per
category, from the data: consumables high, durables low) and ``explore`` how far popular
items come up between own items (0: own then popular). The three are chosen on a time split
of the data by :func:`learn` from :data:`GRID`; the simple baselines are points of that grid.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np

from memberwise.recommend.candidates import Candidates, top_per_member
from memberwise.recommend.interactions import FloatArray, IntArray

#: Candidate values of (recency, category_power, explore) tried by :func:`learn`.
GRID: tuple[tuple[float, float, float], ...] = tuple(
    itertools.product((0.0, 0.5, 1.0), (0.0, 1.0), (0.0, 0.3, 1.0))
)
#: A very small weight of the other ordering, so that ties break the same way everywhere.
_TIE = 1e-4


@dataclass(frozen=True)
class OwnHistory:
    """The policy's three learned weights (see the module doc)."""

    recency: float = 0.0
    category_power: float = 0.0
    explore: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """JSON-ready."""
        return asdict(self)

    @property
    def name(self) -> str:
        """``own most frequent`` / ``own most recent`` when the policy is one of the simple
        baselines (then popular items), else ``own-history blend``."""
        if self.category_power == 0.0 and self.explore == 0.0:
            if self.recency == 0.0:
                return "own most frequent, then popular"
            if self.recency == 1.0:
                return "own most recent, then popular"
        return "own-history blend"


#: The simple baselines as points of the policy's grid.
OWN_FREQUENT = OwnHistory(0.0, 0.0, 0.0)
OWN_RECENT = OwnHistory(1.0, 0.0, 0.0)


@dataclass(frozen=True)
class PairHistory:
    """Per candidate pair: baskets of the member with the item and time since its last
    purchase (NaN when never bought); per member: the most baskets of any own item."""

    baskets: FloatArray
    since: FloatArray
    member_max: FloatArray


def scores(
    policy: OwnHistory,
    pos: IntArray,
    hist: PairHistory,
    category_rate: FloatArray,
    popular: FloatArray,
    *,
    half_life: float,
) -> FloatArray:
    """The policy's score of each candidate pair (``pos`` indexes the members)."""
    own = hist.baskets > 0
    best_b = np.maximum(hist.member_max[pos], 1.0)
    freq = np.where(own, hist.baskets / best_b, 0.0)
    rec = np.where(own, np.power(0.5, np.nan_to_num(hist.since, nan=0.0) / half_life), 0.0)
    r = policy.recency
    mixed = (1.0 - r) * freq + r * rec
    # Keep the other ordering as a tie-break of the pure baselines.
    mixed = mixed + _TIE * (rec if r < 1.0 else freq)
    top_rate = float(np.max(category_rate, initial=0.0))
    if policy.category_power > 0 and top_rate > 0:
        mixed = mixed * np.power(
            np.clip(category_rate / top_rate, 1e-3, 1.0), policy.category_power
        )
    best_pop = np.zeros(int(pos.max(initial=-1)) + 1)
    if len(pos):
        np.maximum.at(best_pop, pos, popular)
    pop = np.divide(popular, best_pop[pos], out=np.zeros_like(popular), where=best_pop[pos] > 0)
    # At explore 0 popular items only order among themselves, below the own items.
    return np.where(own, mixed, 0.0) + (policy.explore + _TIE) * pop


def _metrics_at(
    pos: IntArray, item: IntArray, score: FloatArray, truth: dict[int, IntArray], k: int
) -> tuple[float, float]:
    """Mean Recall@k and NDCG@k (binary gains) of the scored pairs over the members in
    ``truth`` (keys are positions)."""
    top = top_per_member(
        Candidates(pos, item, score, np.zeros(len(pos), np.int64), np.zeros(len(pos))), k
    )
    starts = np.flatnonzero(np.r_[True, top.pos[1:] != top.pos[:-1]]) if len(top) else top.pos
    rank = np.arange(len(top)) - np.repeat(starts, np.diff(np.r_[starts, len(top)])) + 1
    members = np.array(sorted(truth), np.int64)
    if len(members) == 0:
        return 0.0, 0.0
    t_pos = np.repeat(members, [len(truth[int(m)]) for m in members])
    t_item = np.concatenate([truth[int(m)] for m in members]).astype(np.int64)
    width = int(max(item.max(initial=0), t_item.max(initial=0))) + 1
    hit = np.isin(top.pos * width + top.item, t_pos * width + t_item)
    n_pos = int(max(members.max(), pos.max(initial=0))) + 1
    hits = np.bincount(top.pos[hit], minlength=n_pos)[members]
    dcg = np.bincount(top.pos[hit], weights=1.0 / np.log2(rank[hit] + 1.0), minlength=n_pos)
    sizes = np.array([len(truth[int(m)]) for m in members], np.float64)
    discounts = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    ideal = discounts[np.minimum(sizes, k).astype(np.int64) - 1]
    return float(np.mean(hits / sizes)), float(np.mean(dcg[members] / ideal))


@dataclass(frozen=True)
class Trial:
    """One grid point's Recall@10 and NDCG@10 on the split."""

    policy: OwnHistory
    recall: float
    ndcg: float


def learn(
    pos: IntArray,
    item: IntArray,
    hist: PairHistory,
    category_rate: FloatArray,
    popular: FloatArray,
    truth: dict[int, IntArray],
    *,
    half_life: float,
    k: int = 10,
) -> tuple[OwnHistory, list[Trial]]:
    """The grid point with the best Recall@k (then NDCG@k) on candidates of a time split:
    ``truth`` maps candidate positions to what the member bought after the split. Ties keep
    the simpler policy (earlier in :data:`GRID`)."""
    trials: list[Trial] = []
    for recency, power, explore in GRID:
        policy = OwnHistory(recency, power, explore)
        s = scores(policy, pos, hist, category_rate, popular, half_life=half_life)
        recall, ndcg = _metrics_at(pos, item, s, truth, k)
        trials.append(Trial(policy, recall, ndcg))
    best = max(trials, key=lambda t: (round(t.recall, 9), round(t.ndcg, 9)))
    return best.policy, trials
