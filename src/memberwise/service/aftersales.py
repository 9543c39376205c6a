"""After-sales requests on a real order and its lines: refund only, return and refund, exchange,
repair -- each step (approve, member ships, goods received, refunded) with its own deadline.

Returns within the program's ``no_reason_days`` of the order need no reason unless a line's
category is an exception. **Express refund**: when the member's tier holds the express-refund
credit, the credit has room and the member carries none of the program's fraud tags, a refund
request is approved and paid at once against the credit (the ledger's express-refund benefit)
and through the ledger's refund path (the order's points and coupons follow); the credit is
given back when the goods arrive. A return card the member holds pays the return shipping.
The ledger's functions are called, never rewritten.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping

from memberwise.kit.errors import Conflict, InvalidRequest, NotFound
from memberwise.kit.ids import new_id
from memberwise.kit.time import as_utc, utcnow
from memberwise.ledger import aftersales as ledger_aftersales
from memberwise.ledger import benefits, orders
from memberwise.ledger.benefits import ExpressRefundIn, ReturnCardIn
from memberwise.ledger.schemas import OrderItem, OrderOut, RefundIn
from memberwise.ledger.service import request_hash
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import Principal
from memberwise.profiles import service as profiles
from memberwise.program.desk import Channel, TicketKind
from memberwise.program.schemas import Program
from memberwise.service import repository, service
from memberwise.service.schemas import (
    AfterSalesIn,
    AfterSalesLine,
    AfterSalesOut,
    AfterSalesStep,
    AfterSalesType,
    TicketOpen,
    TicketState,
)


class AfterSalesNotFound(NotFound):
    code = "after_sales_not_found"


class AfterSalesExists(Conflict):
    code = "after_sales_exists"


class ReasonRequired(InvalidRequest):
    code = "reason_required"


class LineNotInOrder(InvalidRequest):
    code = "line_not_in_order"


class StepNotAllowed(Conflict):
    code = "step_not_allowed"


_REFUNDING = (AfterSalesType.refund_only, AfterSalesType.return_refund)


def _out(row: RowMapping | dict[str, Any]) -> AfterSalesOut:
    values = {k: row[k] for k in AfterSalesOut.model_fields}
    values["lines"] = [AfterSalesLine.model_validate(x) for x in row["lines"]]
    return AfterSalesOut.model_validate(values)


def _amount(order: OrderOut, items: list[OrderItem], lines: list[AfterSalesLine]) -> int:
    """The money the lines are worth: their share of what was paid, capped by what is left."""
    value = 0
    by_item = {i.item_id: i for i in items}
    for line in lines:
        value += by_item[line.item_id].price * line.quantity
    if order.goods_amount <= 0:
        return 0
    share = order.paid * value // order.goods_amount
    return max(0, min(share, order.paid - order.refunded))


def _check_lines(
    conn: Connection, order_id: str, items: list[OrderItem], lines: list[AfterSalesLine]
) -> None:
    """Each line is an item of the order, asked for at most as many times as bought (across
    this order's earlier requests that were not rejected)."""
    bought: dict[str, int] = {}
    for item in items:
        bought[item.item_id] = bought.get(item.item_id, 0) + item.quantity
    asked: dict[str, int] = {}
    for row in repository.requested_of_order(conn, order_id):
        if row["status"] != "rejected":
            for line in row["lines"]:
                asked[line["item_id"]] = asked.get(line["item_id"], 0) + int(line["quantity"])
    for line in lines:
        if line.item_id not in bought:
            raise LineNotInOrder(f"order {order_id!r} has no item {line.item_id!r}")
        asked[line.item_id] = asked.get(line.item_id, 0) + line.quantity
        if asked[line.item_id] > bought[line.item_id]:
            raise LineNotInOrder(
                f"item {line.item_id!r} was bought {bought[line.item_id]} time(s); "
                f"{asked[line.item_id]} are asked for across this order's requests"
            )


def _no_reason(
    program: Program,
    order: OrderOut,
    items: list[OrderItem],
    lines: list[AfterSalesLine],
    at: datetime,
) -> bool:
    rules = program.service.after_sales
    if at - order.placed_at > timedelta(days=rules.no_reason_days):
        return False
    asked = {line.item_id for line in lines}
    return not any(i.category in rules.no_reason_exceptions for i in items if i.item_id in asked)


def _flagged(conn: Connection, program: Program, member_id: str) -> bool:
    """Whether the member carries a fraud tag of the program (no profile: not flagged)."""
    tags = program.service.after_sales.fraud_tags
    if not tags:
        return False
    try:
        profile = profiles.get_profile(conn, member_id)
    except profiles.ProfileNotFound:
        return False
    return any(t in profile.tags for t in tags)


def _credit_room(conn: Connection, program: Program, member_id: str, at: datetime) -> int:
    """What is left of the member's express-refund credit (0: the benefit is not held)."""
    held = benefits.benefits_now(conn, program, member_id, at)
    return max((b.remaining or 0 for b in held.benefits if b.kind == "express_refund"), default=0)


def _due(program: Program, step: str | None, at: datetime) -> datetime | None:
    minutes = program.service.after_sales.steps.get(step or "")
    return at + timedelta(minutes=minutes) if minutes else None


def create(
    conn: Connection,
    program: Program,
    data: AfterSalesIn,
    *,
    actor: Principal,
    at: datetime | None = None,
) -> AfterSalesOut:
    """Open an after-sales request (and its ticket); an express refund is paid at once.

    Idempotent by ``request_id``. Raises OrderNotFound, OrderNotOfMember, LineNotInOrder,
    ReasonRequired, AfterSalesExists (same id, other contents), and the ledger's refusals.
    """
    at = as_utc(at or utcnow())
    digest = request_hash(data)
    found = repository.get_after_sales(conn, data.request_id)
    if found is not None:
        if found["request_hash"] != digest:
            raise AfterSalesExists(f"request {data.request_id!r} exists with other contents")
        return _out(found)
    order, items = orders.lines(conn, data.order_id)
    if order.member_id != data.member_id:
        raise service.OrderNotOfMember(
            f"order {data.order_id!r} is not an order of member {data.member_id!r}"
        )
    _check_lines(conn, data.order_id, items, data.lines)
    no_reason = _no_reason(program, order, items, data.lines, at)
    if not no_reason and not (data.reason or "").strip():
        raise ReasonRequired(
            "this request needs a reason: the order is past the no-reason window or a line's "
            "category is an exception"
        )
    refunding = data.type in _REFUNDING
    amount = _amount(order, items, data.lines) if refunding else 0
    ticket = service.open_ticket(
        conn,
        program,
        TicketOpen(
            member_id=data.member_id,
            channel=Channel.app,
            kind=TicketKind.after_sales,
            subject=f"{data.type.value} on order {data.order_id}",
            body=data.reason or "",
            order_id=data.order_id,
            item_ids=[line.item_id for line in data.lines],
        ),
        actor=actor,
        at=at,
        key=f"after_sales:{data.request_id}",
    )
    express = (
        refunding
        and amount > 0
        and not _flagged(conn, program, data.member_id)
        and _credit_room(conn, program, data.member_id, at) >= amount
    )
    refund_id = f"as:{data.request_id}" if refunding else None
    row: dict[str, Any] = {
        "request_id": data.request_id,
        "ticket_id": ticket.ticket_id,
        "member_id": data.member_id,
        "order_id": data.order_id,
        "type": data.type.value,
        "lines": [line.model_dump() for line in data.lines],
        "amount": amount,
        "reason": data.reason,
        "no_reason": no_reason,
        "status": "requested",
        "express": express,
        "refund_id": refund_id,
        "return_card": False,
        "step": "approve",
        "step_due_at": _due(program, "approve", at),
        "request_hash": digest,
        "created_at": at,
        "updated_at": at,
    }
    if express:
        assert refund_id is not None
        # The ledger pays it against the credit and posts it as the order's refund in one go
        # (its points and coupons follow), so no separate refund is made here.
        ledger_aftersales.express_refund(
            conn,
            program,
            data.member_id,
            ExpressRefundIn(refund_id=refund_id, order_id=data.order_id, amount=amount),
            at=at,
            actor=actor,
        )
        step = "ship" if data.type is AfterSalesType.return_refund else None
        row.update(status="refunded", step=step, step_due_at=_due(program, step, at))
    repository.insert_after_sales(conn, row)
    _record(conn, row, "after_sales.requested", actor, at)
    if row["step"] is None:
        _finish(conn, program, row, actor, at)
    return _out(row)


def _refund(
    conn: Connection, program: Program, row: dict[str, Any], actor: Principal, at: datetime
) -> None:
    """The money back through the ledger's refund path (its points and coupons follow)."""
    orders.refund(
        conn,
        program,
        row["order_id"],
        RefundIn(refund_id=row["refund_id"], amount=row["amount"]),
        at=at,
        actor=actor,
    )


def _record(
    conn: Connection, row: dict[str, Any], action: str, actor: Principal, at: datetime
) -> None:
    details = {
        "request_id": row["request_id"],
        "type": row["type"],
        "status": row["status"],
        "amount": row["amount"],
        "express": row["express"],
    }
    privacy.audit(
        conn, actor, action, "order", row["order_id"], member_id=row["member_id"], details=details
    )
    repository.insert_events(
        conn,
        [
            {
                "event_id": new_id(),
                "ticket_id": row["ticket_id"],
                "member_id": row["member_id"],
                "kind": action,
                "metric": None,
                "late_seconds": None,
                "actor": actor.staff_id or actor.key_id,
                "details": details,
                "at": at,
            }
        ],
    )


def _finish(
    conn: Connection, program: Program, row: dict[str, Any], actor: Principal, at: datetime
) -> None:
    """The request is done: its ticket is resolved (if still live)."""
    ticket = repository.get_ticket(conn, row["ticket_id"])
    if ticket is not None and ticket["state"] in service.LIVE:
        service.set_state(conn, program, row["ticket_id"], TicketState.resolved, actor=actor, at=at)


def get(conn: Connection, request_id: str) -> AfterSalesOut:
    row = repository.get_after_sales(conn, request_id)
    if row is None:
        raise AfterSalesNotFound(f"no after-sales request {request_id!r}")
    return _out(row)


#: Step -> the statuses it may follow.
_STEPS: dict[AfterSalesStep, tuple[str, ...]] = {
    AfterSalesStep.approve: ("requested",),
    AfterSalesStep.reject: ("requested",),
    AfterSalesStep.ship: ("approved", "refunded"),
    AfterSalesStep.receive: ("shipped",),
}


def advance(
    conn: Connection,
    program: Program,
    request_id: str,
    step: AfterSalesStep,
    *,
    actor: Principal,
    at: datetime | None = None,
) -> AfterSalesOut:
    """The next step of a request: approve (a refund-only request is refunded at once), reject,
    ship (the member sent the goods; a held return card pays the shipping), receive (the goods
    arrived: an express refund's credit is given back, a return is refunded now).

    Raises AfterSalesNotFound, StepNotAllowed.
    """
    at = as_utc(at or utcnow())
    found = repository.get_after_sales(conn, request_id, lock=True)
    if found is None:
        raise AfterSalesNotFound(f"no after-sales request {request_id!r}")
    row = dict(found)
    kind = AfterSalesType(row["type"])
    if row["status"] not in _STEPS[step] or (
        step is AfterSalesStep.ship and kind is AfterSalesType.refund_only
    ):
        raise StepNotAllowed(f"request {request_id} is {row['status']}; cannot {step.value}")
    done = False
    if step is AfterSalesStep.reject:
        row.update(status="rejected", step=None)
        done = True
    elif step is AfterSalesStep.approve:
        if kind is AfterSalesType.refund_only:
            _refund(conn, program, row, actor, at)
            row.update(status="refunded", step=None)
            done = True
        else:
            row.update(status="approved", step="ship")
    elif step is AfterSalesStep.ship:
        row.update(
            status="shipped", step="receive", return_card=_use_card(conn, program, row, actor, at)
        )
    else:  # receive
        if row["express"]:
            benefits.restore_express_refund(
                conn, row["member_id"], row["refund_id"], at=at, actor=actor
            )
        elif kind is AfterSalesType.return_refund:
            _refund(conn, program, row, actor, at)
        row.update(status="done", step=None)
        done = True
    row.update(step_due_at=_due(program, row["step"], at), updated_at=at)
    repository.update_after_sales(
        conn,
        request_id,
        {k: row[k] for k in ("status", "step", "step_due_at", "return_card", "updated_at")},
    )
    _record(conn, row, f"after_sales.{step.value}", actor, at)
    if done:
        _finish(conn, program, row, actor, at)
    return _out(row)


def _use_card(
    conn: Connection, program: Program, row: dict[str, Any], actor: Principal, at: datetime
) -> bool:
    """Use a return card the member holds (it pays the return shipping); False when none."""
    held = benefits.benefits_now(conn, program, row["member_id"], at)
    if not any(b.kind == "return_cards" and (b.remaining or 0) > 0 for b in held.benefits):
        return False
    ledger_aftersales.return_card(
        conn,
        program,
        row["member_id"],
        ReturnCardIn(use_id=f"as:{row['request_id']}", order_id=row["order_id"]),
        at=at,
        actor=actor,
    )
    return True
