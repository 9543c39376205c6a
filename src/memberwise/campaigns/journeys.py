"""Journeys: members enter when the stores show a trigger (points about to expire, a failed
renewal, a pending black-card invitation, churn risk crossed, a tier nearly reached, a downgrade
notice, a cart abandoned), then receive each step's offer after its wait, until the steps run
out or an exit applies (they ordered, or the trigger went away: the points were spent, the
renewal paid, the invitation decided, the tier reached, the tier requalified for, the item
bought).

``run`` is idempotent: an occurrence of a trigger (a lot, a subscription, an invitation, a
model version) enrolls a member once; a step is claimed by moving the enrollment on in the
same transaction that gives the offer, so a replayed or concurrent run gives nothing twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping

from memberwise.campaigns import carts, delivery, repository
from memberwise.campaigns.schemas import (
    EnrollmentOut,
    JourneyCreate,
    JourneyOut,
    JourneyRun,
    TriggerKind,
)
from memberwise.kit.errors import MemberwiseError, NotFound
from memberwise.kit.ids import new_id
from memberwise.kit.lake import EventLake
from memberwise.kit.pagination import Page, decode_cursor, encode_cursor
from memberwise.kit.time import as_utc, utcnow
from memberwise.ledger import coupons as ledger_coupons
from memberwise.ledger import service as ledger
from memberwise.membership import notices
from memberwise.membership import service as membership
from memberwise.predict import service as predict
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, Principal
from memberwise.program.schemas import Program


class JourneyNotFound(NotFound):
    code = "journey_not_found"


def _out(conn: Connection, row: RowMapping) -> JourneyOut:
    return JourneyOut(
        journey_id=row["journey_id"],
        name=row["name"],
        status=row["status"],
        definition=JourneyCreate.model_validate_json(row["definition"]),
        created_at=row["created_at"],
        enrollments=repository.enrollment_counts(conn, row["journey_id"]),
    )


def create(
    conn: Connection, program: Program, body: JourneyCreate, *, actor: Principal
) -> JourneyOut:
    """An active journey. Raises CouponTemplateNotFound for a step's unknown template."""
    for step in body.steps:
        if step.offer.coupon_template:
            ledger_coupons.template_of(program, step.offer.coupon_template)
    journey_id = f"jrn_{new_id()}"
    repository.insert_journey(
        conn,
        {
            "journey_id": journey_id,
            "name": body.name,
            "status": "active",
            "definition": body.model_dump_json(),
            "created_by": actor.key_id,
            "created_at": utcnow(),
        },
    )
    privacy.audit(conn, actor, "journey.create", "journey", journey_id)
    return get(conn, journey_id)


def get(conn: Connection, journey_id: str) -> JourneyOut:
    """Raises JourneyNotFound."""
    row = repository.get_journey(conn, journey_id)
    if row is None:
        raise JourneyNotFound(f"no journey {journey_id!r}")
    return _out(conn, row)


def list_all(conn: Connection) -> list[JourneyOut]:
    return [_out(conn, r) for r in repository.list_journeys(conn)]


