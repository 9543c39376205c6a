"""Ta-Feng next-basket figures: the blend, ALS alone, each source and each baseline.

Usage: ``python benchmarks/recommend_tafeng.py [--k 10,20] [--no-ranker]``

Reads ``../shared/data/tafeng/`` (see ``memberwise.recommend.tafeng``), fits on every user's
history, predicts the next basket and prints Recall@k, NDCG@k, hit rate, catalog coverage and
repeat share as a Markdown table, then checks the blend against own-then-popular and ALS.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from memberwise.recommend.evaluate import evaluate_tafeng
from memberwise.recommend.model import RecommenderConfig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--k", default="10,20")
    parser.add_argument("--no-ranker", action="store_true", help="Use the fallback blend.")
    args = parser.parse_args()
    ks = [int(k) for k in args.k.split(",")]
    scores, timings = evaluate_tafeng(ks, config=RecommenderConfig(use_ranker=not args.no_ranker))
    print("| method | k | Recall | NDCG | hit rate | coverage | repeat share |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s in sorted(scores, key=lambda s: (s.k, not s.method.startswith("blend"))):
        print(
            f"| {s.method} | {s.k} | {s.recall:.4f} | {s.ndcg:.4f} | {s.hit_rate:.4f} "
            f"| {s.coverage:.4f} | {s.repeat_share:.3f} |"
        )
    print()
    print("seconds: " + ", ".join(f"{name} {v:.1f}" for name, v in timings.items()))
    ok = True
    for k in ks:
        at_k = {s.method: s.recall for s in scores if s.k == k}
        blend = next(v for m, v in at_k.items() if m.startswith("blend"))
        for rival in ("baseline: own then popular", "source: als"):
            beats = blend > at_k[rival]
            ok &= beats
            print(
                f"Recall@{k}: blend {blend:.4f} vs {rival} {at_k[rival]:.4f} "
                f"({blend / at_k[rival]:.2f}x) {'ok' if beats else 'NOT BEATEN'}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
