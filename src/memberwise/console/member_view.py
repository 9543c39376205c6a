"""Everything Member 360 shows about one member, read through each domain's service.

A section whose source has nothing yet (no build published, no predictions, an unknown member
in the ledger) is ``None`` and the page says so; it never fails the page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from memberwise.console import engine_words
from memberwise.console.schemas import ConsoleUser
from memberwise.kit.db import transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.kit.time import utcnow
from memberwise.ledger import benefits, coupons, orders, points
from memberwise.members import service as members
from memberwise.membership import member_view as membership_view
from memberwise.predict import service as predict
from memberwise.privacy import consent
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import Purpose, Role
from memberwise.profiles import service as profiles
from memberwise.recommend import service as recommend
from memberwise.recommend.serving import recent_events
from memberwise.runtime import Runtime

T = TypeVar("T")


def _maybe(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except MemberwiseError:
        return None


@dataclass
class MemberView:
    """The sections of a member's page (each None when its source has nothing)."""

    member_id: str
    member: Any
    profile: Any
    persona: str | None
    membership: Any
    points: Any
    coupons: list[Any]
    orders: list[Any]
    benefits: Any
    predictions: Any
    recommendations: Any
    audit: list[Any] | None
    tiers: list[str]
    templates: list[str]
    #: The program's name for its score (淘气值), in what the member misses for the next tier.
    score_name: str = ""


def _persona_label(segments: Any, persona: int | None) -> str | None:
    if persona is None:
        return None
    for p in segments.personas:
        if p.id == persona:
            return f"{p.label} ({p.name})" if p.label != p.name else p.name
    return f"persona-{persona}"


def member_view(rt: Runtime, member_id: str, user: ConsoleUser) -> MemberView:
    """Read every section for ``user`` (their PII read, if their role allows one, is audited
    in the same transaction). Raises MemberNotFound for an unknown member."""
    program = rt.program()
    actor = user.principal
    with transaction(rt.engine) as conn:
        member = members.get_member(conn, rt.cipher, member_id, actor=actor)
        profile = _maybe(lambda: profiles.get_profile(conn, member_id))
        persona = _persona_label(profiles.list_segments(conn), profile.persona) if profile else None
        view = MemberView(
            member_id=member_id,
            member=member,
            profile=profile,
            persona=persona,
            membership=_maybe(lambda: membership_view.membership(conn, program, member_id)),
            points=_maybe(lambda: points.points_of(conn, member_id, after=None, limit=20)),
            coupons=_maybe(
                lambda: coupons.member_coupons(conn, member_id, status=None, after=None, limit=50)[
                    0
                ]
            )
            or [],
            orders=_maybe(lambda: orders.member_orders(conn, member_id, after=None, limit=20).items)
            or [],
            benefits=_maybe(lambda: benefits.benefits_now(conn, program, member_id, utcnow())),
            predictions=_maybe(lambda: predict.get_member_predictions(conn, member_id)),
            recommendations=None,
            audit=(
                privacy.list_audit(conn, limit=50, member_id=member_id).items
                if user.role is Role.admin
                else None
            ),
            tiers=[t.name for t in program.tiers],
            templates=sorted(program.coupons),
            score_name=program.score.name,
        )
        personalize = consent.allows(conn, program.privacy, member_id, Purpose.personalization)
        view.recommendations = _maybe(
            lambda: recommend.recommend(
                conn, recent_events(rt.lake), member_id, n=10, personalize=personalize
            )
        )
    return view


Row = tuple[str, ...]


def _when(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value is not None else "-"


def _num(value: float | None, fmt: str = "{:,.2f}") -> str:
    return fmt.format(value) if value is not None else "-"


def prediction_rows(p: Any, yuan: Callable[[int | None], str], locale: str = "en") -> list[Row]:
    """Each prediction with the model's inputs that explain it, in the page's language
    (:func:`engine_words.prediction_reasons`)."""
    why = engine_words.prediction_reasons(p, locale, yuan)
    return [
        ("clv_12m", yuan(p.clv_12m_fen), why["clv_12m"]),
        ("p_alive", _num(p.p_alive), why["p_alive"]),
        ("churn_risk", _num(p.churn_risk), why["churn_risk"]),
        ("expected_purchases_90d", _num(p.expected_purchases_90d), why["expected_purchases_90d"]),
        ("next_purchase_date", str(p.next_purchase_date or "-"), why["next_purchase_date"]),
    ]


def section_rows(
    view: MemberView, yuan: Callable[[int | None], str], locale: str = "en"
) -> dict[str, list[Row]]:
    """The member page's tables, as rows of display strings; the engines' sentences (reasons,
    what is missing for the next tier) in the page's ``locale``."""
    ms, pts = view.membership, view.points
    code = engine_words.coder(locale)
    return {
        "next_tier": [
            (engine_words.shortfall(s, view.score_name, locale, yuan),)
            for s in (ms.next_tier.any_of if ms is not None and ms.next_tier is not None else [])
        ],
        "score": [
            (part.name, _num(part.value, "{:,.0f}"), _num(part.points), _num(part.max, "{:,.0f}"))
            for part in (ms.score.parts if ms is not None and ms.score is not None else [])
        ],
        "lots": [
            (
                f"{lot.points:,}",
                f"{lot.remaining:,}",
                code("lot", lot.status),
                _when(lot.expires_at),
            )
            for lot in (pts.lots if pts is not None else [])
        ],
        "history": [
            (
                _when(e.created_at),
                code("entry", e.kind),
                f"{e.available_delta:+,}"
                + (f" ({code('lot', 'pending')} {e.pending_delta:+,})" if e.pending_delta else ""),
                e.reason or "",
            )
            for e in (pts.history.items if pts is not None else [])
        ],
        "coupons": [
            (c.template, code("coupon", c.status), _when(c.valid_until), yuan(c.discount))
            for c in view.coupons
        ],
        "orders": [
            (
                o.order_id,
                _when(o.placed_at),
                code("order", o.status),
                yuan(o.paid),
                yuan(o.refunded) + (f" ({len(o.refunds)})" if o.refunds else ""),
                f"{o.points_earned:,}",
            )
            for o in view.orders
        ],
        "subscriptions": [
            (s.plan, code("subscription", s.status), yuan(s.fee), _when(s.period_end))
            for s in (ms.subscriptions if ms is not None else [])
        ],
        "benefits": [
            (
                b.name,
                b.kind,
                "-"
                if b.remaining is None
                else f"{b.remaining:,} / {b.limit:,}" + (f" ({b.period})" if b.period else ""),
            )
            for b in (view.benefits.benefits if view.benefits is not None else [])
        ],
        "predictions": (
            prediction_rows(view.predictions, yuan, locale) if view.predictions else []
        ),
        "recommendations": [
            (
                str(r.rank),
                f"{r.title or r.item_id}",
                engine_words.reason(r.source, r.reason, locale),
            )
            for r in (view.recommendations.items if view.recommendations is not None else [])
        ],
        "audit": [(_when(a.ts), a.actor, a.actor_role, a.action) for a in (view.audit or [])],
    }