def _hits(
    conn: Connection,
    program: Program,
    body: JourneyCreate,
    now: datetime,
    lake: EventLake | None,
    details: dict[tuple[str, str], str],
) -> list[tuple[str, str]]:
    """(member, trigger key) of every current occurrence of the journey's trigger; what a
    step may tell the member about it goes into ``details`` ("230.00 CNY more net spend for
    gold")."""
    trigger = body.trigger
    kind = trigger.kind
    if kind is TriggerKind.points_expiring:
        lots = ledger.points_expiring(conn, now, now + timedelta(days=trigger.days))
        return [(m, f"lot:{lot}") for m, lot, _ in lots]
    if kind is TriggerKind.renewal_failed:
        return [(m, f"sub:{s}") for m, s in membership.past_due_subscriptions(conn)]
    if kind is TriggerKind.invitation_pending:
        return [(m, f"inv:{i}") for m, i in membership.pending_invitations(conn)]
    if kind is TriggerKind.tier_near:
        near = notices.near_next_tier(
            conn, program, within_fen=trigger.within_fen, within_points=trigger.within_points
        )
        details.update({(n.member_id, n.key): n.text for n in near})
        return [(n.member_id, n.key) for n in near]
    if kind is TriggerKind.downgrade_notice:
        pending = notices.pending_notices(conn, now)
        return sorted(notices.notices_standing(conn, pending)) if pending else []
    if kind is TriggerKind.cart_abandoned:
        if lake is None:
            return []
        return carts.abandoned(lake, now, hours=trigger.hours, days=trigger.days)
    return [(m, f"model:{v}") for m, v in predict.churn_at_least(conn, trigger.threshold)]


def _still_triggered(
    conn: Connection,
    program: Program,
    body: JourneyCreate,
    rows: list[RowMapping],
    now: datetime,
    lake: EventLake | None,
) -> set[tuple[str, str]]:
    """(member, trigger key) of ``rows`` whose cause still stands."""
    pairs = {(r["member_id"], r["trigger_key"]) for r in rows}
    keys = {k for _, k in pairs}
    kind = body.trigger.kind
    if kind is TriggerKind.points_expiring:
        held = ledger.lots_still_held(conn, [k.removeprefix("lot:") for k in keys])
        standing = {f"lot:{lot}" for lot in held}
    elif kind is TriggerKind.renewal_failed:
        standing = {f"sub:{s}" for _, s in membership.past_due_subscriptions(conn)}
    elif kind is TriggerKind.invitation_pending:
        standing = {f"inv:{i}" for _, i in membership.pending_invitations(conn)}
    elif kind is TriggerKind.tier_near:  # until the member holds the tier they were near
        return pairs - notices.tiers_reached(conn, program, sorted(pairs))
    elif kind is TriggerKind.downgrade_notice:  # until they requalify (or the date passes)
        return notices.notices_standing(conn, sorted(pairs))
    elif kind is TriggerKind.cart_abandoned:  # until they buy the item
        if lake is None:
            return pairs
        since = min(as_utc(r["entered_at"]) for r in rows) - timedelta(days=body.trigger.days)
        return pairs - carts.bought(lake, sorted(pairs), since, now)
    else:
        return pairs  # a crossing of churn risk stays a reason until the member orders
    return {(m, k) for m, k in pairs if k in standing}


def run(
    conn: Connection,
    program: Program,
    *,
    now: datetime | None = None,
    actor: Principal = SYSTEM,
    lake: EventLake | None = None,
) -> JourneyRun:
    """Enroll new triggers of every active journey and run every due step. ``lake`` is read by
    cart triggers (without it they find nothing)."""
    now = as_utc(now or utcnow())
    report = JourneyRun()
    for row in repository.list_journeys(conn, status="active"):
        journey_id = row["journey_id"]
        body = JourneyCreate.model_validate_json(row["definition"])
        first = now + timedelta(hours=body.steps[0].wait_hours)
        details: dict[tuple[str, str], str] = {}
        report.enrolled += repository.enroll(
            conn,
            [
                {
                    "journey_id": journey_id,
                    "member_id": member_id,
                    "trigger_key": key,
                    "step": 0,
                    "status": "active",
                    "next_at": first,
                    "entered_at": now,
                    "exit_reason": None,
                    "updated_at": now,
                }
                for member_id, key in _hits(conn, program, body, now, lake, details)
            ],
        )
        due = repository.due_enrollments(conn, journey_id, now)
        if not due:
            continue
        standing = _still_triggered(conn, program, body, due, now, lake)
        ordered: set[tuple[str, datetime]] = set()
        if body.exit_on_order:
            groups: dict[datetime, list[str]] = {}
            for r in due:
                groups.setdefault(r["entered_at"], []).append(r["member_id"])
            for entered, member_ids in groups.items():
                spend = ledger.spend_by_member(conn, member_ids, entered, now)
                ordered |= {(m, entered) for m, (n, _) in spend.items() if n}
        reach = delivery.Reach(conn, program, body.channels)
        for enrollment in due:
            _step(
                conn,
                program,
                row,
                body,
                dict(enrollment),
                standing,
                ordered,
                reach,
                details.get((enrollment["member_id"], enrollment["trigger_key"])),
                now,
                actor,
                report,
            )
    return report


