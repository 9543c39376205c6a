"""Metric functions with hand-computed values, and the baselines on a tiny basket history."""

from __future__ import annotations

import math

import numpy as np
import pytest

from memberwise.recommend.evaluate import (
    Lists,
    Truth,
    coverage_at_k,
    evaluate,
    global_popular,
    hit_rate_at_k,
    ndcg_at_k,
    own_frequent,
    own_recent,
    own_then_popular,
    recall_at_k,
    repeat_share_at_k,
)
from memberwise.recommend.interactions import from_baskets
from memberwise.recommend.model import RecommenderConfig

# Member 0 is shown [1, 2, 3, 4] and bought {2, 4, 9}; member 1 is shown [5, 6, 7], bought {8}.
LISTS = Lists.from_python([[1, 2, 3, 4], [5, 6, 7]])
TRUTH = Truth.from_python([[2, 4, 9], [8]])


def test_recall_is_hits_over_basket_size_averaged_over_members() -> None:
    assert recall_at_k(LISTS, TRUTH, 2) == pytest.approx((1 / 3 + 0) / 2)
    assert recall_at_k(LISTS, TRUTH, 4) == pytest.approx((2 / 3 + 0) / 2)


def test_ndcg_uses_binary_gains_and_the_ideal_of_min_truth_k() -> None:
    at2 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(LISTS, TRUTH, 2) == pytest.approx(at2 / 2)
    at4 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    assert ndcg_at_k(LISTS, TRUTH, 4) == pytest.approx(at4 / 2)
    assert ndcg_at_k(LISTS, TRUTH, 2) == pytest.approx(0.1934264036172708)


def test_hit_rate_coverage_and_repeat_share() -> None:
    assert hit_rate_at_k(LISTS, TRUTH, 1) == 0.0
    assert hit_rate_at_k(LISTS, TRUTH, 2) == 0.5
    assert coverage_at_k(LISTS, 2, 10) == 0.4  # items 1, 2, 5, 6 of 10
    bought = Truth.from_python([[1], []])
    assert repeat_share_at_k(LISTS, bought, 2) == 0.25  # (0, 1) of 4 rows


def test_members_without_truth_are_not_averaged() -> None:
    truth = Truth.from_python([[2], []])
    assert recall_at_k(LISTS, truth, 2) == 1.0
    assert ndcg_at_k(LISTS, truth, 2) == pytest.approx(1 / math.log2(3))


def test_baselines_on_a_tiny_history() -> None:
    data = from_baskets({"u1": [["a", "b"], ["a"], ["c"]], "u2": [["b"], ["b", "d"]]})
    members = np.array([0, 1])
    names = data.item_ids

    def as_names(lists: Lists) -> list[list[str]]:
        return [names[lists.item[lists.pos == p]].tolist() for p in range(2)]

    # Basket counts: a 2, b 3, c 1, d 1 (ties by item).
    assert as_names(global_popular(data, 2, 3)) == [["b", "a", "c"], ["b", "a", "c"]]
    # u1: a twice, then c (more recent than b), then b.
    assert as_names(own_frequent(data, members, 3)) == [["a", "c", "b"], ["b", "d"]]
    assert as_names(own_then_popular(data, members, 4)) == [
        ["a", "c", "b", "d"],
        ["b", "d", "a", "c"],
    ]
    # u1: c (last basket), then a (basket 2, before b's basket 1); u2: b and d both in its
    # last basket, b bought twice.
    assert as_names(own_recent(data, members, 3)) == [["c", "a", "b"], ["b", "d"]]


def test_evaluate_reports_every_method_at_every_k() -> None:
    baskets = {f"u{u}": [[f"i{u % 3}", f"j{u % 2}"] for b in range(4)] for u in range(30)}
    data = from_baskets(baskets)
    history, labels = data.split_last()
    cfg = RecommenderConfig(als_factors=4, als_iterations=3, threads=1, use_ranker=False)
    scores, timings = evaluate(history, labels, (1, 2), config=cfg)
    methods = {s.method for s in scores}
    assert "blend (fallback)" in methods
    assert {
        "baseline: global popular",
        "baseline: own most frequent",
        "baseline: own most recent",
        "baseline: own then popular",
    } <= methods
    # The own-history policy through the same rank() path (its weights by default here: too
    # few members to learn them).
    assert "policy: own most frequent, then popular" in methods
    assert "source: repeat" in methods and "source: als" in methods
    own = next(s for s in scores if s.method == "baseline: own most frequent" and s.k == 2)
    # Each member re-buys both of their items: own frequent finds the whole next basket.
    assert own.recall == 1.0
    assert own.repeat_share == 1.0
    assert set(timings) == {"fit", "recommend"}


def test_evaluate_command_refuses_a_bad_k() -> None:
    from typer.testing import CliRunner

    from memberwise.recommend.commands import app

    result = CliRunner().invoke(app, ["evaluate", "--k", "ten"])
    assert result.exit_code == 2
    assert "not a list of integers" in result.output
