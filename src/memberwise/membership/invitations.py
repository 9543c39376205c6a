"""Choosing black-card invitations: hard criteria, a weighted ranking, a quota.

Each ranking field scores a member by their percentile among the *eligible* members (average
rank for ties, 1.0 for the best), so fields of any scale weigh as the program's weights say; the
composite is the weighted mean. The quota (a count, or one per N active members) bounds holders
plus pending invitations together; only the free slots are offered. Equal composites are
ordered by member id, so a rebuild on the same data invites the same members. Every invitation
carries its explanation: the criteria, each field's value, percentile, weight and contribution.
"""

from __future__ import annotations

import json
from collections.abc import Set
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from memberwise.program.membership import BlackCard

INVITATIONS_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string()),
        pa.field("rank", pa.int32()),
        pa.field("score", pa.float64()),
        pa.field("explanation", pa.string()),
    ]
)


def _average_rank(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """1-based ranks, ties sharing the mean of their ranks (scipy's "average"; importing
    scipy.stats costs the CLI seconds)."""
    array = pa.array(values)
    low = pc.rank(array, sort_keys="ascending", tiebreaker="min").to_numpy()
    high = pc.rank(array, sort_keys="ascending", tiebreaker="max").to_numpy()
    return np.asarray((low + high) / 2.0, dtype=float)


def quota(card: BlackCard, active_members: int) -> int:
    """How many members may hold the card or an invitation to it."""
    if card.quota.count is not None:
        return card.quota.count
    per = card.quota.per_active_members or 1
    return active_members // per


def choose(
    card: BlackCard, inputs: pa.Table, *, taken: int, blocked: Set[str]
) -> tuple[pa.Table, dict[str, Any]]:
    """The new invitations (best first) and a summary; ``taken`` counts holders and pending
    invitations, ``blocked`` the members not to invite (holders, pending, recently declined)."""
    ids = np.array(inputs.column("member_id").to_pylist(), dtype=object)
    eligible = inputs.column("bc_eligible").to_numpy(zero_copy_only=False).astype(bool)
    active = int(inputs.column("bc_active").to_numpy(zero_copy_only=False).astype(bool).sum())
    excluded = set(card.exclude) | set(blocked)
    allowed = eligible & np.array([m not in excluded for m in ids], dtype=bool)
    limit = quota(card, active)
    slots = max(0, limit - taken)
    summary = {
        "active_members": active,
        "eligible": int(eligible.sum()),
        "quota": limit,
        "taken": taken,
        "slots": slots,
    }
    rows = np.flatnonzero(eligible)
    if rows.size == 0 or slots == 0:
        summary["invited"] = 0
        return INVITATIONS_SCHEMA.empty_table(), summary
    total_weight = sum(c.weight for c in card.ranking)
    composite = np.zeros(rows.size)
    values: dict[str, np.ndarray[Any, Any]] = {}
    percentiles: dict[str, np.ndarray[Any, Any]] = {}
    for criterion in card.ranking:
        raw = inputs.column(criterion.field).to_numpy(zero_copy_only=False)[rows]
        numbers = np.nan_to_num(np.asarray(raw, dtype=float), nan=0.0)
        pct = _average_rank(numbers) / rows.size
        values[criterion.field] = numbers
        percentiles[criterion.field] = pct
        composite += criterion.weight * pct / total_weight
    candidates = np.flatnonzero(allowed[rows])
    # Best composite first; ties by member id (deterministic across rebuilds).
    order = sorted(
        candidates.tolist(), key=lambda k: (-round(float(composite[k]), 12), str(ids[rows[k]]))
    )
    chosen = order[:slots]
    picked = [
        Pick(
            str(ids[rows[k]]),
            float(composite[k]),
            {c.field: float(values[c.field][k]) for c in card.ranking},
            {c.field: float(percentiles[c.field][k]) for c in card.ranking},
        )
        for k in chosen
    ]
    return invitations_table(card, picked, summary), summary


@dataclass
class Pick:
    """One chosen member: composite, and each ranking field's value and percentile."""

    member_id: str
    composite: float
    values: dict[str, float]
    percentiles: dict[str, float]


def invitations_table(card: BlackCard, picked: list[Pick], summary: dict[str, Any]) -> pa.Table:
    """The invitation rows of ``picked`` (best first), each with its explanation; sets
    ``summary["invited"]``. Shared by the embedded path and the Spark path, which ranks on the
    cluster and brings only the chosen few to the driver."""
    total_weight = sum(c.weight for c in card.ranking)
    explanations = []
    for pick in picked:
        contributions = [
            {
                "field": c.field,
                "description": c.description,
                "value": pick.values[c.field],
                "percentile": round(pick.percentiles[c.field], 6),
                "weight": c.weight,
                "contribution": round(c.weight * pick.percentiles[c.field] / total_weight, 6),
            }
            for c in card.ranking
        ]
        explanations.append(
            json.dumps(
                {
                    "criteria": card.criteria,
                    "composite": round(pick.composite, 6),
                    "contributions": contributions,
                    **summary,
                },
                ensure_ascii=False,
            )
        )
    summary["invited"] = len(picked)
    return pa.table(
        {
            "member_id": pa.array([p.member_id for p in picked], pa.string()),
            "rank": pa.array(range(1, len(picked) + 1), pa.int32()),
            "score": pa.array([round(p.composite, 6) for p in picked], pa.float64()),
            "explanation": pa.array(explanations, pa.string()),
        },
        schema=INVITATIONS_SCHEMA,
    )
