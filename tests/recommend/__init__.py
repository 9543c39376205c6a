"""Recommendation tests, and the synthetic data set with a known answer they share.

:func:`checkerboard` makes a "checkerboard of tastes": ``groups`` member groups × ``groups`` item
groups (one category each), where members of group ``g`` only touch items of group ``g``. So the
right answer for every source is known: items of the member's own group. Inside a group:

- item ``j = 0`` is a staple, bought by every member every 7 days (a consumable);
- items ``1..4`` are viewed in sessions and bought together in baskets (co-occurrence);
- item ``5`` is a durable of a separate category, bought once by some members;
- item ``6`` appears only in the last 3 days (a new arrival);
- item ``7`` is only viewed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

END = datetime(2026, 6, 1, tzinfo=UTC)
CATEGORY_NAMES = ["母婴", "数码", "美妆", "食品", "家居", "运动"]


def member_id(g: int, i: int) -> str:
    """Member ``i`` of group ``g``."""
    return f"m{g}{i:02d}"


def item_id(g: int, j: int) -> str:
    """Item ``j`` of group ``g``."""
    return f"i{g}{j}"


def group_of(item: str) -> int:
    """The group an item or member id belongs to."""
    return int(item[1])


def checkerboard(groups: int = 4, members: int = 12, weeks: int = 8, seed: int = 1) -> pa.Table:
    """The events of the checkerboard data set (see the module docstring)."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    n = 0

    def add(m: str, kind: str, ts: datetime, item: str, order: str | None = None) -> None:
        nonlocal n
        g = group_of(item)
        j = int(item[2])
        rows.append(
            {
                "event_id": f"e{n}",
                "member_id": m,
                "type": kind,
                "ts": ts,
                "item_id": item,
                "category_id": f"c{g}d" if j == 5 else f"c{g}",
                "price": 1000 * (j + 1),
                "quantity": 1,
                "order_id": order,
                "region": f"r{g % 2}",
            }
        )
        n += 1

    start = END - timedelta(weeks=weeks)
    for g in range(groups):
        for i in range(members):
            m = member_id(g, i)
            for w in range(weeks):
                day = start + timedelta(days=7 * w, hours=int(rng.integers(8, 20)) + i / 100)
                # The staple, bought every week, in an order with one or two co-bought items.
                order = f"o{m}w{w}"
                add(m, "purchase", day, item_id(g, 0), order)
                for j in rng.choice([1, 2, 3, 4], size=2, replace=False):
                    add(m, "view", day - timedelta(minutes=20), item_id(g, int(j)))
                    if rng.random() < 0.5:
                        add(m, "purchase", day, item_id(g, int(j)), order)
                add(m, "view", day + timedelta(days=2), item_id(g, 7))
            if i % 3 == 0:
                add(m, "purchase", start + timedelta(days=3), item_id(g, 5), f"o{m}d")
            if i % 2 == 0:
                add(m, "view", END - timedelta(days=2, hours=i), item_id(g, 6))
                add(
                    m,
                    "cart",
                    END - timedelta(days=2, hours=i) + timedelta(minutes=1),
                    item_id(g, 6),
                )
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("event_id", pa.string()),
                ("member_id", pa.string()),
                ("type", pa.string()),
                ("ts", pa.timestamp("us", tz="UTC")),
                ("item_id", pa.string()),
                ("category_id", pa.string()),
                ("price", pa.int64()),
                ("quantity", pa.int32()),
                ("order_id", pa.string()),
                ("region", pa.string()),
            ]
        ),
    )


def categories(groups: int = 4) -> pa.Table:
    """Category names for reasons ("popular in 母婴 near you")."""
    ids = [f"c{g}" for g in range(groups)] + [f"c{g}d" for g in range(groups)]
    names = [CATEGORY_NAMES[g] for g in range(groups)] + [
        f"{CATEGORY_NAMES[g]}大件" for g in range(groups)
    ]
    return pa.table({"category_id": ids, "name": names})
