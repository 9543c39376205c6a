"""Ta-Feng next-basket data as prepared by Li et al., "A Next Basket Recommendation Reality
Check" (ACM TOIS 2023): each user's baskets in time order, and the next basket to predict.

The files live in ``../shared/data/tafeng/`` (``/work/shared/data/tafeng/`` here; CI has them at
the same place) and are read from there, never copied: ``tafeng_history.json`` maps a user id to
its baskets (lists of item ids) between ``[-1]`` sentinels, ``tafeng_future.json`` maps the same
users to ``[[-1], next_basket, [-1]]``. Protocol: recommend from the history, score against the
next basket (Recall@k = hits / |next basket|, NDCG@k with binary gains), over all users.

:func:`tafeng_events` turns the histories into purchase events (one ``order_id`` per basket) so
the data can go through the product path a user runs: ``memberwise ingest``, ``memberwise
build``, ``memberwise recommend export``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

#: Where the data set is, overridable with MEMBERWISE_TAFENG_DIR.
DEFAULT_DIR = Path(os.environ.get("MEMBERWISE_TAFENG_DIR", "/work/shared/data/tafeng"))
#: The original Ta-Feng period (November 2000 to February 2001); the prepared files carry no
#: dates, so :func:`tafeng_events` places baskets inside it.
PERIOD_START = datetime(2000, 11, 1, tzinfo=UTC)
PERIOD_DAYS = 120


@dataclass(frozen=True)
class TaFeng:
    """Histories (user → baskets of item ids, oldest first) and each user's next basket."""

    history: dict[str, list[list[str]]]
    future: dict[str, list[str]]


def _strip(baskets: list[list[int]]) -> list[list[str]]:
    """Baskets without the ``[-1]`` sentinels, item ids as strings."""
    return [[str(i) for i in b] for b in baskets if b != [-1]]


def load_tafeng(directory: Path | None = None) -> TaFeng:
    """Read the Ta-Feng history and future files.

    Raises FileNotFoundError when the data set is not at ``directory``.
    """
    root = directory or DEFAULT_DIR
    history_raw = orjson.loads((root / "tafeng_history.json").read_bytes())
    future_raw = orjson.loads((root / "tafeng_future.json").read_bytes())
    history = {str(u): _strip(b) for u, b in history_raw.items()}
    future: dict[str, list[str]] = {}
    for u, baskets in future_raw.items():
        nxt = _strip(baskets)
        if nxt and str(u) in history and history[str(u)]:
            future[str(u)] = list(dict.fromkeys(nxt[0]))
    return TaFeng(history={u: b for u, b in history.items() if b}, future=future)


def tafeng_events(
    tf: TaFeng, *, seed: int = 7, start: datetime = PERIOD_START, days: int = PERIOD_DAYS
) -> pa.Table:
    """The histories as purchase events (``event_id, member_id, type, ts, item_id,
    order_id``), one order per basket.

    The prepared files keep each user's basket order but no dates, so each user's ``b``
    history baskets and the next basket get ``b + 1`` distinct days drawn uniformly (seeded)
    from the ``days`` after ``start``, in order; the history baskets take the first ``b``.
    Members therefore stop buying at different times and their next basket comes at a random
    later day, as in a live shop (not all on one last day). Each basket is at noon UTC.
    """
    rng = np.random.default_rng(seed)
    start_us = int(start.timestamp() * 1_000_000)
    day_us = 86_400_000_000
    member_ids: list[str] = []
    items: list[str] = []
    ts: list[int] = []
    orders: list[str] = []
    for user in sorted(tf.history):
        baskets = tf.history[user]
        n = min(len(baskets) + 1, days)
        chosen = np.sort(rng.choice(days, n, replace=False))
        # More baskets than days (never in Ta-Feng): the extra ones share the last day.
        when = np.concatenate([chosen, np.full(len(baskets) + 1 - n, chosen[-1])])
        for b, basket in enumerate(baskets):
            distinct = list(dict.fromkeys(basket))
            member_ids.extend([user] * len(distinct))
            items.extend(distinct)
            ts.extend([start_us + int(when[b]) * day_us + day_us // 2] * len(distinct))
            orders.extend([f"{user}-{b}"] * len(distinct))
    n_rows = len(items)
    return pa.table(
        {
            "event_id": pa.array([f"tf-{i}" for i in range(n_rows)], pa.string()),
            "member_id": pa.array(member_ids, pa.string()),
            "type": pa.array(["purchase"] * n_rows, pa.string()),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "item_id": pa.array(items, pa.string()),
            "order_id": pa.array(orders, pa.string()),
        }
    )
