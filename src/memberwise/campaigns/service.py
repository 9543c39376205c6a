"""Campaigns: an audience from the published build, a holdout and one offer or several offer
arms (A/B/n) by deterministic salted assignment, each offer sent at each member's best hour
through the ledgers and the platform's webhooks, and the measured effect. Nothing here
commits: callers own the transaction.

The send is a webhook (``campaign.send`` in the outbox): the platform owns the push, SMS and app
channels. Every targeted member's arm and send is kept (the exposure log), so the analysis
compares the arms as assigned — held-out members included — not only those reached.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, RowMapping

from memberwise.campaigns import delivery, repository
from memberwise.campaigns.assignment import assign
from memberwise.campaigns.schemas import (
    HOLDOUT,
    CampaignCreate,
    CampaignMemberOut,
    CampaignOut,
    OfferKind,
    SendReport,
)
from memberwise.kit.errors import Conflict, InvalidRequest, MemberwiseError, NotFound
from memberwise.kit.ids import new_id
from memberwise.kit.pagination import Page, decode_cursor, encode_cursor
from memberwise.kit.time import as_utc, utcnow
from memberwise.ledger import coupons as ledger_coupons
from memberwise.ledger import service as ledger
from memberwise.predict import service as predict
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, Principal
from memberwise.profiles import service as profiles
from memberwise.program.schemas import Program


class CampaignNotFound(NotFound):
    code = "campaign_not_found"


class CampaignNotDraft(Conflict):
    code = "campaign_already_launched"


class CampaignNotLaunched(Conflict):
    code = "campaign_not_launched"


class EmptyAudience(InvalidRequest):
    code = "campaign_audience_empty"


def _get(conn: Connection, campaign_id: str) -> RowMapping:
    row = repository.get_campaign(conn, campaign_id)
    if row is None:
        raise CampaignNotFound(f"no campaign {campaign_id!r}")
    return row


def _out(conn: Connection, row: RowMapping) -> CampaignOut:
    return CampaignOut(
        campaign_id=row["campaign_id"],
        name=row["name"],
        status=row["status"],
        definition=CampaignCreate.model_validate_json(row["definition"]),
        created_at=row["created_at"],
        launched_at=row["launched_at"],
        members=repository.status_counts(conn, row["campaign_id"]),
        arms=repository.arm_status_counts(conn, row["campaign_id"]),
    )


def create(
    conn: Connection, program: Program, body: CampaignCreate, *, actor: Principal
) -> CampaignOut:
    """A draft campaign. Raises CouponTemplateNotFound when an offer names no template of
    the program."""
    for offer in body.offers().values():
        if offer.kind is OfferKind.coupon:
            ledger_coupons.template_of(program, offer.coupon_template or "")
    campaign_id = f"cmp_{new_id()}"
    repository.insert_campaign(
        conn,
        {
            "campaign_id": campaign_id,
            "name": body.name,
            "status": "draft",
            "definition": body.model_dump_json(),
            "salt": secrets.token_hex(16),
            "mde_fen": None,
            "created_by": actor.key_id,
            "created_at": utcnow(),
            "launched_at": None,
        },
    )
    privacy.audit(conn, actor, "campaign.create", "campaign", campaign_id)
    return _out(conn, _get(conn, campaign_id))


def get(conn: Connection, campaign_id: str) -> CampaignOut:
    """Raises CampaignNotFound."""
    return _out(conn, _get(conn, campaign_id))


def list_all(conn: Connection) -> list[CampaignOut]:
    return [_out(conn, r) for r in repository.list_campaigns(conn)]


def _quiet(hour: int, quiet: tuple[int, int]) -> bool:
    start, end = quiet
    if start == end:
        return False
    return (hour >= start or hour < end) if start > end else start <= hour < end


def send_time(
    now: datetime, best_hour: int | None, quiet: tuple[int, int], zone: ZoneInfo
) -> datetime:
    """The first time at or after ``now`` at the member's best local hour (or now, without one),
    moved past quiet hours to their end."""
    local = now.astimezone(zone)
    if best_hour is not None:
        at = local.replace(hour=best_hour, minute=0, second=0, microsecond=0)
        if at < local:
            at += timedelta(days=1)
    else:
        at = local
    if _quiet(at.hour, quiet):
        end = at.replace(hour=quiet[1], minute=0, second=0, microsecond=0)
        at = end if end > at else end + timedelta(days=1)
    return as_utc(at)


def launch(
    conn: Connection,
    program: Program,
    campaign_id: str,
    *,
    now: datetime | None = None,
    actor: Principal,
) -> CampaignOut:
    """Take the audience from the published build, assign every member to the holdout or the
    treatment, and schedule the treatment's sends.

    Raises CampaignNotFound, CampaignNotDraft when it was launched before, EmptyAudience."""
    now = as_utc(now or utcnow())
    row = _get(conn, campaign_id)
    if row["status"] != "draft":
        raise CampaignNotDraft(f"campaign {campaign_id!r} is {row['status']}, not a draft")
    body = CampaignCreate.model_validate_json(row["definition"])
    aud = body.audience
    members = profiles.audience(conn, segment=aud.segment, persona=aud.persona, tag=aud.tag)
    if not members:
        raise EmptyAudience("the audience has no member in the published build")
    arms = assign(row["salt"], members, body.ratios())
    treated = [m for m in members if arms[m] != HOLDOUT]
    hours = predict.best_hours(conn, treated) if body.send_at_best_hour else {}
    zone = ZoneInfo(program.display_timezone)
    repository.insert_members(
        conn,
        [
            {
                "campaign_id": campaign_id,
                "member_id": m,
                "arm": arms[m],
                "status": "held_out" if arms[m] == HOLDOUT else "scheduled",
                "reason": None,
                "send_at": None
                if arms[m] == HOLDOUT
                else send_time(now, hours.get(m), body.quiet_hours, zone),
                "sent_at": None,
                "message_id": None,
            }
            for m in members
        ],
    )
    # The sequential test's tuning is fixed now, before any outcome: 5 % of the pre-period's
    # spend per member (at least 1 yuan).
    pre = ledger.spend_by_member(conn, members, now - timedelta(days=body.pre_period_days), now)
    pre_mean = sum(s for _, s in pre.values()) / len(members)
    mde = max(100.0, 0.05 * pre_mean)
    if (
        repository.update_campaign(
            conn, campaign_id, {"status": "running", "launched_at": now, "mde_fen": f"{mde:.1f}"}
        )
        == 0
    ):
        raise CampaignNotDraft(f"campaign {campaign_id!r} was launched meanwhile")
    privacy.audit(
        conn,
        actor,
        "campaign.launch",
        "campaign",
        campaign_id,
        details={
            "members": len(members),
            "treatment": len(treated),
            "arms": {a: sum(v == a for v in arms.values()) for a in body.ratios()},
        },
    )
    return _out(conn, _get(conn, campaign_id))


def send_due(
    conn: Connection,
    program: Program,
    *,
    now: datetime | None = None,
    limit: int = 5000,
    actor: Principal = SYSTEM,
) -> SendReport:
    """Send what is due: the frequency cap across campaigns, the member's marketing consent
    per channel (sent only on the channels consented to), the points budget and the ledger's
    own refusals (a coupon past its budget or limit) skip a member with the reason;
    a sent member gets the offer through the ledgers and a ``campaign.send`` webhook. A
    repeated pass sends nothing twice."""
    now = as_utc(now or utcnow())
    report = SendReport()
    due = repository.due(conn, now, limit)
    by_campaign: dict[str, list[str]] = {}
    arm_of: dict[tuple[str, str], str] = {}
    for r in due:
        by_campaign.setdefault(r["campaign_id"], []).append(r["member_id"])
        arm_of[r["campaign_id"], r["member_id"]] = r["arm"]
    for campaign_id, member_ids in by_campaign.items():
        row = _get(conn, campaign_id)
        body = CampaignCreate.model_validate_json(row["definition"])
        capped = (
            repository.sent_since(conn, member_ids, now - timedelta(days=body.frequency_cap_days))
            if body.frequency_cap_days
            else set()
        )
        offers = body.offers()
        budget_left = None
        if body.points_budget is not None:
            # The budget counts the points of every arm's sends so far.
            sent = repository.sent_by_arm(conn, campaign_id)
            spent = sum(
                n * (offers[a].points or 0)
                for a, n in sent.items()
                if a in offers and offers[a].kind is OfferKind.points
            )
            budget_left = body.points_budget - spent
        reach = delivery.Reach(conn, program, body.channels)
        marks = []
        for member_id in member_ids:
            offer = offers.get(arm_of[campaign_id, member_id])
            if offer is None:  # an arm no longer defined: nothing to give
                marks.append(_skip(campaign_id, member_id, "unknown_arm"))
                continue
            points = (offer.points or 0) if offer.kind is OfferKind.points else 0
            if member_id in capped:
                marks.append(_skip(campaign_id, member_id, "frequency_cap"))
                continue
            channels = reach.of(member_id)
            if not channels:
                marks.append(_skip(campaign_id, member_id, "consent_withheld"))
                continue
            if budget_left is not None and budget_left < points:
                marks.append(_skip(campaign_id, member_id, "points_budget_exhausted"))
                continue
            try:
                message_id = delivery.deliver(
                    conn,
                    program,
                    event_type="campaign.send",
                    key=f"campaign:{campaign_id}",
                    member_id=member_id,
                    offer=offer,
                    channels=channels,
                    context={
                        "campaign_id": campaign_id,
                        "campaign": row["name"],
                        "arm": arm_of[campaign_id, member_id],
                    },
                    reason=f"campaign {row['name']}",
                    now=now,
                    actor=actor,
                )
            except MemberwiseError as exc:
                marks.append(_skip(campaign_id, member_id, exc.code))
                continue
            if budget_left is not None:
                budget_left -= points
            capped.add(member_id)
            marks.append(
                {
                    "campaign_id": campaign_id,
                    "member_id": member_id,
                    "status": "sent",
                    "sent_at": now,
                    "message_id": message_id,
                }
            )
        repository.mark(conn, marks)
        report.sent += sum(m["status"] == "sent" for m in marks)
        report.skipped += sum(m["status"] == "skipped" for m in marks)
    return report


def _skip(campaign_id: str, member_id: str, reason: str) -> dict[str, object]:
    return {
        "campaign_id": campaign_id,
        "member_id": member_id,
        "status": "skipped",
        "reason": reason,
    }


def members(
    conn: Connection,
    campaign_id: str,
    *,
    after: str | None,
    limit: int,
    status: str | None = None,
    arm: str | None = None,
) -> Page[CampaignMemberOut]:
    """The exposure log, in member order. Raises CampaignNotFound, InvalidCursor."""
    _get(conn, campaign_id)
    rows = repository.page_members(
        conn, campaign_id, after=decode_cursor(after), limit=limit + 1, status=status, arm=arm
    )
    items = [
        CampaignMemberOut(**{k: r[k] for k in CampaignMemberOut.model_fields}) for r in rows[:limit]
    ]
    cursor = encode_cursor(items[-1].member_id) if len(rows) > limit else None
    return Page(items=items, next_cursor=cursor)
