"""Next-basket quality through the product path a user runs: ingest -> build -> export.

Usage::

    python benchmarks/recommend_tafeng.py                          # Ta-Feng
    python benchmarks/recommend_tafeng.py --dataset demo           # the demo platform
    python benchmarks/recommend_tafeng.py --dataset demo-repeat    # staples on personal cycles

Every data set goes through the commands a user runs, in a fresh home (``--home``, default a
temporary directory): ``memberwise init``, ``memberwise ingest`` of purchase events with an
``order_id`` per basket, ``memberwise build --as-of <cut>``, ``memberwise recommend export --n
20``. The exported lists are scored on each member's next basket:

- ``tafeng``: the Ta-Feng histories (``../shared/data/tafeng``) as events
  (:func:`memberwise.recommend.tafeng.tafeng_events`), scored on each user's held-out last
  basket (every item of it counts in Recall's denominator, also items never seen before);
- ``demo`` / ``demo-repeat``: ``memberwise demo generate`` (``--rebuy-share 0.8`` for the
  repeat-heavy variant); every event before the last ``--holdout-days`` is ingested, and each
  member's first order after the cut is the basket to predict.

The same events give the simple baselines (own most frequent, own most recent, own then
popular, global popular) for the same members, so the table compares the product with them
on the same footing; the build's own decision (ranker or baseline, from its time split) is
printed from ``build.json``. Exit status 1 when the product's Recall@10 is below the best
baseline's (or, on Ta-Feng, below ``--min-recall``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memberwise.recommend.evaluate import (
    Lists,
    Truth,
    global_popular,
    ndcg_at_k,
    own_frequent,
    own_recent,
    own_then_popular,
    recall_at_k,
)
from memberwise.recommend.interactions import from_events
from memberwise.recommend.tafeng import load_tafeng, tafeng_events

BIN = Path(sys.executable).parent / "memberwise"
KS = (10, 20)


def _run(cmd: list[str], env: dict[str, str]) -> str:
    began = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    print(f"  {' '.join(Path(c).name if '/' in c else c for c in cmd[:4])}: "
          f"{time.perf_counter() - began:.1f} s", flush=True)  # fmt: skip
    return done.stdout


def tafeng_data(work: Path) -> tuple[Path, datetime, dict[str, list[str]]]:
    """Events file, build clock and each member's next basket for Ta-Feng."""
    tf = load_tafeng()
    events = tafeng_events(tf)
    path = work / "tafeng-events.parquet"
    pq.write_table(events, path)
    last = pc.max(events.column("ts")).as_py()
    return path, last + timedelta(hours=12), tf.future


def demo_data(
    work: Path, *, members: int, days: int, holdout: int, rebuy_share: float | None, seed: int
) -> tuple[Path, datetime, dict[str, list[str]]]:
    """Events before the cut, the cut, and each member's first order after it (demo)."""
    out = work / "demo"
    end = datetime.now(UTC).date()
    cmd = [str(BIN), "demo", "generate", "--members", str(members), "--days", str(days),
           "--seed", str(seed), "--end", end.isoformat(), "--out", str(out), "--json"]  # fmt: skip
    if rebuy_share is not None:
        cmd += ["--rebuy-share", str(rebuy_share)]
    _run(cmd, dict(os.environ))
    table = pq.read_table(out / "events")
    cut = datetime(end.year, end.month, end.day, tzinfo=UTC) - timedelta(days=holdout)
    before = table.filter(
        pc.less(table.column("ts"), pa.scalar(cut, table.schema.field("ts").type))
    )
    path = work / "events-before.parquet"
    pq.write_table(before, path)
    after = table.filter(
        pc.and_(
            pc.greater_equal(table.column("ts"), pa.scalar(cut, table.schema.field("ts").type)),
            pc.equal(table.column("type"), "purchase"),
        )
    ).select(["member_id", "ts", "order_id", "item_id"])
    after = after.sort_by([("member_id", "ascending"), ("ts", "ascending")])
    future: dict[str, list[str]] = {}
    first_order: dict[str, str] = {}
    for m, o, i in zip(
        after.column("member_id").to_pylist(),
        after.column("order_id").to_pylist(),
        after.column("item_id").to_pylist(),
        strict=True,
    ):
        if i is None:
            continue
        if first_order.setdefault(m, o) == o:
            future.setdefault(m, [])
            if i not in future[m]:
                future[m].append(i)
    return path, cut, future


def score(
    lists_by_member: dict[str, list[str]], future: dict[str, list[str]], item_index: dict[str, int]
) -> dict[str, float]:
    """Recall@k and NDCG@k of lists (item ids) against the next baskets (all items count)."""
    members = sorted(m for m in future if future[m])
    index = {i: n for n, i in enumerate(item_index)}
    extra = len(index)
    truth_sets: list[list[int]] = []
    for m in members:
        ids = []
        for i in future[m]:
            if i not in index:
                index[i] = extra
                extra += 1
            ids.append(index[i])
        truth_sets.append(ids)
    lists = Lists.from_python(
        [[index.setdefault(i, len(index)) for i in lists_by_member.get(m, [])] for m in members]
    )
    truth = Truth.from_python(truth_sets)
    out: dict[str, float] = {"members": float(len(members))}
    for k in KS:
        out[f"recall@{k}"] = recall_at_k(lists, truth, k)
        out[f"ndcg@{k}"] = ndcg_at_k(lists, truth, k)
    return out


