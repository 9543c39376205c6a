"""Test helpers for events: valid events and a physical look at the lake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb


def event(i: int, **overrides: Any) -> dict[str, Any]:
    """A valid event; ``overrides`` replace fields (``None`` removes one)."""
    body: dict[str, Any] = {
        "event_id": f"e{i}",
        "member_id": f"m{i % 3}",
        "type": "purchase",
        "ts": f"2026-11-{1 + i % 20:02d}T12:00:00+08:00",
        "item_id": f"i{i}",
        "category_id": "c1",
        "price": 1999,
        "quantity": 1,
        "order_id": f"o{i}",
        "properties": {"coupon": "C10"},
    }
    for key, value in overrides.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def stored_event_ids(lake_root: Path) -> list[str]:
    """Every event_id physically in the lake's visible files, duplicates included, sorted."""
    files = sorted(str(p) for p in lake_root.glob("events/date=*/*.parquet"))
    if not files:
        return []
    rows = duckdb.sql(f"SELECT event_id FROM read_parquet({files!r}) ORDER BY event_id").fetchall()
    return [r[0] for r in rows]
