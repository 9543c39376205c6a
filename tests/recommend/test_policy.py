"""The own-history policy: scores, the grid search, and the build's choice against the ranker."""

from __future__ import annotations

import numpy as np
import pytest

from memberwise.recommend.evaluate import Scores
from memberwise.recommend.policy import (
    GRID,
    OWN_FREQUENT,
    OWN_RECENT,
    OwnHistory,
    PairHistory,
    learn,
    scores,
)
from memberwise.recommend.stage import choose

# One member (position 0), four candidates: items 0-2 bought before, item 3 only popular.
POS = np.zeros(4, np.int64)
ITEM = np.arange(4, dtype=np.int64)
HIST = PairHistory(
    baskets=np.array([5.0, 1.0, 2.0, 0.0]),
    since=np.array([30.0, 0.0, 10.0, np.nan]),
    member_max=np.array([5.0]),
)
RATE = np.array([0.9, 0.9, 0.02, 0.5])
POPULAR = np.array([0.0, 1.0, 2.0, 10.0])


def _order(policy: OwnHistory) -> list[int]:
    s = scores(policy, POS, HIST, RATE, POPULAR, half_life=10.0)
    return [int(i) for i in np.argsort(-s, kind="stable")]


def test_own_most_frequent_then_popular() -> None:
    assert _order(OWN_FREQUENT) == [0, 2, 1, 3]
    assert OWN_FREQUENT.name == "own most frequent, then popular"


def test_own_most_recent_then_popular() -> None:
    assert _order(OWN_RECENT) == [1, 2, 0, 3]
    assert OWN_RECENT.name == "own most recent, then popular"


def test_category_power_sinks_items_of_categories_not_rebought() -> None:
    # Item 2's category is re-bought by 2 % of its buyers: it falls below both others.
    assert _order(OwnHistory(0.0, 1.0, 0.0)) == [0, 1, 2, 3]


def test_explore_lifts_popular_items_between_own_ones() -> None:
    # At explore 1, the popular item (normalized 1.0) outranks every own item.
    policy = OwnHistory(0.0, 0.0, 1.0)
    assert _order(policy) == [3, 0, 2, 1]
    assert policy.name == "own-history blend"


def test_learn_finds_recency_when_members_rebuy_their_last_items() -> None:
    # Three members, each with an old favourite (5 baskets, long ago) and a recent item.
    pos = np.repeat(np.arange(3), 3).astype(np.int64)
    item = np.tile(np.array([0, 1, 2]), 3).astype(np.int64)
    hist = PairHistory(
        baskets=np.tile([5.0, 1.0, 0.0], 3),
        since=np.tile([60.0, 1.0, np.nan], 3),
        member_max=np.full(3, 5.0),
    )
    popular = np.tile([0.0, 0.0, 1.0], 3)
    truth = {p: np.array([1]) for p in range(3)}
    best, trials = learn(pos, item, hist, np.full(9, 0.5), popular, truth, half_life=10.0, k=1)
    # Half recency already puts the recent item first; ties keep the earlier grid point.
    assert best == OwnHistory(0.5, 0.0, 0.0)
    assert len(trials) == len(GRID)
    assert max(t.recall for t in trials) == 1.0
    # The frequency-first policy put the favourite first: no hit at k = 1.
    first = next(t for t in trials if t.policy == OWN_FREQUENT)
    assert first.recall == 0.0


def test_learn_finds_exploring_when_members_buy_popular_items() -> None:
    pos = np.repeat(np.arange(2), 2).astype(np.int64)
    item = np.tile(np.array([0, 1]), 2).astype(np.int64)
    hist = PairHistory(
        baskets=np.tile([1.0, 0.0], 2),
        since=np.tile([5.0, np.nan], 2),
        member_max=np.ones(2),
    )
    truth = {0: np.array([1]), 1: np.array([1])}
    best, _ = learn(
        pos, item, hist, np.full(4, 0.5), np.tile([0.0, 1.0], 2), truth, half_life=10.0, k=1
    )
    assert best.explore == 1.0
    assert best.recency == 0.0 and best.category_power == 0.0


def _scores(blend: tuple[float, float], policy: tuple[float, float]) -> list[Scores]:
    rows = {
        "blend (lambdarank)": blend,
        "policy: own-history blend": policy,
        "baseline: own most frequent": (0.30, 0.20),
        "baseline: own most recent": (0.25, 0.22),
        "baseline: own then popular": (0.31, 0.19),
        "baseline: global popular": (0.50, 0.50),
    }
    return [Scores(m, 10, r, n, 0.0, 0.0, 0.0, 100) for m, (r, n) in rows.items()]


def test_the_ranker_is_published_only_when_it_beats_the_best_baseline_on_both() -> None:
    won = choose(_scores((0.32, 0.20), (0.0, 0.0)))
    assert (won.method, won.evaluated, won.policy) == ("ranker", "blend (lambdarank)", None)
    assert won.decision == (
        "ranker published: recall@10 0.3200, ndcg@10 0.2000 beat the best own-history "
        "baseline (own then popular recall@10 0.3100, ndcg@10 0.1900)"
    )


@pytest.mark.parametrize("blend", [(0.32, 0.18), (0.31, 0.25), (0.20, 0.10)])
def test_a_ranker_not_beating_the_best_baseline_gives_way_to_the_learned_policy(
    blend: tuple[float, float],
) -> None:
    chosen = choose(_scores(blend, (0.31, 0.21)))
    assert chosen.method == "own_history"
    assert chosen.evaluated == "policy: own-history blend"
    assert chosen.learn and chosen.policy is None
    assert "did not beat the best own-history baseline (own then popular" in chosen.decision
    assert chosen.decision.endswith(
        "published the learned own-history blend (recall@10 0.3100, ndcg@10 0.2100)"
    )


def test_when_the_learned_policy_is_worse_the_best_baseline_itself_is_published() -> None:
    chosen = choose(_scores((0.20, 0.10), (0.29, 0.30)))
    assert (chosen.method, chosen.evaluated) == ("own_history", "baseline: own then popular")
    assert chosen.policy == OWN_FREQUENT and not chosen.learn
    assert chosen.decision.endswith("published that baseline (own most frequent, then popular)")
