"""Webhooks: the registered endpoints with their health, the delivery log (filtered by status,
endpoint or member, newest first, paged) and replaying one delivery under its original id.

Roles as in the API: the platform's integration staff (and admin). Secrets are never shown.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from memberwise.console import i18n
from memberwise.console.nav import NavEntry
from memberwise.console.schemas import ConsoleUser
from memberwise.console.web import PREFIX, Posted, Require, render, runtime_of
from memberwise.kit.db import transaction
from memberwise.privacy.schemas import Role
from memberwise.privacy.service import authorize
from memberwise.webhooks import service as webhooks

router = APIRouter(prefix="/webhooks")
ROLES = frozenset({Role.platform})
NAV = NavEntry("/webhooks", "nav.webhooks", ROLES, order=70)
Integrator = Annotated[ConsoleUser, Depends(Require(*ROLES))]
PAGE = 50

i18n.add(
    {
        "nav.webhooks": ("Webhooks", "Webhooks"),
        "hook.title": ("Webhooks", "Webhooks"),
        "hook.endpoints": ("端点", "Endpoints"),
        "hook.url": ("地址", "URL"),
        "hook.types": ("事件类型", "Event types"),
        "hook.failures": ("连续失败", "Failures in a row"),
        "hook.log": ("投递日志", "Delivery log"),
        "hook.delivery": ("投递", "Delivery"),
        "hook.event": ("事件", "Event"),
        "hook.attempts": ("尝试次数", "Attempts"),
        "hook.last": ("最近结果", "Last result"),
        "hook.replay": ("重新投递", "Replay"),
        "hook.replayed": ("已重新排队投递。", "Queued for delivery again."),
        "hook.filter": ("筛选", "Filter"),
        "hook.all": ("全部", "all"),
        "hook.next": ("下一页", "Next page"),
    }
)


@router.get("", include_in_schema=False)
def overview(
    request: Request,
    user: Integrator,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|failed)?$")] = None,
    endpoint_id: Annotated[str | None, Query(max_length=64)] = None,
    member_id: Annotated[str | None, Query(max_length=128)] = None,
    after: Annotated[str | None, Query(max_length=200)] = None,
    replayed: bool = False,
) -> HTMLResponse:
    """Endpoints and one page of the delivery log. Raises InvalidCursor (a 400 page)."""
    rt = runtime_of(request)
    with transaction(rt.engine) as conn:
        endpoints = webhooks.list_endpoints(conn)
        log = webhooks.list_deliveries(
            conn, limit=PAGE, after=after or None, endpoint_id=endpoint_id or None,
            status=status or None, member_id=member_id or None,
        )  # fmt: skip
    return render(
        request,
        "webhooks.html",
        user,
        endpoints=endpoints,
        log=log,
        status=status or "",
        endpoint_id=endpoint_id or "",
        member_id=member_id or "",
        replayed=replayed,
    )


@router.post("/deliveries/{delivery_id}/replay", include_in_schema=False)
def replay(request: Request, delivery_id: str, user: Posted) -> RedirectResponse:
    """Send one delivery again (same ``webhook-id``). Raises DeliveryNotFound, DeliveryInFlight,
    MessageExpired (4xx pages)."""
    authorize(user.principal, ROLES)
    rt = runtime_of(request)
    with transaction(rt.engine) as conn:
        webhooks.replay_delivery(conn, delivery_id, actor=user.principal)
    return RedirectResponse(f"{PREFIX}/webhooks?replayed=true", status_code=303)
