"""The member score (the 淘气值 kind) and the qualification metrics, as Ibis expressions.

The score is ``floor(sum of parts)`` where each part is ``min(max, weight * field)`` over one
profile field (a missing or negative value counts 0): capped parts mean no single behaviour buys
the score, and the member is shown each part with its cap, so they know what to do for more.

Spend for tier qualification is *net* (purchases minus refunds, in fen) over each window the
program names, or since the member's last tier change, read from the event lake; points earned
come from the ledger. Both follow what a member earned, never a spendable balance.
"""

from __future__ import annotations

from datetime import datetime

import ibis
import ibis.expr.types as ir

from memberwise.profiles.features import prepare_events
from memberwise.program.membership import ScoreSettings
from memberwise.program.schemas import Program

PART_PREFIX = "score_part_"


def score_columns(profiles: ir.Table, score: ScoreSettings) -> dict[str, ir.Value]:
    """``score`` and one ``score_part_<name>`` column per part (float, capped)."""
    columns: dict[str, ir.Value] = {}
    total: ir.NumericValue = ibis.literal(0.0)
    for part in score.parts:
        value = profiles[part.field].cast("float64").fill_null(0.0)
        points = ibis.greatest(ibis.literal(0.0), value * part.weight)
        capped = ibis.least(points, ibis.literal(float(part.max)))
        columns[PART_PREFIX + part.name] = capped
        total = total + capped
    columns["score"] = total.floor().cast("int64")
    return columns


def spend_windows(program: Program) -> list[int]:
    """The look-back windows (days) of the program's spend qualifications, sorted."""
    return sorted(
        {
            q.window_days
            for t in program.tiers
            for q in t.qualify
            if q.spend is not None and q.window_days is not None
        }
    )


def needs_spend_since_change(program: Program) -> bool:
    return any(
        q.spend is not None and q.since_tier_change for t in program.tiers for q in t.qualify
    )


def net_spend(
    events: ir.Table, *, as_of: datetime, windows: list[int], since: ir.Table | None
) -> ir.Table:
    """Per member: ``net_spend_<N>d`` for each window and, with ``since`` (member_id, since),
    ``net_spend_since_change``; purchases minus refunds, in fen."""
    e = prepare_events(events, as_of=as_of).filter(lambda t: t.type.isin(["purchase", "refund"]))
    signed = ibis.cases((e.type == "refund", -e.amount), else_=e.amount)
    e = e.mutate(signed=signed)
    aggs: dict[str, ir.Value] = {
        f"net_spend_{days}d": e.signed.sum(where=e.age_days < days) for days in windows
    }
    if since is not None:
        joined = e.left_join(since, "member_id")
        aggs["net_spend_since_change"] = joined.signed.sum(
            where=joined.since.isnull() | (joined.ts >= joined.since)
        )
        grouped = joined.group_by(joined.member_id).aggregate(**aggs)
    else:
        grouped = e.group_by("member_id").aggregate(**aggs)
    return grouped.mutate(**{name: grouped[name].fill_null(0).cast("int64") for name in aggs})
