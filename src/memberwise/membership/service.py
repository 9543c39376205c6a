"""Memberships at run time: the domain's refusals, entitlements for the ledger, setting a tier
outside a build, identity merges, and the counts the console's overview shows. Publishing a
build's tiers and invitations is :mod:`.tier_publish` (re-exported here for the build stages),
the automatic manager assignment :mod:`.manager_assignment`, the member's view
:mod:`.member_view`, invitation decisions and manual grants :mod:`.grants`, account managers
:mod:`.managers`, paid plans :mod:`.subscriptions`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from memberwise.kit.errors import Conflict, InvalidRequest, NotFound
from memberwise.kit.ids import new_id
from memberwise.membership import manager_repository, repository, subscription_repository, tables
from memberwise.membership import subscriptions as subs

# The build stages (embedded and Spark) publish through the domain's service.
from memberwise.membership.tier_publish import blocked_members as blocked_members
from memberwise.membership.tier_publish import publish_tiers as publish_tiers
from memberwise.membership.tier_publish import taken_slots as taken_slots
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import Principal
from memberwise.program.schemas import Program


class MembershipNotFound(NotFound):
    code = "membership_not_found"


class InvitationNotFound(NotFound):
    code = "invitation_not_found"


class InvitationClosed(Conflict):
    code = "invitation_not_pending"


class UnknownTier(InvalidRequest):
    code = "unknown_tier"


class ManagerNotFound(NotFound):
    code = "manager_not_found"


class NotManaged(InvalidRequest):
    """The member holds no tier that comes with an account manager."""

    code = "member_not_managed"


class ManagerFull(Conflict):
    """The account manager already looks after as many members as their capacity."""

    code = "manager_at_capacity"


class NoTiers(InvalidRequest):
    """The program defines no tiers, so there is nothing to evaluate or preview."""

    code = "program_has_no_tiers"


class NotServiceStaff(InvalidRequest):
    code = "not_service_staff"


# --- entitlements ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Entitlements:
    """What a member holds at a moment: tier, paid plans, and the benefit names they grant."""

    tier: str | None
    plans: tuple[str, ...]
    benefits: tuple[str, ...]


#: :func:`tier_of` as a statement of ``:member_id``, for a hot path that asks it as a subquery
#: of its own first read (placing an order: one round trip less on PostgreSQL).
TIER_QUERY = repository.TIER_SQL


def tier_of(conn: Connection, member_id: str) -> str | None:
    """The member's tier name (None before their first build): one keyed read, for hot paths
    such as placing an order."""
    return repository.tier_name(conn, member_id)


def entitlements(conn: Connection, program: Program, member_id: str, at: datetime) -> Entitlements:
    """The member's tier and live paid plans at ``at`` and the union of their benefits (in
    program order: tier first, then plans). Two keyed reads and no writes: a plan counts while
    its subscription would still grant it at ``at`` (see :func:`subscriptions.grants`), so a
    checkout or a benefits read never waits for the state machine to catch up."""
    tier_name = repository.tier_name(conn, member_id)
    spec = next((t for t in program.tiers if t.name == tier_name), None)
    benefits: list[str] = list(spec.benefits) if spec is not None else []
    plans: list[str] = []
    for row in subscription_repository.subscription_states(conn, member_id):
        plan = program.plans.get(row["plan"])
        if plan is not None and row["plan"] not in plans and subs.grants(row, plan, at):
            plans.append(row["plan"])
            benefits += plan.benefits
    return Entitlements(tier=tier_name, plans=tuple(plans), benefits=tuple(dict.fromkeys(benefits)))


def set_tier(
    conn: Connection,
    member_id: str,
    tier: str,
    source: str,
    at: datetime,
    until: datetime | None,
    reason: str,
    actor: Principal,
) -> None:
    """Set the member's tier outside a build (an accepted invitation, a grant, a merge), with its
    history and audit rows."""
    before = repository.get_tier(conn, member_id)
    repository.upsert_tiers(
        conn,
        [
            {
                "member_id": member_id,
                "tier": tier,
                "source": source,
                "since": at,
                "until": until,
                "score": before["score"] if before else 0,
                "details": before["details"] if before else "{}",
                "build_id": before["build_id"] if before else None,
                "updated_at": at,
            }
        ],
    )
    repository.insert_history(
        conn,
        [
            {
                "change_id": new_id(),
                "member_id": member_id,
                "at": at,
                "from_tier": before["tier"] if before else None,
                "to_tier": tier,
                "reason": reason,
                "build_id": None,
                "actor": actor.key_id,
            }
        ],
    )
    privacy.audit(
        conn,
        actor,
        f"tier.{source}",
        "member",
        member_id,
        member_id=member_id,
        reason=reason,
        details={"from": before["tier"] if before else None, "to": tier},
    )


def past_due_subscriptions(conn: Connection) -> list[tuple[str, str]]:
    """(member, subscription) whose renewal payment failed or is late (``past_due``)."""
    return subscription_repository.subscriptions_in(conn, "past_due")


def pending_invitations(conn: Connection) -> list[tuple[str, str]]:
    """(member, invitation) of black-card invitations not yet decided."""
    return repository.invitations_in(conn, "pending")


def merge_member(
    conn: Connection, program: Program, source: str, target: str, *, at: datetime, actor: Principal
) -> dict[str, int]:
    """Fold ``source``'s memberships into ``target``: the better tier stays (with both
    histories and a row saying why), subscriptions and invitations move, an account manager
    stays if the target has none. Returns what moved, by kind."""
    theirs, mine = repository.get_tier(conn, target), repository.get_tier(conn, source)
    history = repository.move_member_rows(conn, tables.tier_history, source, target)
    ranks = {t.name: i for i, t in enumerate(program.tiers)}
    if mine is not None and (
        theirs is None or ranks.get(mine["tier"], -1) > ranks.get(theirs["tier"], -1)
    ):
        reason = f"identity merge: the better tier of {source}"
        set_tier(conn, target, mine["tier"], mine["source"], at, mine["until"], reason, actor)
    repository.delete_member_row(conn, tables.member_tiers, source)
    subscription_repository.rename_subscription_keys(
        conn,
        subscription_repository.colliding_subscription_keys(conn, source, target),
        f"#merged:{source}",
    )
    moved = {
        "tier_history": history,
        "subscriptions": repository.move_member_rows(conn, tables.subscriptions, source, target),
        "invitations": repository.move_member_rows(conn, tables.invitations, source, target),
    }
    if manager_repository.manager_of(conn, target) is None:
        moved["managers"] = repository.move_member_rows(
            conn, tables.member_managers, source, target
        )
    else:
        repository.delete_member_row(conn, tables.member_managers, source)
    return moved


# --- counts for the console's overview ----------------------------------------------------------


def members_by_tier(conn: Connection, at: datetime | None = None) -> dict[str, int]:
    """Members per tier: now, or as they stood at ``at`` (by the tier history)."""
    return repository.tier_counts(conn) if at is None else repository.tier_counts_at(conn, at)


def tier_history_extent(conn: Connection, until: datetime) -> tuple[int, int]:
    """(tier-history rows, their members) up to ``until``: changes only when a build publishes,
    an erasure deletes or an identity merge moves a member's history."""
    return repository.history_extent(conn, until)


def subscriptions_by_plan(conn: Connection) -> list[tuple[str, str, int]]:
    """(plan, status, subscriptions), ordered by plan and status."""
    return subscription_repository.subscription_counts(conn)


def revenue_by_plan(conn: Connection) -> dict[str, tuple[int, int]]:
    """Plan -> (fees paid, fees refunded), in fen."""
    return subscription_repository.revenue_by_plan(conn)


def invitations_by_status(conn: Connection) -> dict[str, int]:
    """Black-card invitations per status (pending, accepted, declined, expired)."""
    return repository.invitation_counts(conn)
