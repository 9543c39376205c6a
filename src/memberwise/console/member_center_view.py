"""What the member center shows one member, gathered from the domains' services in one read.

Nothing here writes except :func:`change_consent` (the member's own answer, through the
privacy service). Sections a member does not have yet (no tier before the first build, no
published recommendations) are empty, never an error: the member center always opens for a
member the platform registered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from memberwise.console import engine_words
from memberwise.console.member_i18n import Words
from memberwise.ledger import benefits as ledger_benefits
from memberwise.ledger import coupons as ledger_coupons
from memberwise.ledger import points as ledger_points
from memberwise.ledger import service as ledger
from memberwise.ledger.benefits import BenefitStatus
from memberwise.ledger.schemas import CouponOut, CouponStatus, Lot
from memberwise.membership import member_view as membership_view
from memberwise.membership import service as membership
from memberwise.membership.schemas import MembershipOut
from memberwise.privacy import consent
from memberwise.privacy.schemas import (
    ConsentIn,
    ConsentStatus,
    Principal,
    Purpose,
    PurposeState,
    Role,
)
from memberwise.program.ledger import CouponKind
from memberwise.program.schemas import Program
from memberwise.recommend import service as recommend
from memberwise.recommend.schemas import RecommendationsOut
from memberwise.recommend.serving import RecentEvents

#: Points expiring within this many days are listed.
EXPIRY_DAYS = 90
COUPONS_SHOWN = 20
RECS_SHOWN = 6
#: Benefit kinds whose counters are money (fen), shown in yuan.
MONEY_KINDS = frozenset({"express_refund"})


@dataclass(frozen=True)
class Progress:
    """One condition towards the next tier: what it says and how far along (0-100)."""

    text: str
    percent: int


@dataclass(frozen=True)
class Expiring:
    on: datetime
    points: int


@dataclass(frozen=True)
class CouponLine:
    coupon: CouponOut
    description: str
    terms: str


@dataclass
class MemberCenter:
    """The member center of one member, ready for the templates."""

    member_id: str
    program: str
    membership: MembershipOut | None
    progress: list[Progress]
    score_percent: int
    #: True when no tier above the member's can be reached by qualifying.
    top_tier: bool
    benefits: list[BenefitStatus]
    available: int
    pending: int
    debt: int
    expiring: list[Expiring]
    coupons: list[CouponLine]
    recommendations: RecommendationsOut
    consents: list[PurposeState] = field(default_factory=list)
    #: The program's descriptions in the page's language: of the member's tier, and of each
    #: plan by name (``description_zh`` on a Chinese page when the program has one).
    tier_description: str = ""
    plan_descriptions: dict[str, str] = field(default_factory=dict)


def member_principal(member_id: str) -> Principal:
    """The actor of a member's own change from the member center (in the audit log)."""
    return Principal(key_id="member-center", role=Role.platform, name=f"member {member_id}")


def _percent(have: int | None, need: int | None) -> int:
    if not need:
        return 100
    return max(0, min(100, round(100 * (have or 0) / need)))


def _coupon_terms(words: Words, program: Program, coupon: CouponOut) -> tuple[str, str]:
    template = program.coupons.get(coupon.template)
    if template is None:
        return coupon.template, ""
    zh = words.locale == "zh-CN"
    if template.kind == CouponKind.percent_off:
        value = f"{100 - template.percent}折" if zh else f"{template.percent}% off"
    elif template.kind == CouponKind.free_shipping:
        value = "免运费" if zh else "free shipping"
    else:
        value = f"减{words.yuan(template.amount)}" if zh else f"{words.yuan(template.amount)} off"
    if template.min_spend:
        value = f"{words.label('min_spend')} {words.yuan(template.min_spend)} {value}"
    return engine_words.described(template, words.locale) or coupon.template, value


