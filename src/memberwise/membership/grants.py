"""Decisions on tiers outside a build: black-card invitations listed, accepted or declined, and
an operator's manual grant of a tier.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from memberwise.kit.pagination import Page, decode_cursor, encode_cursor
from memberwise.kit.time import as_utc, utcnow
from memberwise.membership import repository
from memberwise.membership.manager_assignment import assign_managers
from memberwise.membership.member_view import membership
from memberwise.membership.schemas import (
    InvitationOut,
    MembershipOut,
    TierGrant,
)
from memberwise.membership.service import (
    InvitationClosed,
    InvitationNotFound,
    UnknownTier,
    set_tier,
)
from memberwise.membership.tiers import Source
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import Principal
from memberwise.program.schemas import Program

# --- invitations ----------------------------------------------------------------------------


def _invitation_out(row: Any) -> InvitationOut:
    return InvitationOut.model_validate(dict(row))


def list_invitations(
    conn: Connection, *, status: str | None, after: str | None, limit: int
) -> Page[InvitationOut]:
    repository.expire_invitations(conn, utcnow())
    rows = repository.page_invitations(
        conn, status=status, after=decode_cursor(after), limit=limit + 1
    )
    items = [_invitation_out(r) for r in rows[:limit]]
    return Page[InvitationOut](
        items=items,
        next_cursor=encode_cursor(items[-1].invitation_id) if len(rows) > limit else None,
    )


def decide(
    conn: Connection, program: Program, invitation_id: str, accept: bool, *, actor: Principal
) -> InvitationOut:
    """Accept (the member enters the invitation tier and gets a manager) or decline."""
    now = utcnow()
    repository.expire_invitations(conn, now)
    row = repository.get_invitation(conn, invitation_id)
    if row is None:
        raise InvitationNotFound(f"no invitation {invitation_id}")
    status = "accepted" if accept else "declined"
    if not repository.decide_invitation(conn, invitation_id, status, now):
        current = repository.get_invitation(conn, invitation_id)
        if current is not None and current["status"] == status:
            return _invitation_out(current)  # a retried decision answers the same
        raise InvitationClosed(
            f"invitation {invitation_id} is {current['status'] if current else 'gone'}, not pending"
        )
    member_id = row["member_id"]
    if accept:
        set_tier(
            conn,
            member_id,
            row["tier"],
            Source.invitation,
            now,
            None,
            f"accepted invitation {invitation_id}",
            actor,
        )
        assign_managers(conn, program, at=now)
    privacy.audit(
        conn, actor, f"invitation.{status}", "invitation", invitation_id, member_id=member_id
    )
    current = repository.get_invitation(conn, invitation_id)
    assert current is not None
    return _invitation_out(current)


def grant(
    conn: Connection, program: Program, member_id: str, data: TierGrant, *, actor: Principal
) -> MembershipOut:
    """Staff set a member's tier by hand; recalculation leaves it alone (until ``until``)."""
    if data.tier not in {t.name for t in program.tiers}:
        raise UnknownTier(f"no tier {data.tier!r} in program {program.name!r}")
    set_tier(
        conn,
        member_id,
        data.tier,
        Source.manual,
        utcnow(),
        as_utc(data.until) if data.until else None,
        data.reason,
        actor,
    )
    assign_managers(conn, program, at=utcnow())
    return membership(conn, program, member_id)
