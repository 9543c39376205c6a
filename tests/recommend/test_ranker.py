"""The ranker: the fallback blend's exact arithmetic, and LambdaRank learning an ordering."""

from __future__ import annotations

import numpy as np
import pytest

from memberwise.recommend.candidates import Candidates
from memberwise.recommend.ranker import (
    FEATURES,
    SOURCES,
    Ranker,
    fallback_scores,
    source_tables,
)


def _scores(**given: list[float]) -> dict[str, np.ndarray]:
    n = len(next(iter(given.values())))
    return {s: np.array(given.get(s, [0.0] * n)) for s in SOURCES}


def test_fallback_blend_normalizes_per_member_and_weights_sources() -> None:
    pos = np.array([0, 0, 1])
    scores = _scores(repeat=[2.0, 1.0, 0.0], popular=[0.0, 4.0, 8.0])
    # Member 0: repeat 2/2 * 1.0 = 1.0; 1/2 * 1.0 + 4/4 * 0.3 = 0.8. Member 1: 8/8 * 0.3.
    assert fallback_scores(pos, scores, 2) == pytest.approx([1.0, 0.8, 0.3])


def test_source_tables_unions_pairs_with_ranks_and_reason_arguments() -> None:
    a = Candidates(
        np.array([0, 0]),
        np.array([5, 3]),
        np.array([0.9, 0.1]),
        np.array([7, 8]),
        np.array([1.0, 2.0]),
    )
    b = Candidates(np.array([0]), np.array([3]), np.array([0.4]), np.array([-1]), np.zeros(1))
    pos, item, scores, ranks, aligned = source_tables({"repeat": a, "cooc": b}, 10)
    assert pos.tolist() == [0, 0] and item.tolist() == [3, 5]
    assert scores["repeat"].tolist() == [0.1, 0.9]
    assert ranks["repeat"].tolist() == [2.0, 1.0]
    assert scores["cooc"].tolist() == [0.4, 0.0]
    assert ranks["cooc"].tolist() == [1.0, 1000.0]
    assert aligned["repeat"].arg.tolist() == [8, 7]
    assert aligned["cooc"].arg.tolist() == [-1, -2]


def test_too_few_members_with_a_label_keep_the_fallback() -> None:
    ranker = Ranker(min_groups=5)
    x = np.zeros((4, len(FEATURES)), np.float32)
    assert not ranker.train(x, np.array([1, 0, 1, 0], np.float32), np.array([0, 0, 1, 1]))
    assert ranker.kind == "fallback"
    assert ranker.model_text() is None


def test_lambdarank_learns_which_feature_predicts_the_purchase() -> None:
    rng = np.random.default_rng(3)
    groups, per = 400, 10
    x = rng.random((groups * per, len(FEATURES))).astype(np.float32)
    signal = FEATURES.index("pair_baskets")
    y = np.zeros(groups * per, np.float32)
    pos = np.repeat(np.arange(groups), per)
    for g in range(groups):
        rows = np.arange(g * per, (g + 1) * per)
        y[rows[np.argmax(x[rows, signal])]] = 1.0
    ranker = Ranker(min_groups=50, rounds=40, threads=1)
    assert ranker.train(x, y, pos)
    assert ranker.kind == "lambdarank"
    pred = ranker.score(x, pos, {}, groups)
    top = pred.reshape(groups, per).argmax(axis=1)
    assert (y.reshape(groups, per)[np.arange(groups), top] == 1).mean() > 0.9
    # The text model reloads to the same predictions.
    again = Ranker()
    again.load_text(ranker.model_text())
    assert np.array_equal(again.score(x, pos, {}, groups), pred)
