"""Privacy requests: the staff queue of data-subject requests by deadline (overdue ones marked)
and closing one -- complete (the service does what was asked: archive, correction, erasure) or
reject with a reason.

Roles as in the API: service staff (and admin) work the queue.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from memberwise.console import i18n
from memberwise.console.nav import NavEntry
from memberwise.console.ops_format import countdown
from memberwise.console.schemas import ConsoleUser
from memberwise.console.web import PREFIX, Posted, Require, render, runtime_of
from memberwise.kit.db import transaction
from memberwise.kit.time import utcnow
from memberwise.privacy import erasure, rights
from memberwise.privacy.schemas import RequestDecision, RequestStatus, Role
from memberwise.privacy.service import authorize

router = APIRouter(prefix="/privacy")
ROLES = frozenset({Role.service})
NAV = NavEntry("/privacy", "nav.privacy", ROLES, order=80)
Staff = Annotated[ConsoleUser, Depends(Require(*ROLES))]

i18n.add(
    {
        "nav.privacy": ("隐私请求", "Privacy requests"),
        "dsr.title": ("个人信息权利请求", "Data-subject requests"),
        "dsr.request": ("请求", "Request"),
        "dsr.kind": ("类型", "Kind"),
        "dsr.received": ("收到", "Received"),
        "dsr.due": ("截止", "Due"),
        "dsr.left": ("剩余", "Left"),
        "dsr.overdue": ("已逾期", "overdue"),
        "dsr.complete": ("完成", "Complete"),
        "dsr.reject": ("拒绝", "Reject"),
        "dsr.show": ("显示", "Show"),
        "dsr.done": ("已处理。", "Done."),
        "dsr.outcome": ("结果", "Outcome"),
    }
)


@router.get("", include_in_schema=False)
def queue(
    request: Request, user: Staff, status: RequestStatus = RequestStatus.open, done: bool = False
) -> HTMLResponse:
    """Requests of ``status`` by deadline, oldest first, with the time left."""
    rt = runtime_of(request)
    with transaction(rt.engine) as conn:
        items = rights.queue(conn, status=status, limit=200)
    now = utcnow()
    rows = [{"r": r, "left": countdown(r.due_at, now)[0]} for r in items]
    return render(
        request, "privacy_requests.html", user, rows=rows, status=status.value,
        statuses=[s.value for s in RequestStatus], done=done,
    )  # fmt: skip


@router.post("/{request_id}/decision", include_in_schema=False)
def decide(
    request: Request,
    request_id: str,
    user: Posted,
    action: Annotated[Literal["complete", "reject"], Form()],
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> RedirectResponse:
    """Complete or reject. Raises RequestNotFound, RequestClosed, MemberErased (4xx pages)."""
    authorize(user.principal, ROLES)
    rt = runtime_of(request)
    secret = erasure.tombstone_secret(rt.settings.pii_key_bytes)
    rights.decide(
        rt.engine, rt.lake, rt.settings.home, rt.cipher, secret, request_id,
        RequestDecision(action=action, reason=reason), actor=user.principal,
    )  # fmt: skip
    return RedirectResponse(f"{PREFIX}/privacy?done=true", status_code=303)
