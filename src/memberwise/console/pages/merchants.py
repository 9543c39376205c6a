"""Merchants: scorecards (DSR, refund/dispute/complaint rates, quality percentile), a merchant's
penalty ledger with appeals and actions in force, and recording a violation (operators).

Roles as in the API: scorecards and ledgers for operators, analysts, service and platform
staff; a penalty for operators. A penalty form carries an idempotency key made when the page
was rendered, so a double submit records one entry.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from memberwise.console import charts, i18n
from memberwise.console.nav import NavEntry, may
from memberwise.console.ops_format import percent
from memberwise.console.schemas import ConsoleUser
from memberwise.console.web import PREFIX, Posted, Require, render, runtime_of
from memberwise.kit.db import transaction
from memberwise.merchants import service as merchants
from memberwise.privacy.schemas import Role
from memberwise.privacy.service import authorize

router = APIRouter(prefix="/merchants")
READ_ROLES = frozenset({Role.operator, Role.analyst, Role.service, Role.platform})
NAV = NavEntry("/merchants", "nav.merchants", READ_ROLES, order=50)
PENALTY_ROLES = frozenset({Role.operator})
Reader = Annotated[ConsoleUser, Depends(Require(*READ_ROLES))]

i18n.add(
    {
        "nav.merchants": ("商家", "Merchants"),
        "merch.title": ("商家评分卡", "Merchant scorecards"),
        "merch.merchant": ("商家", "Merchant"),
        "merch.industry": ("行业", "Industry"),
        "merch.dsr": ("DSR 评分", "DSR score"),
        "merch.quality": ("质量分位", "Quality percentile"),
        "merch.refund_rate": ("退款率", "Refund rate"),
        "merch.dispute_rate": ("纠纷率", "Dispute rate"),
        "merch.complaint_rate": ("投诉率", "Complaint rate"),
        "merch.orders": ("订单", "Orders"),
        "merch.points": ("扣分", "Penalty points"),
        "merch.ledger": ("扣分记录", "Penalty ledger"),
        "merch.violation": ("违规", "Violation"),
        "merch.actions": ("生效中的处置", "Actions in force"),
        "merch.appeals": ("申诉", "Appeals"),
        "merch.record": ("记录违规", "Record a violation"),
        "merch.badge": ("徽章", "Badge"),
        "merch.kept_away": ("已从推荐中移除", "kept away from recommendations"),
        "merch.quality_chart": ("质量分位（最差的 50 家）", "Quality percentile (worst 50)"),
    }
)


@router.get("", include_in_schema=False)
def scorecards(request: Request, user: Reader, industry: str | None = None) -> HTMLResponse:
    """The published scorecards, worst quality first, with a chart of the worst."""
    rt = runtime_of(request)
    with transaction(rt.engine) as conn:
        cards = merchants.scorecards(conn, industry=industry or None, limit=200).items
    worst = cards[:50]
    figure = charts.bar(
        [c.merchant_id for c in worst], [round(c.quality_percentile * 100, 1) for c in worst]
    )
    rows = [
        (c.merchant_id, c.industry, f"{c.dsr_score:.2f}", percent(c.quality_percentile, 1),
         percent(c.refund_rate), percent(c.dispute_rate), percent(c.complaint_rate),
         f"{c.orders:,}")
        for c in cards
    ]  # fmt: skip
    return render(request, "merchants.html", user, cards=cards, rows=rows, figure=figure)


@router.get("/{merchant_id}", include_in_schema=False)
def merchant(request: Request, merchant_id: str, user: Reader, saved: bool = False) -> HTMLResponse:
    """One merchant: scorecard, points, actions, penalty entries and appeals. Raises
    MerchantNotFound (a 404 page)."""
    rt = runtime_of(request)
    program = rt.program()
    tz = program.display_timezone
    with transaction(rt.engine) as conn:
        out = merchants.scorecard(conn, program.merchants, merchant_id, tz)
        ledger = merchants.ledger(conn, program.merchants, merchant_id, tz)
    may_penalize = may(user.role, PENALTY_ROLES)
    return render(
        request,
        "merchant.html",
        user,
        merchant_id=merchant_id,
        m=out,
        ledger=ledger,
        violations=sorted(program.merchants.violations.items()),
        may_penalize=may_penalize,
        key=secrets.token_urlsafe(12),
        saved=saved,
    )


@router.post("/{merchant_id}/penalties", include_in_schema=False)
def penalize(
    request: Request,
    merchant_id: str,
    user: Posted,
    violation: Annotated[str, Form(min_length=1, max_length=64)],
    reason: Annotated[str, Form(min_length=1, max_length=2000)],
    key: Annotated[str, Form(min_length=1, max_length=200)],
) -> RedirectResponse:
    """Record a violation (idempotent by the form's key); thresholds take their actions."""
    authorize(user.principal, PENALTY_ROLES)
    rt = runtime_of(request)
    program = rt.program()
    with transaction(rt.engine) as conn:
        merchants.record_violation(
            conn, program.merchants, merchant_id, violation, reason,
            idempotency_key=key, tz=program.display_timezone, actor=user.principal,
        )  # fmt: skip
    merchants.clear_exclusion_cache()
    return RedirectResponse(f"{PREFIX}/merchants/{merchant_id}?saved=true", status_code=303)
