"""Memberships at run time: the domain's refusals, entitlements for the ledger, publishing a
build's tiers and invitations with the automatic manager assignment, identity merges, and the
counts the console's overview shows. The member's view is :mod:`.member_view`, invitation
decisions and manual grants :mod:`.grants`, account managers :mod:`.managers`, paid plans
:mod:`.subscriptions`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection

from memberwise.kit import diffpublish, outbox
from memberwise.kit.diffpublish import Commit, no_commit
from memberwise.kit.errors import Conflict, InvalidRequest, NotFound
from memberwise.kit.ids import new_id
from memberwise.kit.storage import read_table
from memberwise.kit.time import as_utc, utcnow
from memberwise.membership import manager_repository, repository, subscription_repository, tables
from memberwise.membership import subscriptions as subs
from memberwise.membership.tier_publish import write_tier_batch
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, Principal
from memberwise.program.benefits import BenefitKind
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


# --- publishing a build ---------------------------------------------------------------------


def tiers_with_manager(program: Program) -> set[str]:
    """Tiers whose holders get a dedicated account manager."""
    names = {program.black_card.tier} if program.black_card is not None else set()
    for tier in program.tiers:
        if any(
            program.benefits[b].kind == BenefitKind.account_manager
            for b in tier.benefits
            if b in program.benefits
        ):
            names.add(tier.name)
    return names


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


# --- account managers -----------------------------------------------------------------------


def assign_managers(conn: Connection, program: Program, *, at: datetime) -> dict[str, int]:
    """Give every member of a managed tier a manager, keeping existing assignments; members of
    managers who left are reassigned; members who left the tier are released. Each goes to the
    active manager with the lowest load relative to capacity (ties: staff id), never above it."""
    managed_tiers = tiers_with_manager(program)
    wanted: set[str] = set()
    for tier in managed_tiers:
        wanted.update(repository.members_in_tier(conn, tier))
    managers = manager_repository.managers_with_load(conn)
    active = {m["staff_id"]: m for m in managers if m["active"]}
    current = manager_repository.assignments(conn)
    released = [m for m, s in current.items() if m not in wanted]
    orphaned = sorted(m for m, s in current.items() if m in wanted and s not in active)
    manager_repository.unassign(conn, released + orphaned)
    load = dict.fromkeys(active, 0)
    for m, s in current.items():
        if m in wanted and s in active:
            load[s] += 1
    todo = sorted(m for m in wanted if m not in current or m in orphaned)
    rows, unassigned = [], 0
    for member_id in todo:
        free = [s for s in active if load[s] < active[s]["capacity"]]
        if not free:
            unassigned += 1
            continue
        best = min(free, key=lambda s: (load[s] / active[s]["capacity"], s))
        load[best] += 1
        reason = "manager left; reassigned" if member_id in orphaned else "black-card member"
        rows.append({"member_id": member_id, "staff_id": best, "assigned_at": at, "reason": reason})
    manager_repository.assign(conn, rows)
    return {"assigned": len(rows), "released": len(released), "unassigned": unassigned}


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
