"""HTTP routes of the service desk: parse, authorize, call one service function, return.

The platform (``platform`` role) acts on behalf of its members: it opens tickets, writes the
member's messages, reopens, rates and files after-sales requests, and never sees internal notes.
Staff (``service`` role) work the tickets, the queue, compensations and approvals; operators
manage agents and run the sweep; reports are for staff, operators and analysts. Writes run in
one transaction retried when it lost a lock race (``ledger_busy`` if it keeps losing).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query

from memberwise.kit.db import transaction
from memberwise.kit.time import as_utc, utcnow
from memberwise.ledger import service as ledger
from memberwise.privacy.auth import Authorize
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime, get_runtime
from memberwise.service import aftersales, agents, compensation, reports, service, sweeps
from memberwise.service.schemas import (
    AfterSalesIn,
    AfterSalesOut,
    AfterSalesStep,
    AgentIn,
    AgentOut,
    CompensationIn,
    CompensationOut,
    CsatIn,
    DecisionIn,
    HandoverOut,
    MergeIn,
    MessageIn,
    QueueOut,
    ReopenIn,
    ReportOut,
    StateIn,
    SweepOut,
    TicketChange,
    TicketOpen,
    TicketOut,
    TicketSummary,
)

router = APIRouter(prefix="/v1", tags=["service desk"])

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Staff = Annotated[Principal, Depends(Authorize(Role.service))]
Desk = Annotated[Principal, Depends(Authorize(Role.service, Role.platform))]
Operator = Annotated[Principal, Depends(Authorize(Role.operator))]
Reader = Annotated[Principal, Depends(Authorize(Role.service, Role.operator, Role.analyst))]
Limit = Annotated[int, Query(ge=1, le=500)]
OptionalKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="A retry with the same key gets the first ticket.",
    ),
]
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Any unique string; a retry with the same key gets the first answer.",
    ),
]


def _staff_view(principal: Principal) -> bool:
    return principal.role is not Role.platform


@router.post("/service/tickets", status_code=201, summary="Open a ticket (member or staff)")
def open_ticket(
    body: TicketOpen, rt: RuntimeDep, principal: Desk, key: OptionalKey = None
) -> TicketOut:
    program = rt.program()
    return ledger.write(
        rt.engine,
        lambda conn: service.open_ticket(conn, program, body, actor=principal, key=key),
    )


@router.get("/service/tickets/{ticket_id}", summary="A ticket: clocks, thread, timeline")
def get_ticket(ticket_id: str, rt: RuntimeDep, principal: Desk) -> TicketOut:
    program = rt.program()
    with transaction(rt.engine) as conn:
        return service.get_ticket(conn, program, ticket_id, staff=_staff_view(principal))


@router.get("/members/{member_id}/tickets", summary="A member's tickets, newest first")
def member_tickets(
    member_id: str, rt: RuntimeDep, principal: Desk, limit: Limit = 50
) -> list[TicketSummary]:
    with transaction(rt.engine) as conn:
        return service.member_tickets(conn, member_id, limit=limit)


@router.post("/service/tickets/{ticket_id}/messages", summary="Reply, or write a note")
def add_message(ticket_id: str, body: MessageIn, rt: RuntimeDep, principal: Desk) -> TicketOut:
    program = rt.program()
    return ledger.write(
        rt.engine,
        lambda conn: service.add_message(conn, program, ticket_id, body, actor=principal),
    )


@router.post("/service/tickets/{ticket_id}/state", summary="Move a ticket (pending, resolved...)")
def set_state(ticket_id: str, body: StateIn, rt: RuntimeDep, principal: Staff) -> TicketOut:
    program = rt.program()
    return ledger.write(
        rt.engine,
        lambda conn: service.set_state(
            conn, program, ticket_id, body.state, reason=body.reason, actor=principal
        ),
    )


@router.patch("/service/tickets/{ticket_id}", summary="Reclassify (the clocks keep their time)")
def change(ticket_id: str, body: TicketChange, rt: RuntimeDep, principal: Staff) -> TicketOut:
    program = rt.program()
    return ledger.write(
        rt.engine, lambda conn: service.change(conn, program, ticket_id, body, actor=principal)
    )


@router.post("/service/tickets/{ticket_id}/reopen", summary="Reopen within the window")
def reopen(ticket_id: str, body: ReopenIn, rt: RuntimeDep, principal: Desk) -> TicketOut:
    program = rt.program()
    return ledger.write(
        rt.engine,
        lambda conn: service.reopen(conn, program, ticket_id, reason=body.reason, actor=principal),
    )


@router.post("/service/tickets/{ticket_id}/merge", summary="Merge a duplicate into a ticket")
def merge(ticket_id: str, body: MergeIn, rt: RuntimeDep, principal: Staff) -> TicketOut:
    program = rt.program()
    return ledger.write(
        rt.engine, lambda conn: service.merge(conn, program, ticket_id, body.into, actor=principal)
    )


@router.post("/service/tickets/{ticket_id}/csat", summary="The member's satisfaction (1-5)")
def rate(ticket_id: str, body: CsatIn, rt: RuntimeDep, principal: Desk) -> TicketOut:
    program = rt.program()
    return ledger.write(
        rt.engine, lambda conn: service.rate(conn, program, ticket_id, body, actor=principal)
    )


@router.get("/service/queue", summary="Unassigned tickets: highest tier, nearest deadline first")
def queue(rt: RuntimeDep, principal: Staff, limit: Limit = 50) -> QueueOut:
    with transaction(rt.engine) as conn:
        return service.queue(conn, limit=limit)


@router.get("/service/agents/{staff_id}/tickets", summary="An agent's live tickets")
def agent_tickets(staff_id: str, rt: RuntimeDep, principal: Staff, limit: Limit = 50) -> QueueOut:
    with transaction(rt.engine) as conn:
        return service.agent_queue(conn, staff_id, limit=limit)


@router.get("/service/agents", summary="Desk agents: skills, capacity, load, authority")
def list_agents(rt: RuntimeDep, principal: Reader) -> list[AgentOut]:
    with transaction(rt.engine) as conn:
        return agents.list_agents(conn)


@router.put("/service/agents/{staff_id}", summary="Make a service staff member a desk agent")
def put_agent(staff_id: str, body: AgentIn, rt: RuntimeDep, principal: Operator) -> AgentOut:
    program = rt.program()
    return ledger.write(
        rt.engine,
        lambda conn: agents.put_agent(conn, program, staff_id, body, actor=principal),
    )


@router.delete(
    "/service/agents/{staff_id}", summary="An agent leaves: their tickets are handed over"
)
def agent_leaves(staff_id: str, rt: RuntimeDep, principal: Operator) -> HandoverOut:
    program = rt.program()
    return ledger.write(
        rt.engine,
        lambda conn: agents.agent_leaves(conn, program, staff_id, actor=principal),
    )


@router.post(
    "/service/tickets/{ticket_id}/compensations",
    status_code=201,
    summary="Compensate the member (paid now within your authority, else queued for approval)",
)
def compensate(
    ticket_id: str,
    body: CompensationIn,
    rt: RuntimeDep,
    principal: Staff,
    key: IdempotencyKey,
) -> CompensationOut:
    program = rt.program()
    return ledger.write(
        rt.engine,
        lambda conn: compensation.compensate(
            conn, program, ticket_id, body, key=key, actor=principal
        ),
    )


@router.get("/service/approvals", summary="Compensations waiting for approval, oldest first")
def approvals(rt: RuntimeDep, principal: Staff, limit: Limit = 50) -> list[CompensationOut]:
    with transaction(rt.engine) as conn:
        return compensation.approvals(conn, limit=limit)


@router.post("/service/approvals/{compensation_id}", summary="Approve (and pay) or reject")
def decide(
    compensation_id: str, body: DecisionIn, rt: RuntimeDep, principal: Staff
) -> CompensationOut:
    program = rt.program()
    return ledger.write(
        rt.engine,
        lambda conn: compensation.decide(conn, program, compensation_id, body, actor=principal),
    )


@router.post(
    "/service/after-sales",
    status_code=201,
    summary="An after-sales request on order lines (express refund when the tier holds it)",
)
def create_after_sales(body: AfterSalesIn, rt: RuntimeDep, principal: Desk) -> AfterSalesOut:
    program = rt.program()
    return ledger.write(
        rt.engine, lambda conn: aftersales.create(conn, program, body, actor=principal)
    )


@router.get("/service/after-sales/{request_id}", summary="An after-sales request")
def get_after_sales(request_id: str, rt: RuntimeDep, principal: Desk) -> AfterSalesOut:
    with transaction(rt.engine) as conn:
        return aftersales.get(conn, request_id)


@router.post("/service/after-sales/{request_id}/{step}", summary="The next step of a request")
def advance(
    request_id: str, step: AfterSalesStep, rt: RuntimeDep, principal: Desk
) -> AfterSalesOut:
    program = rt.program()
    return ledger.write(
        rt.engine,
        lambda conn: aftersales.advance(conn, program, request_id, step, actor=principal),
    )


@router.post("/service/sweep", summary="Record due SLA warnings and breaches (each once)")
def sweep(rt: RuntimeDep, principal: Operator) -> SweepOut:
    program = rt.program()
    return ledger.write(rt.engine, lambda conn: sweeps.sweep(conn, program))


@router.get("/service/reports", summary="SLA attainment, FCR, handle time, backlog, compensation")
def report(
    rt: RuntimeDep,
    principal: Reader,
    by: Annotated[str, Query(pattern="^(agent|team|tier)$")] = "agent",
    days: Annotated[int, Query(ge=1, le=366)] = 30,
    until: datetime | None = None,
) -> ReportOut:
    program = rt.program()
    end = as_utc(until) if until is not None else utcnow()
    with transaction(rt.engine) as conn:
        return reports.report(conn, program, by=by, since=end - timedelta(days=days), until=end)