def baselines(
    events_path: Path, cut: datetime, future: dict[str, list[str]]
) -> dict[str, dict[str, float]]:
    """The simple baselines on the same ingested events, for the same members."""
    events = pq.read_table(events_path, columns=["member_id", "type", "ts", "item_id", "order_id"])
    data = from_events(events, now=cut)
    wanted = [m for m in sorted(future) if future[m]]
    rows = data.member_index(wanted)
    known = rows >= 0
    members = rows[known]
    ids = np.asarray(wanted, dtype=np.str_)[known]
    n = max(KS)
    made = {
        "baseline: own most frequent": own_frequent(data, members, n),
        "baseline: own most recent": own_recent(data, members, n),
        "baseline: own then popular": own_then_popular(data, members, n),
        "baseline: global popular": global_popular(data, len(members), n),
    }
    items = data.item_ids
    out: dict[str, dict[str, float]] = {}
    for name, lists in made.items():
        by_member: dict[str, list[str]] = {}
        for p, i in zip(lists.pos.tolist(), lists.item.tolist(), strict=True):
            by_member.setdefault(str(ids[p]), []).append(str(items[i]))
        out[name] = score(by_member, future, {str(i): 0 for i in items})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", choices=["tafeng", "demo", "demo-repeat"], default="tafeng")
    parser.add_argument("--home", type=Path, help="Fresh home directory (default: a temp dir).")
    parser.add_argument("--members", type=int, default=20_000, help="demo: members.")
    parser.add_argument("--days", type=int, default=120, help="demo: days generated.")
    parser.add_argument("--holdout-days", type=int, default=14, help="demo: days after the cut.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-recall", type=float, default=0.15, help="tafeng: Recall@10 floor.")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix=f"mw-rec-{args.dataset}-"))
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MEMBERWISE_HOME": str(home), "OPENBLAS_NUM_THREADS": "1"}
    env.pop("MEMBERWISE_DB_URL", None)
    print(f"{args.dataset}: home {home}", flush=True)
    began = time.perf_counter()
    if args.dataset == "tafeng":
        events_path, cut, future = tafeng_data(home)
    else:
        events_path, cut, future = demo_data(
            home,
            members=args.members,
            days=args.days,
            holdout=args.holdout_days,
            rebuy_share=0.8 if args.dataset == "demo-repeat" else None,
            seed=args.seed,
        )
    _run([str(BIN), "init"], env)
    _run([str(BIN), "ingest", str(events_path), "--json"], env)
    build_began = time.perf_counter()
    _run([str(BIN), "build", "--as-of", cut.strftime("%Y-%m-%dT%H:%M"), "--json"], env)
    build_seconds = time.perf_counter() - build_began
    recs = home / "recs.parquet"
    _run([str(BIN), "recommend", "export", "--n", "20", "--out", str(recs)], env)

    table = pq.read_table(recs).sort_by([("member_id", "ascending"), ("rank", "ascending")])
    lists: dict[str, list[str]] = {}
    for m, i in zip(
        table.column("member_id").to_pylist(), table.column("item_id").to_pylist(), strict=True
    ):
        lists.setdefault(m, []).append(i)
    results = {"product (ingest -> build -> export)": score(lists, future, {})}
    results.update(baselines(events_path, cut, future))

    builds = sorted(home.glob("**/builds/*/build.json"))
    section: dict[str, Any] = {}
    if builds:
        meta = json.loads(builds[-1].read_text())
        section = meta.get("recommendations") or {}
    members = int(next(iter(results.values()))["members"])
    print()
    print(f"{args.dataset}: {members:,} members scored on their next basket; "
          f"build {build_seconds:.0f} s, all {time.perf_counter() - began:.0f} s; "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print()
    print("| method | Recall@10 | NDCG@10 | Recall@20 | NDCG@20 |")
    print("|---|---:|---:|---:|---:|")
    for name, s in results.items():
        print(f"| {name} | {s['recall@10']:.4f} | {s['ndcg@10']:.4f} "
              f"| {s['recall@20']:.4f} | {s['ndcg@20']:.4f} |")  # fmt: skip
    if section:
        print()
        print(f"build's choice: {section.get('published_method')} "
              f"({section.get('decision')})")  # fmt: skip
    product = results["product (ingest -> build -> export)"]["recall@10"]
    best_name, best = max(
        ((n, s["recall@10"]) for n, s in results.items() if n.startswith("baseline")),
        key=lambda x: x[1],
    )
    ok = product >= best
    print(f"Recall@10: product {product:.4f} vs best baseline ({best_name}) {best:.4f} "
          f"({product / best:.3f}x) {'ok' if ok else 'NOT REACHED'}")  # fmt: skip
    if args.dataset == "tafeng":
        floor = product >= args.min_recall
        ok &= floor
        print(f"Recall@10 floor {args.min_recall}: {'ok' if floor else 'NOT REACHED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
