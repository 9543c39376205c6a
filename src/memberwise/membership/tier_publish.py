"""Writing one batch of a build's changed tier rows with what hangs on each change (history,
audit, outbox), for :func:`memberwise.membership.service.publish_tiers`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from memberwise.kit import outbox
from memberwise.kit.ids import new_id
from memberwise.membership import repository
from memberwise.membership.tiers import Source
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM


def write_tier_batch(
    conn: Connection, batch: list[dict[str, Any]], locked: set[str], build_id: str, now: datetime
) -> int:
    """Write one batch of changed tier rows and what hangs on each change; the rows written."""
    rows, scores, history, audits = [], [], [], []
    messages: list[dict[str, Any]] = []
    initial = 0
    for r in batch:
        details = r["details"]  # JSON text, stored as it is
        if r["member_id"] in locked and r["source"] == Source.auto:
            if not r["score_changed"]:
                continue  # only the (kept) tier differs: nothing of the build's to write
            scores.append(
                {
                    "m_id": r["member_id"],
                    "score": r["score"],
                    "details": details,
                    "build_id": build_id,
                    "updated_at": now,
                }
            )
            continue
        rows.append(
            {
                "member_id": r["member_id"],
                "tier": r["tier"],
                "source": r["source"],
                "since": r["since"],
                "until": r["until"],
                "score": r["score"],
                "details": details,
                "build_id": build_id,
                "updated_at": now,
            }
        )
        if r["change"] in ("initial", "upgrade", "downgrade"):
            history.append(
                {
                    "change_id": new_id(),
                    "member_id": r["member_id"],
                    "at": r["since"],
                    "from_tier": r["from_tier"],
                    "to_tier": r["tier"],
                    "reason": r["reason"],
                    "build_id": build_id,
                    "actor": "build",
                }
            )
            if r["change"] == "initial":
                initial += 1
                continue  # one audit row for the batch's placements, below
            # A first placement is not announced (a million messages on a first build);
            # the platform reads it from the API. Moves are.
            messages.append(
                outbox.message_row(
                    "member.tier_changed",
                    {
                        "member_id": r["member_id"],
                        "change": r["change"],
                        "from_tier": r["from_tier"],
                        "to_tier": r["tier"],
                        "reason": r["reason"],
                        "since": r["since"],
                        "until": r["until"],
                    },
                    member_id=r["member_id"],
                    at=now,
                )
            )
            audits.append(
                privacy.audit_row(
                    SYSTEM,
                    f"tier.{r['change']}",
                    "member",
                    r["member_id"],
                    member_id=r["member_id"],
                    reason=r["reason"],
                    details={"from": r["from_tier"], "to": r["tier"], "build_id": build_id},
                )
            )
    repository.upsert_tiers(conn, rows)
    repository.update_scores(conn, scores)
    repository.insert_history(conn, history)
    privacy.audit_many(conn, audits)
    outbox.emit_many(conn, messages)
    if initial:
        # A member's first tier is in their history with its reason; the audit log records the
        # placement once per committed batch (a million identical "entered member" rows say
        # nothing more; one per batch stays exact when a publish is resumed after a crash).
        privacy.audit(
            conn,
            SYSTEM,
            "tier.initial",
            "build",
            build_id,
            reason=f"first tiers of {initial:,} members",
            details={"members": initial},
        )
    return len(rows) + len(scores)