def _expiring(lots: list[Lot], now: datetime, zone: ZoneInfo) -> list[Expiring]:
    """Points still held that expire within :data:`EXPIRY_DAYS`, summed per local day."""
    horizon = now + timedelta(days=EXPIRY_DAYS)
    days: dict[str, Expiring] = {}
    for lot in lots:
        if lot.expires_at is None or lot.remaining <= 0 or not now < lot.expires_at <= horizon:
            continue
        key = lot.expires_at.astimezone(zone).date().isoformat()
        prev = days.get(key)
        days[key] = Expiring(lot.expires_at, lot.remaining + (prev.points if prev else 0))
    return [days[k] for k in sorted(days)]


def gather(
    conn: Connection,
    program: Program,
    recent: RecentEvents,
    member_id: str,
    *,
    words: Words,
    now: datetime,
) -> MemberCenter:
    """Everything the member center shows. Raises MemberUnknown (ledger) for an unknown id."""
    ledger.member_exists(conn, member_id)
    try:
        ms: MembershipOut | None = membership_view.membership(conn, program, member_id)
    except membership.MembershipNotFound:
        ms = None
    progress: list[Progress] = []
    score_percent = 0
    if ms is not None and ms.next_tier is not None:
        progress = [
            Progress(
                engine_words.shortfall(s, program.score.name, words.locale, words.yuan),
                _percent(s.have, s.need),
            )
            for s in ms.next_tier.any_of
        ]
    if ms is not None and ms.score is not None:
        score_percent = _percent(ms.score.value, ms.score.max)
    names = [t.name for t in program.tiers]
    top = ms is not None and ms.tier is not None and ms.tier.name in names
    if top and ms is not None and ms.tier is not None:
        top = not any(t.automatic for t in program.tiers[names.index(ms.tier.name) + 1 :])
    points = ledger_points.points_of(conn, member_id, limit=1)
    issued, _ = ledger_coupons.member_coupons(
        conn, member_id, status=CouponStatus.issued, limit=COUPONS_SHOWN
    )
    coupons = [
        CouponLine(c, *_coupon_terms(words, program, c)) for c in issued if c.valid_until > now
    ]
    personalize = consent.allows(conn, program.privacy, member_id, Purpose.personalization)
    recs = recommend.recommend(conn, recent, member_id, n=RECS_SHOWN, personalize=personalize)
    return MemberCenter(
        member_id=member_id,
        program=program.name,
        membership=ms,
        progress=progress,
        score_percent=score_percent,
        top_tier=top,
        benefits=ledger_benefits.benefits_now(conn, program, member_id, now).benefits,
        available=points.balance.available,
        pending=points.balance.pending,
        debt=points.balance.debt,
        expiring=_expiring(points.lots, now, ZoneInfo(program.display_timezone)),
        coupons=coupons,
        recommendations=recs,
        consents=consent.state(conn, program.privacy, member_id).purposes,
        tier_description=engine_words.described(
            next((t for t in program.tiers if ms and ms.tier and t.name == ms.tier.name), None),
            words.locale,
        ),
        plan_descriptions={
            name: engine_words.described(plan, words.locale) for name, plan in program.plans.items()
        },
    )


def consents(conn: Connection, program: Program, member_id: str) -> list[PurposeState]:
    """The member's consent per purpose. Raises MemberUnknown for an unknown id."""
    ledger.member_exists(conn, member_id)
    return consent.state(conn, program.privacy, member_id).purposes


def change_consent(
    conn: Connection,
    program: Program,
    member_id: str,
    purpose: str,
    status: ConsentStatus,
    request_id: str,
) -> bool:
    """Record the member's own answer (idempotent by ``request_id``); True when new.

    Raises MemberUnknown, UnknownPurpose, ConsentRequestReused.
    """
    ledger.member_exists(conn, member_id)
    body = ConsentIn(purpose=purpose, status=status, channel="member_center", request_id=request_id)
    _, new = consent.record(
        conn, program.privacy, member_id, body, actor=member_principal(member_id)
    )
    return new
