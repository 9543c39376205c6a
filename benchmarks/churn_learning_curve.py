"""The churn model's learning curve: how its AUC on a fixed held-out set of members grows with
the number of members it is trained on, to size the sample the Spark path trains on
(``predict.distributed.CHURN_SAMPLE``).

    python benchmarks/churn_learning_curve.py --members 40000 --home /tmp/bench-churn

The home is made once (``demo generate``, ``init``, ``ingest``, ``members import``). The
training snapshot is the profiles as of ``as_of - churn_horizon_days`` computed with the
profile stage's own expressions on DuckDB, labelled as the build labels them. A seeded fifth
of the members is held out; nested seeded samples of the rest, of each size, train the model
exactly as the build does (:func:`~memberwise.predict.churn.fit_churn`), and each is scored
on the same held-out members (AUC, Brier). Sizes are repeated over ``--seeds`` samples.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import ibis
import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import brier_score_loss, roc_auc_score

from memberwise.config import Settings
from memberwise.kit.warehouse import duckdb_backend, write_parquet
from memberwise.members import service as members_service
from memberwise.predict.churn import fit_churn
from memberwise.predict.scoring import churn_labels
from memberwise.predict.stage import PURCHASES_SCHEMA, read_purchases
from memberwise.profiles.features import member_profiles
from memberwise.program.service import current_program
from memberwise.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "memberwise"
SIZES = (500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000)


def prepare(home: Path, members: int, env: dict[str, str]) -> None:
    if (home / ".bench-ready").exists():
        return
    demo = home.with_name(home.name + "-demo")

    def run(*cmd: str) -> None:
        subprocess.run([str(BIN), *cmd], env=env, check=True, capture_output=True)

    run("demo", "generate", "--members", str(members), "--days", "120", "--out", str(demo))
    run("init", "--program", str(ROOT / "programs" / "demo.yaml"))
    run("ingest", str(demo / "events"))
    run("members", "import", str(demo / "members.parquet"))
    (home / ".bench-ready").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("/tmp/bench-churn"))
    parser.add_argument("--members", type=int, default=40_000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "MEMBERWISE_HOME": str(args.home), "OPENBLAS_NUM_THREADS": "1"}
    prepare(args.home, args.members, env)
    os.environ["MEMBERWISE_HOME"] = str(args.home)
    runtime = Runtime.open(Settings())
    program = current_program(runtime.settings.program_file)
    con = duckdb_backend()
    events = runtime.lake.events_table(con)
    as_of = con.to_pyarrow(events.ts.max()).as_py().replace(tzinfo=UTC)
    horizon = program.predictions.churn_horizon_days
    cutoff = as_of - timedelta(days=horizon)
    with runtime.engine.connect() as conn:
        attributes = members_service.analytics_attributes(conn)
    offset = ZoneInfo(program.display_timezone).utcoffset(cutoff) or timedelta(0)
    profiles, _ = member_profiles(
        events, ibis.memtable(attributes), as_of=cutoff, utc_offset=offset
    )
    path = args.home / "churn-snapshot.parquet"
    write_parquet(con, profiles, path)
    snapshot = pq.read_table(path).sort_by([("member_id", "ascending")])
    purchases = con.to_pyarrow(read_purchases(events, as_of=as_of)).cast(PURCHASES_SCHEMA)
    labels = churn_labels(snapshot["member_id"], purchases, after=cutoff, until=as_of)
    n = snapshot.num_rows
    print(f"snapshot {n:,} members, churn rate {labels.mean():.3f}, load {os.getloadavg()}")

    order = np.random.default_rng(0).permutation(n)
    held, pool = order[: n // 5], order[n // 5 :]
    held_table, held_labels = snapshot.take(held), labels[held]
    curve: dict[int, list[tuple[float, float]]] = {}
    for seed in range(args.seeds):
        shuffled = np.random.default_rng(100 + seed).permutation(pool)
        for size in [s for s in SIZES if s <= len(pool)] + [len(pool)]:
            rows = np.sort(shuffled[:size])
            model = fit_churn(snapshot.take(rows), labels[rows], horizon_days=horizon, seed=seed)
            served = model.predict(held_table)
            scores = (
                float(roc_auc_score(held_labels, served)),
                float(brier_score_loss(held_labels, served)),
            )
            curve.setdefault(size, []).append(scores)
            print(f"seed {seed} size {size:>6,}: auc {scores[0]:.4f} brier {scores[1]:.4f}")
    for size, runs in sorted(curve.items()):
        summary = {
            "train_members": size,
            "auc_median": round(statistics.median(a for a, _ in runs), 4),
            "auc_spread": round(max(a for a, _ in runs) - min(a for a, _ in runs), 4),
            "brier_median": round(statistics.median(b for _, b in runs), 4),
        }
        print("median " + json.dumps(summary))
    print(f"held out {len(held):,} members; finished {datetime.now(UTC).isoformat()}")
    runtime.close()


if __name__ == "__main__":
    main()
