"""After-sales requests on real orders: the no-reason window and its exceptions, lines checked
against the order, express refunds against the black card's credit through the ledger's refund
path, return cards, and each step in turn."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Connection

from memberwise.ledger import benefits, orders
from memberwise.program.schemas import Program
from memberwise.service import aftersales, service, sweeps
from memberwise.service.aftersales import LineNotInOrder, ReasonRequired, StepNotAllowed
from memberwise.service.schemas import AfterSalesIn, AfterSalesLine, AfterSalesStep, TicketState
from memberwise.service.service import OrderNotOfMember
from tests.service.factories import (
    PLATFORM,
    T0,
    add_members,
    make_program,
    place_order,
    staff_principal,
)

LATER = T0 + timedelta(days=2)


@pytest.fixture(scope="module")
def program() -> Program:
    return make_program()


def _request(
    request_id: str,
    member_id: str,
    order_id: str = "o1",
    *,
    type: str = "return_refund",
    lines: list[tuple[str, int]] | None = None,
    reason: str | None = None,
) -> AfterSalesIn:
    return AfterSalesIn(
        request_id=request_id,
        order_id=order_id,
        member_id=member_id,
        type=type,  # type: ignore[arg-type]
        lines=[AfterSalesLine(item_id=i, quantity=q) for i, q in (lines or [("i1", 1)])],
        reason=reason,
    )


def _credit(conn: Connection, program: Program, member_id: str) -> int | None:
    held = benefits.benefits_now(conn, program, member_id, LATER)
    return next(b.remaining for b in held.benefits if b.kind == "express_refund")


def test_express_refund_paid_at_once_and_the_credit_back_on_arrival(
    conn: Connection, program: Program
) -> None:
    add_members(conn, program, b1="black")
    place_order(conn, program, "o1", "b1", lines=[("i1", "shoes", 30_000, 2)])
    out = aftersales.create(conn, program, _request("r1", "b1"), actor=PLATFORM, at=LATER)
    assert (out.express, out.status, out.amount, out.no_reason, out.step) == (
        True,
        "refunded",
        30_000,
        True,
        "ship",
    )
    assert orders.get(conn, "o1").refunded == 30_000
    assert _credit(conn, program, "b1") == 100_000 - 30_000
    shipped = aftersales.advance(
        conn, program, "r1", AfterSalesStep.ship, actor=PLATFORM, at=LATER + timedelta(hours=1)
    )
    assert (shipped.status, shipped.return_card) == ("shipped", True)
    done = aftersales.advance(
        conn,
        program,
        "r1",
        AfterSalesStep.receive,
        actor=staff_principal("a1"),
        at=LATER + timedelta(days=2),
    )
    assert (done.status, done.step) == ("done", None)
    assert _credit(conn, program, "b1") == 100_000
    assert orders.get(conn, "o1").refunded == 30_000  # refunded once
    ticket = service.get_ticket(conn, program, out.ticket_id)
    assert (ticket.kind, ticket.state, ticket.order_id) == (
        "after_sales",
        TicketState.resolved,
        "o1",
    )
    replay = aftersales.create(conn, program, _request("r1", "b1"), actor=PLATFORM, at=LATER)
    assert (replay.request_id, replay.status, replay.ticket_id) == ("r1", "done", out.ticket_id)
    assert orders.get(conn, "o1").refunded == 30_000


def test_a_return_without_the_credit_is_refunded_when_the_goods_arrive(
    conn: Connection, program: Program
) -> None:
    add_members(conn, program, m1="member")
    place_order(conn, program, "o1", "m1")
    out = aftersales.create(conn, program, _request("r1", "m1"), actor=PLATFORM, at=LATER)
    assert (out.express, out.status, out.step) == (False, "requested", "approve")
    assert out.step_due_at == LATER + timedelta(minutes=1440)
    with pytest.raises(StepNotAllowed):
        aftersales.advance(conn, program, "r1", AfterSalesStep.receive, actor=PLATFORM, at=LATER)
    staff = staff_principal("a1")
    aftersales.advance(conn, program, "r1", AfterSalesStep.approve, actor=staff, at=LATER)
    shipped = aftersales.advance(conn, program, "r1", AfterSalesStep.ship, actor=PLATFORM, at=LATER)
    assert shipped.return_card is False
    assert orders.get(conn, "o1").refunded == 0
    aftersales.advance(conn, program, "r1", AfterSalesStep.receive, actor=staff, at=LATER)
    assert orders.get(conn, "o1").refunded == 50_000


def test_an_express_refund_above_the_credit_takes_the_normal_path(
    conn: Connection, program: Program
) -> None:
    add_members(conn, program, b1="black")
    place_order(conn, program, "o1", "b1", lines=[("i1", "tv", 150_000, 1)])
    out = aftersales.create(conn, program, _request("r1", "b1"), actor=PLATFORM, at=LATER)
    assert (out.express, out.status) == (False, "requested")
    assert orders.get(conn, "o1").refunded == 0


def test_refund_only_is_paid_on_approval(conn: Connection, program: Program) -> None:
    add_members(conn, program, m1="member")
    place_order(conn, program, "o1", "m1")
    aftersales.create(
        conn, program, _request("r1", "m1", type="refund_only"), actor=PLATFORM, at=LATER
    )
    out = aftersales.advance(
        conn, program, "r1", AfterSalesStep.approve, actor=staff_principal("a1"), at=LATER
    )
    assert (out.status, out.step) == ("refunded", None)
    assert orders.get(conn, "o1").refunded == 50_000


def test_the_no_reason_window_and_its_category_exceptions(
    conn: Connection, program: Program
) -> None:
    add_members(conn, program, m1="member")
    place_order(
        conn, program, "o1", "m1", lines=[("i1", "shoes", 10_000, 1), ("f1", "fresh", 5_000, 1)]
    )
    with pytest.raises(ReasonRequired):
        aftersales.create(
            conn, program, _request("r1", "m1", lines=[("f1", 1)]), actor=PLATFORM, at=LATER
        )
    with pytest.raises(ReasonRequired):
        aftersales.create(
            conn, program, _request("r2", "m1"), actor=PLATFORM, at=T0 + timedelta(days=8)
        )
    late = aftersales.create(
        conn,
        program,
        _request("r3", "m1", reason="鞋底开胶"),
        actor=PLATFORM,
        at=T0 + timedelta(days=8),
    )
    assert (late.no_reason, late.amount) == (False, 10_000)


def test_lines_must_be_the_members_order_and_not_asked_twice(
    conn: Connection, program: Program
) -> None:
    add_members(conn, program, m1="member", m2="member")
    place_order(conn, program, "o1", "m1", lines=[("i1", "shoes", 10_000, 2)])
    with pytest.raises(OrderNotOfMember):
        aftersales.create(conn, program, _request("r0", "m2"), actor=PLATFORM, at=LATER)
    with pytest.raises(LineNotInOrder):
        aftersales.create(
            conn, program, _request("r1", "m1", lines=[("zz", 1)]), actor=PLATFORM, at=LATER
        )
    aftersales.create(
        conn, program, _request("r2", "m1", type="exchange"), actor=PLATFORM, at=LATER
    )
    aftersales.create(conn, program, _request("r3", "m1", type="repair"), actor=PLATFORM, at=LATER)
    with pytest.raises(LineNotInOrder):
        aftersales.create(conn, program, _request("r4", "m1"), actor=PLATFORM, at=LATER)


def test_the_sweep_records_a_late_step_once(conn: Connection, program: Program) -> None:
    add_members(conn, program, m1="member")
    place_order(conn, program, "o1", "m1")
    out = aftersales.create(conn, program, _request("r1", "m1"), actor=PLATFORM, at=LATER)
    assert sweeps.sweep(conn, program, at=LATER + timedelta(minutes=1439)).late_steps == 0
    assert sweeps.sweep(conn, program, at=LATER + timedelta(minutes=1500)).late_steps == 1
    assert sweeps.sweep(conn, program, at=LATER + timedelta(minutes=1600)).late_steps == 0
    ticket = service.get_ticket(conn, program, out.ticket_id)
    late = next(e for e in ticket.events if e.kind == "after_sales.late")
    assert (late.metric, late.late_seconds) == ("approve", 60 * 60)
