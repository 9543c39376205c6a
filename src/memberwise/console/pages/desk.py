"""The service desk: the queue with SLA timers, the agent's own tickets, a ticket with its
clocks and thread, and the agent's main actions (reply or note, move the state).

Roles as in the API: the desk's queue and actions are for service staff (and admin). Nothing
here shows a member's name, phone or email; tickets are read as ``GET /v1/service/...`` reads
them (the thread with internal notes, for staff).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from memberwise.console import i18n
from memberwise.console.nav import NavEntry
from memberwise.console.ops_format import countdown
from memberwise.console.schemas import ConsoleUser
from memberwise.console.web import PREFIX, Posted, Require, render, runtime_of
from memberwise.kit.db import transaction
from memberwise.kit.time import utcnow
from memberwise.ledger import service as ledger
from memberwise.privacy.schemas import Role
from memberwise.privacy.service import authorize
from memberwise.service import service as desk
from memberwise.service.schemas import MessageIn, TicketState, TicketSummary

router = APIRouter(prefix="/desk")
DESK_ROLES = frozenset({Role.service})
NAV = NavEntry("/desk", "nav.desk", DESK_ROLES, order=40)
Agent = Annotated[ConsoleUser, Depends(Require(*DESK_ROLES))]
#: The states an agent moves a ticket to from the ticket page.
MOVES = (
    TicketState.open,
    TicketState.pending_member,
    TicketState.pending_third_party,
    TicketState.resolved,
)

i18n.add(
    {
        "nav.desk": ("客服工作台", "Service desk"),
        "desk.title": ("客服工作台", "Service desk"),
        "desk.queue": ("待分配队列", "Unassigned queue"),
        "desk.mine": ("我的工单", "My tickets"),
        "desk.ticket": ("工单", "Ticket"),
        "desk.due": ("SLA 剩余", "SLA left"),
        "desk.late": ("已超时", "overdue"),
        "desk.subject": ("主题", "Subject"),
        "desk.member": ("会员", "Member"),
        "desk.tier": ("等级", "Tier"),
        "desk.priority": ("优先级", "Priority"),
        "desk.state": ("状态", "State"),
        "desk.kind": ("类型", "Kind"),
        "desk.assignee": ("处理人", "Assignee"),
        "desk.clocks": ("SLA 计时", "SLA clocks"),
        "desk.metric": ("指标", "Metric"),
        "desk.elapsed": ("已用", "Elapsed"),
        "desk.target": ("目标", "Target"),
        "desk.breached": ("已违约", "breached"),
        "desk.running": ("计时中", "running"),
        "desk.stopped": ("已停止", "stopped"),
        "desk.thread": ("对话", "Thread"),
        "desk.internal": ("内部备注", "internal note"),
        "desk.reply": ("回复", "Reply"),
        "desk.note_only": ("仅内部备注", "Internal note only"),
        "desk.move": ("变更状态", "Move to"),
        "desk.timeline": ("时间线", "Timeline"),
        "desk.saved": ("已保存。", "Saved."),
    }
)


def _rows(items: list[TicketSummary]) -> list[dict[str, object]]:
    now = utcnow()
    out = []
    for s in items:
        left, late = countdown(s.due_at, now)
        out.append({"s": s, "left": left, "late": late})
    return out


@router.get("", include_in_schema=False)
def queue(request: Request, user: Agent) -> HTMLResponse:
    """The unassigned queue (highest tier, nearest deadline first) and the agent's tickets."""
    rt = runtime_of(request)
    with transaction(rt.engine) as conn:
        waiting = desk.queue(conn, limit=100).items
        mine = desk.agent_queue(conn, user.staff_id, limit=100).items
    return render(request, "desk.html", user, queue=_rows(waiting), mine=_rows(mine))


@router.get("/tickets/{ticket_id}", include_in_schema=False)
def ticket(request: Request, ticket_id: str, user: Agent, saved: bool = False) -> HTMLResponse:
    """A ticket: its clocks (elapsed against target), thread and timeline. Raises
    TicketNotFound (a 404 page)."""
    rt = runtime_of(request)
    program = rt.program()
    with transaction(rt.engine) as conn:
        out = desk.get_ticket(conn, program, ticket_id, staff=True)
    left, late = countdown(out.due_at, utcnow())
    return render(
        request,
        "desk_ticket.html",
        user,
        ticket=out,
        left=left,
        late=late,
        moves=[m.value for m in MOVES],
        saved=saved,
    )


def _back(ticket_id: str) -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/desk/tickets/{ticket_id}?saved=true", status_code=303)


@router.post("/tickets/{ticket_id}/messages", include_in_schema=False)
def reply(
    request: Request,
    ticket_id: str,
    user: Posted,
    body: Annotated[str, Form(min_length=1, max_length=20_000)],
    internal: Annotated[bool, Form()] = False,
) -> RedirectResponse:
    """A reply to the member (stops the response clocks) or an internal note."""
    authorize(user.principal, DESK_ROLES)
    rt = runtime_of(request)
    program = rt.program()
    data = MessageIn(body=body, internal=internal)
    ledger.write(
        rt.engine,
        lambda conn: desk.add_message(conn, program, ticket_id, data, actor=user.principal),
    )
    return _back(ticket_id)


@router.post("/tickets/{ticket_id}/state", include_in_schema=False)
def move(
    request: Request,
    ticket_id: str,
    user: Posted,
    state: Annotated[TicketState, Form()],
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> RedirectResponse:
    """Move the ticket (pending states pause the clocks, resolving stops them)."""
    authorize(user.principal, DESK_ROLES)
    rt = runtime_of(request)
    program = rt.program()
    ledger.write(
        rt.engine,
        lambda conn: desk.set_state(
            conn, program, ticket_id, state, reason=reason, actor=user.principal
        ),
    )
    return _back(ticket_id)