def _step(
    conn: Connection,
    program: Program,
    journey: RowMapping,
    body: JourneyCreate,
    enrollment: dict[str, Any],
    standing: set[tuple[str, str]],
    ordered: set[tuple[str, datetime]],
    reach: delivery.Reach,
    detail: str | None,
    now: datetime,
    actor: Principal,
    report: JourneyRun,
) -> None:
    """Exit, or claim and run the enrollment's next step (``{detail}`` in its message becomes
    ``detail``, e.g. what is missing for the next tier)."""
    member_id, step = enrollment["member_id"], int(enrollment["step"])
    exit_reason = None
    if (member_id, enrollment["trigger_key"]) not in standing:
        exit_reason = "trigger_resolved"
    elif (member_id, enrollment["entered_at"]) in ordered:
        exit_reason = "ordered"
    if exit_reason is not None:
        if repository.advance(
            conn,
            enrollment,
            {"status": "exited", "exit_reason": exit_reason, "next_at": None, "updated_at": now},
        ):
            report.exited += 1
        return
    last = step + 1 >= len(body.steps)
    values = {
        "step": step + 1,
        "status": "completed" if last else "active",
        "next_at": None if last else now + timedelta(hours=body.steps[step + 1].wait_hours),
        "updated_at": now,
    }
    if not repository.advance(conn, enrollment, values):
        return  # another run took this step
    key = f"journey:{journey['journey_id']}:{enrollment['trigger_key']}:{step}"
    channels = reach.of(member_id)
    if not channels:
        repository.note(conn, enrollment, f"step {step} skipped: consent_withheld", now)
        report.skipped += 1
        return
    offer = body.steps[step].offer
    if detail is not None and "{detail}" in offer.message:
        offer = offer.model_copy(update={"message": offer.message.replace("{detail}", detail)})
    try:
        delivery.deliver(
            conn,
            program,
            event_type="journey.step",
            key=key,
            member_id=member_id,
            offer=offer,
            channels=channels,
            context={
                "journey_id": journey["journey_id"],
                "journey": journey["name"],
                "step": step,
                "trigger": enrollment["trigger_key"],
                **({"detail": detail} if detail is not None else {}),
            },
            reason=f"journey {journey['name']}",
            now=now,
            actor=actor,
        )
    except MemberwiseError as exc:
        # The step is spent either way (moving on is what makes a replay safe); the reason is
        # kept on the enrollment for the operator.
        repository.note(conn, enrollment, f"step {step} skipped: {exc.code}", now)
        report.skipped += 1
        return
    report.stepped += 1
    report.completed += last


def enrollments(
    conn: Connection, journey_id: str, *, after: str | None, limit: int, status: str | None
) -> Page[EnrollmentOut]:
    """Each member's progress in a journey. Raises JourneyNotFound, InvalidCursor."""
    get(conn, journey_id)
    rows = repository.page_enrollments(
        conn, journey_id, after=decode_cursor(after), limit=limit + 1, status=status
    )
    items = [EnrollmentOut(**{k: r[k] for k in EnrollmentOut.model_fields}) for r in rows[:limit]]
    cursor = (
        encode_cursor(f"{items[-1].member_id}\x1f{items[-1].trigger_key}")
        if len(rows) > limit
        else None
    )
    return Page(items=items, next_cursor=cursor)
