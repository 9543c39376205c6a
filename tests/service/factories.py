"""Typed factories for the service desk's tests: a program with tiered SLAs, members of each
tier, staff agents and account managers, orders."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection

from memberwise.ledger import orders
from memberwise.ledger.schemas import OrderIn, OrderItem
from memberwise.members.repository import insert_seen
from memberwise.membership import grants as membership_grants
from memberwise.membership import managers as membership_managers
from memberwise.membership.schemas import TierGrant
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, Principal, Role, StaffCreate
from memberwise.program.desk import Channel, TicketKind
from memberwise.program.schemas import Program
from memberwise.program.service import parse_program
from memberwise.service import agents, service
from memberwise.service.schemas import AgentIn, TicketOpen, TicketOut

#: Monday 2 March 2026, 10:00 in Shanghai (a working day, inside working hours).
T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)

PROGRAM = """
name: desk
display_timezone: Asia/Shanghai
benefits:
  express_refund: {kind: express_refund, credit_limit: 100000}
  return_card: {kind: return_cards, count: 1, period: day}
  priority: {kind: priority_service, sla_minutes: 20}
  manager: {kind: account_manager}
coupons:
  sorry_20: {kind: amount_off, amount: 2000, valid_days: 30}
tiers:
  - {name: member}
  - {name: gold, manual: true, benefits: [priority]}
  - name: black
    manual: true
    benefits: [express_refund, return_card, priority, manager]
service:
  warn_at: [0.5]
  sla:
    - {name: black_callback, tiers: [black], kinds: [callback], first_response: 3, hours: "24x7"}
    - {name: black, tiers: [black], first_response: 10, next_response: 30, resolution: 600,
       hours: "24x7"}
    - {name: standard, first_response: 60, next_response: 120, resolution: 480}
  authority:
    agent: {per_case: 5000, daily: 10000}
    manager: {per_case: 200000, daily: 300000}
    supervisor: {per_case: 1000000, daily: 2000000}
    finance: {per_case: null, daily: null}
  after_sales: {no_reason_days: 7, no_reason_exceptions: [fresh], fraud_tags: [abuser]}
"""


def make_program(text: str = PROGRAM) -> Program:
    return parse_program(text)


def staff_principal(staff_id: str) -> Principal:
    return Principal(key_id=f"k_{staff_id}", role=Role.service, name=staff_id, staff_id=staff_id)


PLATFORM = Principal(key_id="k_platform", role=Role.platform, name="platform")


def add_members(conn: Connection, program: Program, **tiers: str) -> None:
    """Members by id -> tier (``member`` needs no grant)."""
    insert_seen(conn, list(tiers), T0)
    for member_id, tier in tiers.items():
        if tier != "member":
            grant = TierGrant(tier=tier, reason="test")
            membership_grants.grant(conn, program, member_id, grant, actor=SYSTEM)


def add_agent(
    conn: Connection,
    program: Program,
    staff_id: str,
    *,
    skills: tuple[str, ...] = (),
    capacity: int = 5,
    authority: str = "agent",
    supervisor: str | None = None,
    team: str = "desk",
) -> None:
    privacy.create_staff(conn, StaffCreate(staff_id=staff_id, name=staff_id, role=Role.service))
    data = AgentIn(
        team=team,
        skills=list(skills),
        capacity=capacity,
        authority=authority,
        supervisor_id=supervisor,
    )
    agents.put_agent(conn, program, staff_id, data, actor=SYSTEM, at=T0)


def add_manager(conn: Connection, program: Program, staff_id: str) -> None:
    privacy.create_staff(conn, StaffCreate(staff_id=staff_id, name=staff_id, role=Role.service))
    membership_managers.add_manager(conn, program, staff_id, 10)


def open_ticket(
    conn: Connection,
    program: Program,
    member_id: str,
    *,
    kind: TicketKind = TicketKind.inquiry,
    at: datetime = T0,
    key: str | None = None,
    order_id: str | None = None,
) -> TicketOut:
    data = TicketOpen(
        member_id=member_id,
        channel=Channel.app,
        kind=kind,
        subject=f"{kind.value} of {member_id}",
        body="你好",
        order_id=order_id,
    )
    return service.open_ticket(conn, program, data, actor=PLATFORM, at=at, key=key)


def place_order(
    conn: Connection,
    program: Program,
    order_id: str,
    member_id: str,
    *,
    at: datetime = T0,
    lines: list[tuple[str, str, int, int]] | None = None,
) -> None:
    """An order of ``lines`` (item, category, price fen, quantity)."""
    items = [
        OrderItem(item_id=i, category=c, price=p, quantity=q)
        for i, c, p, q in (lines or [("i1", "shoes", 50_000, 1)])
    ]
    body = OrderIn(order_id=order_id, member_id=member_id, items=items, placed_at=at)
    orders.place(conn, program, body, actor=SYSTEM)
