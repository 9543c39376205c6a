"""Build directories as the build job writes them (``HOME/warehouse/builds/<build_id>/``),
made with pyarrow so the publish tests do not depend on the build job.

:func:`write_build` writes a few hand-made members (exact values to assert);
:func:`write_synthetic_build` writes many random ones (paging tests, publish benchmarks).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memberwise.profiles.fields import DETAILS, FIELDS
from memberwise.profiles.rules import FieldType

AS_OF = datetime(2026, 11, 20, tzinfo=UTC)
TIMESTAMP = pa.timestamp("us", tz="UTC")

SEGMENTS = [
    {"name": "new", "rule": "tenure_days <= 30", "description": "joined in the last 30 days"},
    {"name": "active", "rule": "days_since_last_seen <= 30", "description": "seen this month"},
    {"name": "at_risk", "rule": "days_since_last_seen > 30", "description": "drifting away"},
    {"name": "churned", "rule": "days_since_last_seen > 180", "description": "gone quiet"},
]
TAGS = [
    {"name": "night_owl", "rule": "share_events_22_to_02 >= 0.4", "description": "shops at night"},
    {"name": "big_spender", "rule": "spend_365d >= 1000000", "description": "spends a lot"},
    {"name": "bargain_hunter", "rule": "price_band <= 1", "description": "buys cheap"},
]
PERSONAS = [
    {
        "id": 0,
        "name": "Night-owl gamers",
        "size": 2,
        "description": "late, loyal, electronics",
        "top_features": [{"field": "share_events_22_to_02", "z": 2.5}],
    },
    {
        "id": 1,
        "name": "Thrifty parents",
        "size": 2,
        "description": "daytime, baby goods, low price bands",
        "top_features": [{"field": "price_band", "z": -1.25}, {"field": "orders_365d", "z": 0.5}],
    },
]


def is_float_field(name: str) -> bool:
    """Whether the build writes ``name`` as float64 (ratios, shares, averages) or int64."""
    return any(
        part in name for part in ("share", "rate", "affinity", "avg_", "aov_", "_to_", "per_")
    )


def arrow_type(name: str, type_: FieldType) -> pa.DataType:
    if type_ == FieldType.timestamp:
        return TIMESTAMP
    if type_ == FieldType.string:
        return pa.string()
    return pa.float64() if is_float_field(name) else pa.int64()


@dataclass
class FakeMember:
    """One member of a hand-made build; fields not given are null."""

    member_id: str
    segment: str
    persona: int | None = None
    tags: Sequence[str] = ()
    fields: dict[str, Any] = field(default_factory=dict)
    #: detail -> [(key, value)] in rank order.
    details: dict[str, list[tuple[str, float]]] = field(default_factory=dict)


def _manifest(build_id: str, as_of: datetime, members: int, **overrides: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "build_id": build_id,
        "as_of": as_of.isoformat(),
        "engine": "duckdb",
        "started_at": (as_of + timedelta(minutes=5)).isoformat(),
        "finished_at": (as_of + timedelta(minutes=7)).isoformat(),
        "events_read": members * 10,
        "members": members,
        "stages": {"features": {"seconds": 1.5, "rows": members}},
        "segments": SEGMENTS,
        "tags": TAGS,
        "personas": PERSONAS,
    }
    manifest.update(overrides)
    return manifest


def build_dir(home: Path, build_id: str) -> Path:
    return home / "warehouse" / "builds" / build_id


def write_build(
    home: Path,
    build_id: str,
    members: Sequence[FakeMember],
    *,
    as_of: datetime = AS_OF,
    **manifest: Any,
) -> Path:
    """Write a build directory of ``members``; ``manifest`` overrides build.json keys."""
    out = build_dir(home, build_id)
    out.mkdir(parents=True, exist_ok=True)
    profiles: dict[str, pa.Array] = {
        "member_id": pa.array([m.member_id for m in members], pa.string())
    }
    for f in FIELDS:
        values = [m.fields.get(f.name) for m in members]
        profiles[f.name] = pa.array(values, arrow_type(f.name, f.type))
    pq.write_table(pa.table(profiles), out / "profiles.parquet")
    details = [
        (m.member_id, detail, rank, key, value)
        for m in members
        for detail, items in m.details.items()
        for rank, (key, value) in enumerate(items, start=1)
    ]
    details.reverse()  # rows in no useful order: the publisher must order by rank itself
    pq.write_table(
        pa.table(
            {
                "member_id": pa.array([d[0] for d in details], pa.string()),
                "detail": pa.array([d[1] for d in details], pa.string()),
                "rank": pa.array([d[2] for d in details], pa.int32()),
                "key": pa.array([d[3] for d in details], pa.string()),
                "value": pa.array([d[4] for d in details], pa.float64()),
            }
        ),
        out / "details.parquet",
    )
    tags = [(m.member_id, t) for m in members for t in m.tags]
    pq.write_table(
        pa.table(
            {
                "member_id": pa.array([t[0] for t in tags], pa.string()),
                "tag": pa.array([t[1] for t in tags], pa.string()),
            }
        ),
        out / "tags.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "member_id": pa.array([m.member_id for m in members], pa.string()),
                "segment": pa.array([m.segment for m in members], pa.string()),
                "persona": pa.array([m.persona for m in members], pa.int32()),
            }
        ),
        out / "segments.parquet",
    )
    (out / "build.json").write_text(
        json.dumps(_manifest(build_id, as_of, len(members), **manifest), ensure_ascii=False)
    )
    return out


def write_synthetic_build(
    home: Path, build_id: str, n: int, *, seed: int = 0, as_of: datetime = AS_OF
) -> Path:
    """A build of ``n`` random members ``s00000000``.. with every field filled (about a tenth
    null), 2-5 entries per detail list, 0-3 tags and a segment and persona each. Vectorized:
    a million members take a few seconds."""
    rng = np.random.default_rng(seed)
    out = build_dir(home, build_id)
    out.mkdir(parents=True, exist_ok=True)
    ids = pa.array(np.char.add("s", np.char.zfill(np.arange(n).astype(str), 8)))
    as_of_us = int(as_of.timestamp() * 1_000_000)
    columns: dict[str, pa.Array] = {"member_id": ids}
    regions = np.array(["浙江", "上海", "广东", "北京", "四川"])
    for f in FIELDS:
        null = rng.random(n) < 0.1
        type_ = arrow_type(f.name, f.type)
        if type_ == TIMESTAMP:
            us = as_of_us - rng.integers(0, 365 * 86_400_000_000, n)
            values: pa.Array = pa.array(us, mask=null).cast(TIMESTAMP)
        elif type_ == pa.string():
            values = pa.array(regions[rng.integers(0, len(regions), n)], mask=null)
        elif type_ == pa.float64():
            values = pa.array(rng.random(n), mask=null)
        else:
            values = pa.array(rng.integers(0, 10_000, n), mask=null)
        columns[f.name] = values
    pq.write_table(pa.table(columns), out / "profiles.parquet")

    # One run of 2-5 rows per (member, detail) pair, ranked 1.. within the run.
    runs = rng.integers(2, 6, n * len(DETAILS))
    member = np.repeat(np.repeat(np.arange(n), len(DETAILS)), runs)
    detail_index = np.repeat(np.tile(np.arange(len(DETAILS)), n), runs)
    rank = np.arange(len(member)) - np.repeat(np.cumsum(runs) - runs, runs) + 1
    pq.write_table(
        pa.table(
            {
                "member_id": ids.take(pa.array(member)),
                "detail": pa.array(np.array(list(DETAILS))[detail_index]),
                "rank": pa.array(rank.astype(np.int32)),
                "key": pa.array(np.char.add("k", rng.integers(0, 500, len(member)).astype(str))),
                "value": pa.array(rng.random(len(member))),
            }
        ),
        out / "details.parquet",
    )

    tag_names = np.array([t["name"] for t in TAGS])
    has = rng.random((n, len(tag_names))) < 0.3
    who, which = np.nonzero(has)
    pq.write_table(
        pa.table({"member_id": ids.take(pa.array(who)), "tag": pa.array(tag_names[which])}),
        out / "tags.parquet",
    )
    segment_names = np.array([s["name"] for s in SEGMENTS])
    persona = rng.integers(0, len(PERSONAS) + 1, n)  # the last one: no persona
    pq.write_table(
        pa.table(
            {
                "member_id": ids,
                "segment": pa.array(segment_names[rng.integers(0, len(segment_names), n)]),
                "persona": pa.array(persona.astype(np.int32), mask=persona == len(PERSONAS)),
            }
        ),
        out / "segments.parquet",
    )
    (out / "build.json").write_text(json.dumps(_manifest(build_id, as_of, n), ensure_ascii=False))
    return out
