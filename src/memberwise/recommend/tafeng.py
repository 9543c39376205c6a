"""Ta-Feng next-basket data as prepared by Li et al., "A Next Basket Recommendation Reality
Check" (ACM TOIS 2023): each user's baskets in time order, and the next basket to predict.

The files live in ``../shared/data/tafeng/`` (``/work/shared/data/tafeng/`` here; CI has them at
the same place) and are read from there, never copied: ``tafeng_history.json`` maps a user id to
its baskets (lists of item ids) between ``[-1]`` sentinels, ``tafeng_future.json`` maps the same
users to ``[[-1], next_basket, [-1]]``. Protocol: recommend from the history, score against the
next basket (Recall@k = hits / |next basket|, NDCG@k with binary gains), over all users.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson

#: Where the data set is, overridable with MEMBERWISE_TAFENG_DIR.
DEFAULT_DIR = Path(os.environ.get("MEMBERWISE_TAFENG_DIR", "/work/shared/data/tafeng"))


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
