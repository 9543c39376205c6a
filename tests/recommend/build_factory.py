"""Hand-made build directories with recommendation artifacts (as the recommendations stage
writes them), and a small item catalog, so publishing and serving are tested without training."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Connection

from memberwise.recommend import publishing
from memberwise.recommend.publishing import PublishOutcome
from memberwise.recommend.targeting import SUGGESTION_SCHEMA

AS_OF = datetime(2026, 11, 20, tzinfo=UTC)

#: item -> (category, parent category, title, consumable)
CATALOG: dict[str, tuple[str, str, str, bool]] = {
    "diaper-1": ("c0102", "c01", "纸尿裤 L", True),
    "diaper-2": ("c0102", "c01", "纸尿裤 XL", True),
    "milk-1": ("c0101", "c01", "奶粉 1段", True),
    "toy-1": ("c0105", "c01", "积木", False),
    "phone-1": ("c0201", "c02", "手机 Pro", False),
    "phone-2": ("c0201", "c02", "手机 Lite", False),
    "charger-1": ("c0207", "c02", "充电器 65W", False),
    "earphone-1": ("c0204", "c02", "耳机", False),
    "case-1": ("c0207", "c02", "手机壳", False),
    "snack-1": ("c0401", "c04", "薯片", True),
    "snack-2": ("c0401", "c04", "坚果", True),
    "new-1": ("c0401", "c04", "新品饼干", True),
}


def catalog_table(launched: Mapping[str, datetime] | None = None) -> pa.Table:
    ids = list(CATALOG)
    launched = launched or {}
    return pa.table(
        {
            "item_id": ids,
            "title": [CATALOG[i][2] for i in ids],
            "category_id": [CATALOG[i][0] for i in ids],
            "parent_category_id": [CATALOG[i][1] for i in ids],
            "price": pa.array([1000 * (k + 1) for k in range(len(ids))], pa.int64()),
            "consumable": [CATALOG[i][3] for i in ids],
            "launched_at": pa.array(
                [launched.get(i, AS_OF - timedelta(days=400)) for i in ids],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )


Entry = tuple[str, float, str, str]


def write_build(
    directory: Path,
    *,
    build_id: str = "b1",
    lists: Mapping[str, Sequence[Entry]],
    similar: Mapping[str, Sequence[tuple[str, float]]] = {},
    fallbacks: Mapping[str, Sequence[tuple[str, float, str]]] = {},
    profiles: Sequence[dict[str, Any]] = (),
    coupons: Sequence[dict[str, Any]] = (),
    metrics: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Path:
    """A build directory holding exactly the given lists (ranks in the given order)."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [
        {"member_id": m, "rank": r, "item_id": i, "score": s, "reason": why, "source": src}
        for m, entries in lists.items()
        for r, (i, s, why, src) in enumerate(entries, start=1)
    ]
    pq.write_table(
        pa.Table.from_pylist(
            rows,
            schema=pa.schema(
                [
                    ("member_id", pa.string()),
                    ("rank", pa.int32()),
                    ("item_id", pa.string()),
                    ("score", pa.float64()),
                    ("reason", pa.string()),
                    ("source", pa.string()),
                ]
            ),
        ),
        directory / publishing.RECOMMENDATIONS,
    )
    sim_rows = [
        {"item_id": i, "rank": r, "similar_item_id": j, "score": s}
        for i, entries in similar.items()
        for r, (j, s) in enumerate(entries, start=1)
    ]
    pq.write_table(
        pa.Table.from_pylist(
            sim_rows,
            schema=pa.schema(
                [
                    ("item_id", pa.string()),
                    ("rank", pa.int32()),
                    ("similar_item_id", pa.string()),
                    ("score", pa.float64()),
                ]
            ),
        ),
        directory / publishing.SIMILAR,
    )
    fb_rows = [
        {"key": k, "rank": r, "item_id": i, "score": s, "reason": why}
        for k, entries in fallbacks.items()
        for r, (i, s, why) in enumerate(entries, start=1)
    ]
    pq.write_table(
        pa.Table.from_pylist(
            fb_rows,
            schema=pa.schema(
                [
                    ("key", pa.string()),
                    ("rank", pa.int32()),
                    ("item_id", pa.string()),
                    ("score", pa.float64()),
                    ("reason", pa.string()),
                ]
            ),
        ),
        directory / publishing.FALLBACKS,
    )
    if profiles:
        pq.write_table(
            pa.Table.from_pylist(
                list(profiles),
                schema=pa.schema(
                    [
                        ("member_id", pa.string()),
                        ("region", pa.string()),
                        ("top_category", pa.string()),
                        ("peak_hour", pa.int64()),
                    ]
                ),
            ),
            directory / "profiles.parquet",
        )
    pq.write_table(
        pa.Table.from_pylist(list(coupons), schema=SUGGESTION_SCHEMA),
        directory / publishing.COUPONS,
    )
    manifest = {
        "build_id": build_id,
        "as_of": AS_OF.isoformat(),
        "engine": "duckdb",
        publishing.SECTION: {
            "model_id": build_id,
            "metrics": dict(metrics or {"recall@10": 0.2, "ndcg@10": 0.1}),
            "config": dict(config or {"diversity_share": 0.5}),
        },
    }
    (directory / "build.json").write_text(json.dumps(manifest))
    return directory


def publish(conn: Connection, directory: Path) -> PublishOutcome:
    outcome = publishing.publish_build(conn, directory)
    assert outcome is not None
    return outcome
