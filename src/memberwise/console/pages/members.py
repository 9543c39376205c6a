"""Member 360: search a member, see everything held about them, act by role.

Every read goes through the owning domain's service, with the signed-in staff member as the
actor, so a PII read is audited exactly as the API audits it (``member.pii_read``). The actions
(grant a tier, adjust points, issue a coupon) call the services the API calls, with the roles the
API allows and an idempotency key drawn when the form is drawn: a double submit changes nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from memberwise.console import i18n
from memberwise.console.member_view import member_view, section_rows
from memberwise.console.nav import READERS, NavEntry, may
from memberwise.console.schemas import ConsoleUser
from memberwise.console.web import PREFIX, Posted, Staff, locale_of, render, runtime_of
from memberwise.kit.db import transaction
from memberwise.kit.errors import InvalidRequest, MemberwiseError
from memberwise.kit.ids import is_valid_id
from memberwise.ledger import coupons, points
from memberwise.ledger import service as ledger
from memberwise.ledger.schemas import AdjustmentIn, IssueIn
from memberwise.members import service as members
from memberwise.membership import grants as membership_grants
from memberwise.membership.schemas import TierGrant
from memberwise.privacy.schemas import Role
from memberwise.privacy.service import authorize

router = APIRouter()
NAV = NavEntry("/members", "nav.members", READERS, order=20)

#: Who may do what, as the API's routes allow (tests/test_app.py POLICY).
GRANT_TIER = frozenset({Role.operator})  # POST /v1/members/{id}/tier
ADJUST_POINTS = frozenset({Role.service})  # POST /v1/members/{id}/points/adjustments
ISSUE_COUPON = frozenset({Role.operator})  # POST /v1/coupons/issuances
AUDIT_READERS = frozenset({Role.admin})  # GET /v1/audit

i18n.add(
    {
        "members.title": ("会员 360", "Member 360"),
        "members.search": ("查找会员", "Find a member"),
        "members.query": ("会员号、手机号或邮箱", "Member id, phone or email"),
        "members.not_found": ("没有找到这位会员", "No member matches"),
        "members.profile": ("画像", "Profile"),
        "members.pii": ("个人信息（已审计）", "Personal data (audited)"),
        "members.pii_hidden": ("此角色不可查看个人信息", "This role may not read personal data"),
        "members.phone": ("手机号", "Phone"),
        "members.email": ("邮箱", "Email"),
        "members.segment": ("生命周期分群", "Lifecycle segment"),
        "members.persona": ("人群", "Persona"),
        "members.tags": ("标签", "Tags"),
        "members.tier": ("等级", "Tier"),
        "members.score": ("成长值构成", "Score parts"),
        "members.next_tier": ("距下一等级", "To the next tier"),
        "members.points": ("积分", "Points"),
        "members.lots": ("积分批次", "Points lots"),
        "members.history": ("积分流水", "Points history"),
        "members.coupons": ("优惠券", "Coupons"),
        "members.orders": ("订单与退款", "Orders and refunds"),
        "members.subscriptions": ("付费会员", "Subscriptions"),
        "members.benefits": ("权益余量", "Benefits remaining"),
        "members.predictions": ("预测", "Predictions"),
        "members.recommendations": ("推荐", "Recommendations"),
        "members.audit": ("谁查看过", "Who viewed this member"),
        "members.actions": ("操作", "Actions"),
        "members.grant_tier": ("授予等级", "Grant a tier"),
        "members.adjust_points": ("调整积分", "Adjust points"),
        "members.issue_coupon": ("发放优惠券", "Issue a coupon"),
        "members.until": ("有效期至（可选）", "Until (optional)"),
        "members.done": ("已完成", "Done"),
        "members.balance": ("余额", "Balance"),
        "col.name": ("名称", "Name"),
        "col.value": ("值", "Value"),
        "col.max": ("上限", "Max"),
        "col.remaining": ("剩余", "Remaining"),
        "col.expires": ("过期时间", "Expires"),
        "col.order": ("订单", "Order"),
        "col.actor": ("操作人", "Actor"),
        "col.action": ("动作", "Action"),
        "col.item": ("商品", "Item"),
        "col.why": ("理由", "Why"),
        "col.score": ("得分", "Score"),
    }
)

T = TypeVar("T")


@router.get("/members", include_in_schema=False)
def search(request: Request, user: Staff, q: str = "") -> Response:
    """The search form; a query that names one member opens their page."""
    authorize(user.principal, READERS)
    query = q.strip()
    if not query:
        return render(request, "members.html", user, q="", missing=False)
    rt = runtime_of(request)
    with transaction(rt.engine) as conn:
        found = members.find_member(conn, rt.cipher, query) if query else None
    if found is not None:
        return RedirectResponse(f"{PREFIX}/members/{found}", status_code=303)
    return render(request, "members.html", user, q=query, missing=True, status_code=404)


@router.get("/members/{member_id}", include_in_schema=False)
def member_page(request: Request, member_id: str, user: Staff) -> HTMLResponse:
    authorize(user.principal, READERS)
    if not is_valid_id(member_id):
        raise InvalidRequest("that is not a member id")
    rt = runtime_of(request)
    view = member_view(rt, member_id, user)
    return render(
        request,
        "member.html",
        user,
        m=view,
        rows=section_rows(view, i18n.yuan, locale_of(rt)),
        idem=secrets.token_urlsafe(16),
        can_grant=may(user.role, GRANT_TIER),
        can_adjust=may(user.role, ADJUST_POINTS),
        can_issue=may(user.role, ISSUE_COUPON),
    )


def _done(request: Request, user: ConsoleUser, message: str) -> HTMLResponse:
    return render(request, "_action_done.html", user, message=message)


def _act(request: Request, user: ConsoleUser, roles: frozenset[Role], work: Callable[[], T]) -> T:
    authorize(user.principal, roles)
    try:
        return work()
    except ValueError as exc:  # a pydantic model refused the form's values
        raise InvalidRequest(str(exc).splitlines()[-1]) from None


@router.post("/members/{member_id}/tier", include_in_schema=False)
def grant_tier(
    request: Request,
    member_id: str,
    user: Posted,
    tier: Annotated[str, Form(max_length=64)],
    reason: Annotated[str, Form(max_length=500)],
) -> HTMLResponse:
    rt = runtime_of(request)

    def work() -> Any:
        grant = TierGrant(tier=tier, reason=reason)
        with transaction(rt.engine) as conn:
            return membership_grants.grant(
                conn, rt.program(), member_id, grant, actor=user.principal
            )

    out = _act(request, user, GRANT_TIER, work)
    t = i18n.translator(rt.program().locale)
    return _done(request, user, f"{t('members.done')}: {t('members.tier')} {out.tier.name}")


@router.post("/members/{member_id}/points", include_in_schema=False)
def adjust_points(
    request: Request,
    member_id: str,
    user: Posted,
    amount: Annotated[int, Form(ge=-(10**9), le=10**9)],
    reason: Annotated[str, Form(max_length=500)],
    idem: Annotated[str, Form(min_length=8, max_length=64)],
) -> HTMLResponse:
    rt = runtime_of(request)
    program = rt.program()

    def work() -> Any:
        data = AdjustmentIn(points=amount, reason=reason)
        return ledger.write(
            rt.engine,
            lambda conn: points.adjust_once(
                conn, program, member_id, data, f"console:{idem}", actor=user.principal
            ),
        )

    out = _act(request, user, ADJUST_POINTS, work)
    t = i18n.translator(program.locale)
    return _done(
        request,
        user,
        f"{t('members.done')}: {out.points:+,} · {t('members.balance')} {out.balance.available:,}",
    )


@router.post("/members/{member_id}/coupons", include_in_schema=False)
def issue_coupon(
    request: Request,
    member_id: str,
    user: Posted,
    template: Annotated[str, Form(max_length=64)],
    idem: Annotated[str, Form(min_length=8, max_length=64)],
) -> HTMLResponse:
    rt = runtime_of(request)
    program = rt.program()

    def work() -> Any:
        data = IssueIn(template=template, member_ids=[member_id])
        return ledger.write(
            rt.engine,
            lambda conn: coupons.issue_once(
                conn, program, data, f"console:{idem}", actor=user.principal
            ),
        )

    out = _act(request, user, ISSUE_COUPON, work)
    if out.refused:
        raise CouponRefused(f"{template}: {', '.join(sorted(set(out.refused.values())))}")
    t = i18n.translator(program.locale)
    return _done(request, user, f"{t('members.done')}: {template} × {out.issued}")


class CouponRefused(MemberwiseError):
    status_code = 409
    code = "coupon_refused"
