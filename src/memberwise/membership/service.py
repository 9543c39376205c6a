"""Memberships at run time: publishing a build's tiers and invitations, the member's membership
view, entitlements for the ledger, invitations, manual grants and account managers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from memberwise.kit import diffpublish, outbox
from memberwise.kit.diffpublish import Commit, no_commit
from memberwise.kit.errors import Conflict, InvalidRequest, NotFound
from memberwise.kit.ids import new_id
from memberwise.kit.pagination import Page, decode_cursor, encode_cursor
from memberwise.kit.storage import read_table
from memberwise.kit.time import as_utc, utcnow
from memberwise.membership import repository, tables
from memberwise.membership import subscriptions as subs
from memberwise.membership.schemas import (
    InvitationOut,
    ManagedMember,
    ManagerAssign,
    ManagerMembersOut,
    ManagerOut,
    MemberManagerOut,
    MembershipOut,
    NextTier,
    Notice,
    ScoreOut,
    ScorePartOut,
    Shortfall,
    TierGrant,
    TierOut,
)
from memberwise.membership.tiers import Source, from_us
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, Principal, Role
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
    for row in repository.subscription_states(conn, member_id):
        plan = program.plans.get(row["plan"])
        if plan is not None and row["plan"] not in plans and subs.grants(row, plan, at):
            plans.append(row["plan"])
            benefits += plan.benefits
    return Entitlements(tier=tier_name, plans=tuple(plans), benefits=tuple(dict.fromkeys(benefits)))


# --- publishing a build ---------------------------------------------------------------------


def _needs_manager(program: Program) -> set[str]:
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
            written += _publish_tier_batch(conn, batch.to_pylist(), locked, build_id, now)
            commit()
    _publish_invitations(conn, program, build_dir, build_id, now)
    assign_managers(conn, program, at=now)
    return written


def _publish_tier_batch(
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
    managed_tiers = _needs_manager(program)
    wanted: set[str] = set()
    for tier in managed_tiers:
        wanted.update(repository.members_in_tier(conn, tier))
    managers = repository.managers_with_load(conn)
    active = {m["staff_id"]: m for m in managers if m["active"]}
    current = repository.assignments(conn)
    released = [m for m, s in current.items() if m not in wanted]
    orphaned = sorted(m for m, s in current.items() if m in wanted and s not in active)
    repository.unassign(conn, released + orphaned)
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
    repository.assign(conn, rows)
    return {"assigned": len(rows), "released": len(released), "unassigned": unassigned}


def add_manager(
    conn: Connection, program: Program, staff_id: str, capacity: int, *, actor: Principal = SYSTEM
) -> dict[str, int]:
    """Make a service staff member an account manager with ``capacity`` members."""
    staff = next((s for s in privacy.list_staff(conn) if s.staff_id == staff_id), None)
    if staff is None:
        raise ManagerNotFound(
            f"no staff member {staff_id}; create them with `memberwise staff create`"
        )
    if staff.role is not Role.service:
        raise NotServiceStaff(
            f"{staff_id} has role {staff.role.value}; account managers have the service role"
        )
    if capacity < 1:
        raise InvalidRequest("capacity must be at least 1")
    now = utcnow()
    repository.upsert_manager(conn, staff_id, capacity, now)
    privacy.audit(conn, actor, "manager.add", "staff", staff_id, details={"capacity": capacity})
    return assign_managers(conn, program, at=now)


def remove_manager(
    conn: Connection, program: Program, staff_id: str, *, actor: Principal = SYSTEM
) -> dict[str, int]:
    """A manager leaves: their members are reassigned to the others at once."""
    now = utcnow()
    if not repository.deactivate_manager(conn, staff_id, now):
        raise ManagerNotFound(f"{staff_id} is not an active account manager")
    privacy.audit(conn, actor, "manager.remove", "staff", staff_id)
    return assign_managers(conn, program, at=now)


def reassign_manager(
    conn: Connection,
    program: Program,
    member_id: str,
    data: ManagerAssign,
    *,
    at: datetime,
    actor: Principal = SYSTEM,
) -> MemberManagerOut:
    """Give the member account manager ``data.staff_id`` (an operator's or service lead's
    decision; :func:`assign_managers` keeps it from then on), with an audit row.

    Idempotent: the member's current manager again changes nothing. Raises NotManaged (the
    member's tier has no account manager), ManagerNotFound (not an active manager) and
    ManagerFull (at capacity).
    """
    tier = repository.tier_name(conn, member_id)
    if tier not in _needs_manager(program):
        raise NotManaged(
            f"the member's tier ({tier or 'none'}) comes with no account manager in program "
            f"{program.name!r}"
        )
    manager = repository.get_manager(conn, data.staff_id)
    if manager is None or not manager["active"]:
        raise ManagerNotFound(f"{data.staff_id} is not an active account manager")
    current = repository.manager_of(conn, member_id)
    if current is None or current["staff_id"] != data.staff_id:
        if manager["members"] >= manager["capacity"]:
            raise ManagerFull(
                f"{data.staff_id} already looks after {manager['members']} members, their capacity",
                details={"capacity": manager["capacity"]},
            )
        row = {"member_id": member_id, "staff_id": data.staff_id, "assigned_at": at}
        repository.assign(conn, [row | {"reason": data.reason}])
        privacy.audit(
            conn,
            actor,
            "manager.reassign",
            "member",
            member_id,
            member_id=member_id,
            details={
                "from": current["staff_id"] if current is not None else None,
                "to": data.staff_id,
                "reason": data.reason,
            },
        )
        current = repository.manager_of(conn, member_id)
    assert current is not None
    return MemberManagerOut(
        member_id=member_id,
        staff_id=current["staff_id"],
        name=current["name"],
        assigned_at=current["assigned_at"],
        reason=current["reason"],
    )


def managed_members(
    conn: Connection, staff_id: str, *, after: str | None, limit: int
) -> ManagerMembersOut:
    cursor = decode_cursor(after)  # a bad cursor is refused first, as on every list
    manager = repository.get_manager(conn, staff_id)
    if manager is None:
        raise ManagerNotFound(f"{staff_id} is not an account manager")
    rows = repository.page_managed(conn, staff_id, after=cursor, limit=limit + 1)
    items = [ManagedMember.model_validate(dict(r)) for r in rows[:limit]]
    return ManagerMembersOut(
        staff_id=staff_id,
        name=manager["name"],
        capacity=manager["capacity"],
        active=bool(manager["active"]),
        members=items,
        next_cursor=encode_cursor(items[-1].member_id) if len(rows) > limit else None,
    )


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
        _set_tier(
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


def _set_tier(
    conn: Connection,
    member_id: str,
    tier: str,
    source: str,
    at: datetime,
    until: datetime | None,
    reason: str,
    actor: Principal,
) -> None:
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


def grant(
    conn: Connection, program: Program, member_id: str, data: TierGrant, *, actor: Principal
) -> MembershipOut:
    """Staff set a member's tier by hand; recalculation leaves it alone (until ``until``)."""
    if data.tier not in {t.name for t in program.tiers}:
        raise UnknownTier(f"no tier {data.tier!r} in program {program.name!r}")
    _set_tier(
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


# --- the member's view ----------------------------------------------------------------------


def _shortfalls(
    program: Program, tier_index: int, details: dict[str, Any], score: int
) -> list[Shortfall]:
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
                    any_of=_shortfalls(program, higher, details, row["score"]),
                )
        if details.get("notice"):
            n = details["notice"]
            on = from_us(n["downgrade_on_us"])
            unless = "; or ".join(
                s.text for s in _shortfalls(program, index or 0, details, row["score"])
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
    manager = repository.manager_of(conn, member_id)
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


def past_due_subscriptions(conn: Connection) -> list[tuple[str, str]]:
    """(member, subscription) whose renewal payment failed or is late (``past_due``)."""
    return repository.subscriptions_in(conn, "past_due")


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
        _set_tier(conn, target, mine["tier"], mine["source"], at, mine["until"], reason, actor)
    repository.delete_member_row(conn, tables.member_tiers, source)
    repository.rename_subscription_keys(
        conn, repository.colliding_subscription_keys(conn, source, target), f"#merged:{source}"
    )
    moved = {
        "tier_history": history,
        "subscriptions": repository.move_member_rows(conn, tables.subscriptions, source, target),
        "invitations": repository.move_member_rows(conn, tables.invitations, source, target),
    }
    if repository.manager_of(conn, target) is None:
        moved["managers"] = repository.move_member_rows(
            conn, tables.member_managers, source, target
        )
    else:
        repository.delete_member_row(conn, tables.member_managers, source)
    return moved


def manager_of(conn: Connection, member_id: str) -> ManagerOut | None:
    """The member's account manager (None: the member has none): one keyed read, for the
    service desk's routing of a black-card member's ticket."""
    row = repository.manager_of(conn, member_id)
    return ManagerOut(staff_id=row["staff_id"], name=row["name"]) if row is not None else None


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
    return repository.subscription_counts(conn)


def revenue_by_plan(conn: Connection) -> dict[str, tuple[int, int]]:
    """Plan -> (fees paid, fees refunded), in fen."""
    return repository.revenue_by_plan(conn)


def invitations_by_status(conn: Connection) -> dict[str, int]:
    """Black-card invitations per status (pending, accepted, declined, expired)."""
    return repository.invitation_counts(conn)
