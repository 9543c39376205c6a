"""The service desk's requests and answers: tickets and their thread, clocks, agents, queues,
compensations and approvals, after-sales requests, reports."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, model_validator

from memberwise.program.desk import Channel, Priority, TicketKind

_ID = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@\-]+$")


class TicketState(StrEnum):
    new = "new"
    open = "open"
    pending_member = "pending_member"
    pending_third_party = "pending_third_party"
    resolved = "resolved"
    closed = "closed"
    merged = "merged"


#: States in which a ticket is still being worked on (it counts against an agent's capacity).
LIVE_STATES = (
    TicketState.new,
    TicketState.open,
    TicketState.pending_member,
    TicketState.pending_third_party,
)


class TicketOpen(BaseModel):
    """A ticket opened by the member (through the platform) or by staff."""

    member_id: str = _ID
    channel: Channel
    kind: TicketKind
    priority: Priority = Priority.normal
    subject: str = Field(min_length=1, max_length=500)
    body: str = Field(default="", max_length=20_000, description="The first message, if any.")
    order_id: str | None = Field(default=None, min_length=1, max_length=128)
    item_ids: list[str] = Field(default_factory=list, max_length=100)


class TicketChange(BaseModel):
    """Staff reclassify a ticket; the SLA policy is looked up again and the clocks keep their
    elapsed time."""

    kind: TicketKind | None = None
    priority: Priority | None = None


class MessageIn(BaseModel):
    body: str = Field(min_length=1, max_length=20_000)
    #: An internal note, seen by staff only (stops no clock).
    internal: bool = False


class StateIn(BaseModel):
    state: TicketState
    reason: str = Field(default="", max_length=2000)


class ReopenIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class MergeIn(BaseModel):
    into: str = Field(min_length=1, max_length=32, description="The ticket this one duplicates.")


class CsatIn(BaseModel):
    score: int = Field(ge=1, le=5)
    comment: str = Field(default="", max_length=2000)


class ClockOut(BaseModel):
    metric: str
    target_seconds: int
    hours: str
    elapsed_seconds: int
    running: bool
    stopped: bool
    breached: bool
    met: bool | None
    alert_at: datetime | None


class MessageOut(BaseModel):
    message_id: str
    author_kind: str
    author: str
    internal: bool
    body: str
    created_at: datetime


class EventOut(BaseModel):
    kind: str
    metric: str | None
    late_seconds: int | None
    actor: str
    details: dict[str, Any] | None
    at: datetime


class TicketSummary(BaseModel):
    ticket_id: str
    member_id: str
    channel: str
    kind: str
    priority: str
    tier: str | None
    state: TicketState
    subject: str
    assignee: str | None
    escalated_to: str | None
    due_at: datetime | None
    opened_at: datetime


class TicketOut(TicketSummary):
    order_id: str | None
    item_ids: list[str]
    source: str
    skill: str | None
    policy: str | None
    pending_reason: str | None
    merged_into: str | None
    agent_replies: int
    reopened: int
    csat: int | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    clocks: list[ClockOut]
    messages: list[MessageOut]
    events: list[EventOut]


class QueueOut(BaseModel):
    """Live tickets, highest tier first, then nearest deadline."""

    items: list[TicketSummary]


class AgentIn(BaseModel):
    team: str = Field(default="desk", min_length=1, max_length=64)
    skills: list[str] = Field(default_factory=list, max_length=20)
    capacity: int = Field(default=20, ge=1, le=10_000)
    authority: str = Field(default="agent", min_length=1, max_length=32)
    supervisor_id: str | None = Field(default=None, max_length=64)


class AgentOut(AgentIn):
    staff_id: str
    load: int
    active: bool


class HandoverOut(BaseModel):
    """A staff member left: their tickets went back to routing."""

    staff_id: str
    tickets: int
    reassigned: int
    queued: int


class CompensationKind(StrEnum):
    points = "points"
    coupon = "coupon"
    money = "money"


class CompensationIn(BaseModel):
    """Compensate the ticket's member: ``amount`` points, a coupon of ``coupon_template``, or
    ``amount`` fen of money credit the platform pays out."""

    kind: CompensationKind
    amount: int = Field(default=0, ge=0, le=10**9)
    coupon_template: str | None = Field(default=None, min_length=1, max_length=64)
    reason: str = Field(min_length=3, max_length=2000)
    #: Paid in advance for a merchant at fault (先行赔付), to be recovered from it.
    merchant_id: str | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def _what(self) -> CompensationIn:
        if self.kind is CompensationKind.coupon:
            if self.coupon_template is None:
                raise ValueError("a coupon compensation names its coupon_template")
        elif self.amount < 1:
            raise ValueError("give an amount of at least 1 (points, or fen of money)")
        return self


class CompensationOut(BaseModel):
    compensation_id: str
    ticket_id: str
    member_id: str
    kind: CompensationKind
    amount: int
    coupon_template: str | None
    value: int
    merchant_id: str | None
    reason: str
    status: str
    required_role: str | None
    requested_by: str
    decided_by: str | None
    reference: str | None
    created_at: datetime
    decided_at: datetime | None


class DecisionIn(BaseModel):
    approve: bool
    reason: str = Field(default="", max_length=2000)


class AfterSalesType(StrEnum):
    refund_only = "refund_only"
    return_refund = "return_refund"
    exchange = "exchange"
    repair = "repair"


class AfterSalesLine(BaseModel):
    item_id: str = _ID
    quantity: int = Field(default=1, ge=1, le=100_000)


class AfterSalesIn(BaseModel):
    """An after-sales request on lines of a real order; ``request_id`` is the idempotency key."""

    request_id: str = _ID
    order_id: str = _ID
    member_id: str = _ID
    type: AfterSalesType
    lines: list[AfterSalesLine] = Field(min_length=1, max_length=100)
    reason: str | None = Field(default=None, max_length=2000)


class AfterSalesStep(StrEnum):
    approve = "approve"
    reject = "reject"
    ship = "ship"
    receive = "receive"


class AfterSalesOut(BaseModel):
    request_id: str
    ticket_id: str
    member_id: str
    order_id: str
    type: AfterSalesType
    lines: list[AfterSalesLine]
    amount: int
    reason: str | None
    no_reason: bool
    status: str
    express: bool
    refund_id: str | None
    return_card: bool
    step: str | None
    step_due_at: datetime | None
    created_at: datetime


class SweepOut(BaseModel):
    warnings: int
    breaches: int
    escalations: int
    late_steps: int


class ReportRow(BaseModel):
    """One agent's, team's or tier's figures over the report's window."""

    key: str
    tickets: int
    resolved: int
    backlog: int
    sla_met: int
    sla_breached: int
    sla_attainment: float | None
    first_contact_resolution: float | None
    mean_handle_minutes: float | None
    csat: float | None
    compensation_paid: int
    compensation_budget: int | None


class ReportOut(BaseModel):
    by: str
    since: datetime
    until: datetime
    rows: list[ReportRow]
