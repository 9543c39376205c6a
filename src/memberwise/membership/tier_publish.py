"""Publishing a build's tiers and black-card invitations into the store: the changed tier rows
by difference, a batch at a time, with what hangs on each change (history, audit, outbox); then
new invitations (never to a holder, a pending invitee or a recent decliner) and the manager
assignment.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from memberwise.kit import diffpublish, outbox
from memberwise.kit.diffpublish import Commit, no_commit
from memberwise.kit.ids import new_id
from memberwise.kit.storage import read_table
from memberwise.kit.time import as_utc, utcnow
from memberwise.membership import repository
from memberwise.membership.manager_assignment import assign_managers
from memberwise.membership.tiers import Source
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM
from memberwise.program.schemas import Program


def publish_tiers(
    conn: Connection, program: Program, build_dir: Path, *, commit: Commit = no_commit
) -> int:
    """Apply ``tiers.parquet`` and ``invitations.parquet`` by difference: only members whose
    stored tier row differs from the build's (tier, source, since, until, score or details)
    are written, :data:`~memberwise.kit.diffpublish.BATCH_ROWS` a transaction (``commit``
    after each), with their history, audit and outbox rows in the same transaction; then new
    invitations and manager assignments. Members made manual or invited since the build ran
    keep their tier (only their score is refreshed). A member absent from the build keeps their
    row, as before. Returns the members written.

    A crash between batches loses nothing: publishing the build again skips the members already
    written (their rows now equal the build's), so each change is announced once.
    """
    path = build_dir / "tiers.parquet"
    if not path.exists():
        return 0
    manifest = json.loads((build_dir / "build.json").read_text())
    build_id = manifest["build_id"]
    now = utcnow()
    locked = repository.locked_members(conn)
    written = 0
    with diffpublish.connect() as con:
        repository.load_tiers(conn, con, "stored")
        for batch in diffpublish.batches(con, repository.changed_tiers_sql(path, "stored")):
            written += write_tier_batch(conn, batch.to_pylist(), locked, build_id, now)
            commit()
    _publish_invitations(conn, program, build_dir, build_id, now)
    assign_managers(conn, program, at=now)
    return written


def _publish_invitations(
    conn: Connection, program: Program, build_dir: Path, build_id: str, now: datetime
) -> None:
    card = program.black_card
    path = build_dir / "invitations.parquet"
    if card is None or not path.exists():
        return
    repository.expire_invitations(conn, now)
    blocked = blocked_members(conn, program, now)
    rows = []
    for r in read_table(path).to_pylist():
        if r["member_id"] in blocked:
            continue  # invited or given the card since the build ran
        rows.append(
            {
                "invitation_id": new_id(),
                "member_id": r["member_id"],
                "tier": card.tier,
                "status": "pending",
                "rank": r["rank"],
                "score": r["score"],
                "explanation": json.loads(r["explanation"]),
                "build_id": build_id,
                "created_at": now,
                "expires_at": now + timedelta(days=card.invitation_days),
                "decided_at": None,
            }
        )
    repository.insert_invitations(conn, rows)
    outbox.emit_many(
        conn,
        [
            outbox.message_row(
                "invitation.created",
                {
                    "invitation_id": r["invitation_id"],
                    "tier": r["tier"],
                    "rank": r["rank"],
                    "expires_at": r["expires_at"],
                },
                member_id=r["member_id"],
                at=now,
            )
            for r in rows
        ],
    )
    privacy.audit_many(
        conn,
        [
            privacy.audit_row(
                SYSTEM,
                "invitation.create",
                "invitation",
                r["invitation_id"],
                member_id=r["member_id"],
                details={"rank": r["rank"]},
            )
            for r in rows
        ],
    )


def blocked_members(conn: Connection, program: Program, now: datetime) -> set[str]:
    """Members not to invite: holders, pending invitees, and recent decliners."""
    card = program.black_card
    if card is None:
        return set()
    blocked = set(repository.members_in_tier(conn, card.tier))
    window = timedelta(days=card.reinvite_after_days)
    for inv in repository.invitations_by_status(conn, card.tier):
        if (inv["status"] == "pending" and as_utc(inv["expires_at"]) > now) or (
            inv["status"] == "declined"
            and inv["decided_at"]
            and as_utc(inv["decided_at"]) + window > now
        ):
            blocked.add(inv["member_id"])
    return blocked


def taken_slots(conn: Connection, program: Program, now: datetime) -> int:
    """Holders plus live pending invitations: what the quota has already given out."""
    card = program.black_card
    if card is None:
        return 0
    holders = len(repository.members_in_tier(conn, card.tier))
    pending = sum(
        1
        for inv in repository.invitations_by_status(conn, card.tier)
        if inv["status"] == "pending" and as_utc(inv["expires_at"]) > now
    )
    return holders + pending


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
