"""The member's view of their membership: tier, score and its parts, the next tier and what is
missing for it, notices, subscriptions, benefits, invitation and account manager.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection

from memberwise.kit.time import utcnow
from memberwise.membership import manager_repository, repository
from memberwise.membership import subscriptions as subs
from memberwise.membership.schemas import (
    ManagerOut,
    MembershipOut,
    NextTier,
    Notice,
    ScoreOut,
    ScorePartOut,
    Shortfall,
    TierOut,
)
from memberwise.membership.service import MembershipNotFound, entitlements
from memberwise.membership.tiers import Source, from_us
from memberwise.program.schemas import Program

# --- the member's view ----------------------------------------------------------------------


def shortfalls(
    program: Program, tier_index: int, details: dict[str, Any], score: int
) -> list[Shortfall]:
    """What the member misses of each qualification of tier ``tier_index`` (also the words of
    the near-next-tier notices)."""
    metrics = {**details.get("metrics", {}), "score": score}
    out = []
    for q in program.tiers[tier_index].qualify:
        if q.rule is not None:
            out.append(Shortfall(metric="rule", rule=q.rule, text=f"meet {q.rule!r}"))
            continue
        need = q.threshold or 0
        have = int(metrics.get(q.metric) or 0)
        missing = max(0, need - have)
        if q.spend is not None:
            unit, shown = "fen", f"{missing / 100:,.2f} CNY more net spend"
        elif q.score is not None:
            unit, shown = "points", f"{missing:,} more {program.score.name}"
        else:
            unit, shown = "points", f"{missing:,} more points earned"
        out.append(
            Shortfall(
                metric=q.metric,
                unit=unit,
                need=need,
                have=have,
                missing=missing,
                text=shown if missing else f"{q.metric} reached",
            )
        )
    return out


def membership(conn: Connection, program: Program, member_id: str) -> MembershipOut:
    """Tier, score with its parts, the next tier and what is missing, notices, subscriptions,
    benefits, the black-card invitation and the account manager."""
    now = utcnow()
    row = repository.get_tier(conn, member_id)
    sub_list = subs.of_member(conn, program, member_id, at=now)
    if row is None and not sub_list:
        raise MembershipNotFound(
            f"member {member_id} has no membership yet: run `memberwise build` after their events"
        )
    tier_out = score_out = next_tier = notice = None
    history: list[dict[str, Any]] = []
    if row is not None:
        details = json.loads(row["details"] or "{}")
        index = next((i for i, t in enumerate(program.tiers) if t.name == row["tier"]), None)
        spec = program.tiers[index] if index is not None else None
        tier_out = TierOut(
            name=row["tier"],
            description=spec.description if spec else "",
            source=row["source"],
            since=row["since"],
            until=row["until"],
            benefits=list(spec.benefits) if spec else [],
        )
        values = details.get("parts", {})
        score_out = ScoreOut(
            name=program.score.name,
            value=row["score"],
            max=program.score.maximum,
            parts=[
                ScorePartOut(
                    name=p.name,
                    field=p.field,
                    # Stored as [the field's value, the points it gives].
                    value=(values.get(p.name) or [None, 0.0])[0],
                    points=(values.get(p.name) or [None, 0.0])[1],
                    max=p.max,
                )
                for p in program.score.parts
            ],
        )
        if index is not None:
            higher = next(
                (j for j in range(index + 1, len(program.tiers)) if program.tiers[j].automatic),
                None,
            )
            if higher is not None and row["source"] == Source.auto:
                next_tier = NextTier(
                    name=program.tiers[higher].name,
                    any_of=shortfalls(program, higher, details, row["score"]),
                )
        if details.get("notice"):
            n = details["notice"]
            on = from_us(n["downgrade_on_us"])
            unless = "; or ".join(
                s.text for s in shortfalls(program, index or 0, details, row["score"])
            )
            notice = Notice(
                downgrade_on=on,
                to=n["to"],
                text=f"will be downgraded to {n['to']} on {on.date()} unless {unless}",
            )
        history = [
            {"at": h["at"], "from": h["from_tier"], "to": h["to_tier"], "reason": h["reason"]}
            for h in repository.tier_history_of(conn, member_id, 20)
        ]
    invitation = repository.latest_invitation_of(conn, member_id)
    manager = manager_repository.manager_of(conn, member_id)
    return MembershipOut(
        member_id=member_id,
        tier=tier_out,
        score=score_out,
        next_tier=next_tier,
        notice=notice,
        subscriptions=sub_list,
        benefits=list(entitlements(conn, program, member_id, now).benefits),
        invitation=(
            {
                "invitation_id": invitation["invitation_id"],
                "status": invitation["status"],
                "tier": invitation["tier"],
                "expires_at": invitation["expires_at"],
            }
            if invitation is not None
            else None
        ),
        manager=ManagerOut(staff_id=manager["staff_id"], name=manager["name"]) if manager else None,
        history=history,
    )
