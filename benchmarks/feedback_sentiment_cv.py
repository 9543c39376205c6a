"""How the sentiment model was chosen: 5-fold cross-validation on the TRAINING part only.

    python benchmarks/feedback_sentiment_cv.py [--grid] [--curve] [--gbm] [--errors FILE]

Folds keep near-copies together (:attr:`memberwise.feedback.corpus.Split.train_groups`); the
held-out part is never read. Compares, on the package's hashed character 1-4 + jieba word 1-3
gram counts: TF-IDF logistic regression, multinomial naive Bayes, the shipped NBSVM-style model
(TF-IDF scaled by naive Bayes log-count ratios, logistic regression) at a few feature budgets,
an equal-weight blend of the three; ``--grid`` adds other C values and a linear SVM, ``--gbm``
LightGBM on the counts (slow: minutes a fold on a busy 2-core machine). ``--curve`` instead
prints a learning curve of the shipped model (accuracy against the share of the training folds),
the evidence for how far more data of this kind would go; ``--errors`` writes a sample of the
shipped model's out-of-fold errors (gold label, log-odds, text) to read for label noise.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.naive_bayes import MultinomialNB
from sklearn.svm import LinearSVC

from memberwise.feedback import sentiment
from memberwise.feedback.corpus import load_split
from memberwise.feedback.sentiment import MIN_DF, Featurizer, fit_counts, margin

Scorer = Callable[[sp.csr_matrix, np.ndarray, sp.csr_matrix], np.ndarray]


def tfidf_rows(train: sp.csr_matrix, test: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Sublinear TF-IDF of both sides with the training side's IDF (features in >= MIN_DF)."""
    n = train.shape[0]
    df = np.bincount(train.indices, minlength=train.shape[1])
    idf = (np.log((1.0 + n) / (1.0 + df)) + 1.0) * (df >= MIN_DF)
    return sentiment._tfidf(train, idf), sentiment._tfidf(test, idf)


def logistic(c: float) -> Scorer:
    def score(a: sp.csr_matrix, y: np.ndarray, b: sp.csr_matrix) -> np.ndarray:
        xa, xb = tfidf_rows(a, b)
        return np.asarray(LogisticRegression(C=c, max_iter=3000).fit(xa, y).decision_function(xb))

    return score


def svm(c: float) -> Scorer:
    def score(a: sp.csr_matrix, y: np.ndarray, b: sp.csr_matrix) -> np.ndarray:
        xa, xb = tfidf_rows(a, b)
        return np.asarray(LinearSVC(C=c).fit(xa, y).decision_function(xb))

    return score


def naive_bayes(a: sp.csr_matrix, y: np.ndarray, b: sp.csr_matrix) -> np.ndarray:
    log_p = MultinomialNB(alpha=0.5).fit(a, y).predict_log_proba(b)
    return np.asarray(log_p[:, 1] - log_p[:, 0])


def nbsvm(c: float, max_features: int) -> Scorer:
    def score(a: sp.csr_matrix, y: np.ndarray, b: sp.csr_matrix) -> np.ndarray:
        saved, sentiment.C = sentiment.C, c
        try:
            idf, coef, intercept = fit_counts(a, y, max_features)
        finally:
            sentiment.C = saved
        return margin(b, idf, coef, intercept)

    return score


def gbm(a: sp.csr_matrix, y: np.ndarray, b: sp.csr_matrix) -> np.ndarray:
    import lightgbm  # only this comparison needs it

    model = lightgbm.LGBMClassifier(
        n_estimators=600, learning_rate=0.05, num_leaves=31, min_child_samples=10,
        colsample_bytree=0.3, subsample=0.8, subsample_freq=1, verbose=-1, n_jobs=2,
    )  # fmt: skip
    keep = np.flatnonzero(np.bincount(a.indices, minlength=a.shape[1]) >= 3)
    model.fit(a[:, keep].astype(np.float32), y)
    p = np.clip(model.predict_proba(b[:, keep].astype(np.float32))[:, 1], 1e-9, 1 - 1e-9)
    return np.asarray(np.log(p / (1 - p)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--curve", action="store_true", help="learning curve of the shipped model")
    parser.add_argument("--gbm", action="store_true", help="add LightGBM (slow)")
    parser.add_argument("--grid", action="store_true", help="add other C values and a linear SVM")
    parser.add_argument(
        "--errors", type=Path, help="write 60 random out-of-fold errors of the shipped model here"
    )
    args = parser.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average) on {os.cpu_count()} cores")
    split = load_split()
    y = np.array(split.train_labels)
    groups = np.array(split.train_groups)
    counts = Featurizer().counts(split.train_texts)
    folds = list(GroupKFold(n_splits=5).split(y, groups=groups))
    if args.curve:
        results: dict[str, object] = {}
        rng = np.random.default_rng(0)
        curve = {}
        for share in (0.125, 0.25, 0.5, 0.75, 1.0):
            right = 0
            for a, b in folds:
                part = a if share == 1.0 else rng.choice(a, int(len(a) * share), replace=False)
                out = nbsvm(4.0, 100_000)(counts[part], y[part], counts[b])
                right += int(((out > 0) == y[b]).sum())
            curve[f"{share} ({int(len(y) * 0.8 * share)} lines)"] = round(right / len(y), 4)
        results["learning_curve_shipped"] = curve
        print(json.dumps(results, indent=2))
        return
    models: dict[str, Scorer] = {
        "tfidf_logistic_C8": logistic(8.0),
        "multinomial_nb": naive_bayes,
        "nbsvm_C4_all": nbsvm(4.0, 10**9),
        "nbsvm_C4_100k (shipped)": nbsvm(4.0, 100_000),
        "nbsvm_C4_30k": nbsvm(4.0, 30_000),
    }
    if args.grid:
        models |= {
            "tfidf_logistic_C2": logistic(2.0),
            "linear_svm_C0.3": svm(0.3),
            "nbsvm_C1_all": nbsvm(1.0, 10**9),
            "nbsvm_C16_all": nbsvm(16.0, 10**9),
        }
    if args.gbm:
        models["lightgbm"] = gbm
    results = {}
    margins: dict[str, np.ndarray] = {}
    for name, score in models.items():
        started = time.perf_counter()
        out = np.zeros(len(y))
        for a, b in folds:
            out[b] = score(counts[a], y[a], counts[b])
        margins[name] = out
        results[name] = {
            "cv_accuracy": round(float(((out > 0) == y).mean()), 4),
            "s": round(time.perf_counter() - started, 1),
        }
        print(name, results[name], flush=True)
    blended = ("tfidf_logistic_C8", "nbsvm_C4_all", "multinomial_nb")
    blend = sum(margins[k] / margins[k].std() for k in blended)
    results["equal_blend_of_" + "+".join(blended)] = {
        "cv_accuracy": round(float(((blend > 0) == y).mean()), 4)
    }
    if args.errors:
        out = margins["nbsvm_C4_100k (shipped)"]
        wrong = np.flatnonzero((out > 0) != y)
        sample = np.random.default_rng(0).choice(wrong, min(60, len(wrong)), replace=False)
        args.errors.write_text(
            "".join(f"{y[i]}\t{out[i]:+.2f}\t{split.train_texts[i]}\n" for i in sorted(sample)),
            "utf-8",
        )
    print(json.dumps(results, indent=2))
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average) at the end")


if __name__ == "__main__":
    main()
