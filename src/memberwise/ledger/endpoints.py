"""HTTP routes of the points and coupon ledgers and of orders: parse, authorize, call one service
function, return.

Writes run through :func:`memberwise.ledger.service.write` (one transaction, retried when it
lost a lock race, ``ledger_busy`` if it keeps losing). Orders and refunds are idempotent by the
platform's ids; the other writes take an ``Idempotency-Key`` header and answer a replay with
the stored first answer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response
from sqlalchemy import Connection

from memberwise.kit.db import transaction
from memberwise.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page, decode_cursor, encode_cursor
from memberwise.ledger import coupons, orders, points
from memberwise.ledger import service as ledger
from memberwise.ledger.schemas import (
    AdjustmentIn,
    AwardIn,
    CouponOut,
    CouponStatus,
    IssueIn,
    IssueOut,
    MemberOrder,
    OrderIn,
    OrderOut,
    PointsChange,
    PointsOut,
    RedemptionIn,
    RedemptionOut,
    RefundIn,
    RefundOut,
    TemplateOut,
)
from memberwise.privacy.auth import Authorize
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime, get_runtime

router = APIRouter(prefix="/v1", tags=["ledger"])

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[
    Principal, Depends(Authorize(Role.platform, Role.operator, Role.analyst, Role.service))
]
Platform = Annotated[Principal, Depends(Authorize(Role.platform))]
#: Manual adjustments are made by the service desk (and admins), each with a reason.
Staff = Annotated[Principal, Depends(Authorize(Role.service))]
Operator = Annotated[Principal, Depends(Authorize(Role.operator))]
Analyst = Annotated[Principal, Depends(Authorize(Role.operator, Role.analyst))]
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Any unique string; a retry with the same key gets the first answer.",
    ),
]


# -- orders -----------------------------------------------------------------------------------


@router.post(
    "/orders",
    status_code=201,
    summary="Place an order: redeem its coupons and points, earn pending points (idempotent)",
    responses={200: {"description": "A replay: the order as first placed."}},
)
def place_order(body: OrderIn, response: Response, rt: RuntimeDep, principal: Platform) -> OrderOut:
    program = rt.program()
    out, created = ledger.write(
        rt.engine, lambda conn: orders.place_now(conn, program, body, actor=principal)
    )
    if not created:
        response.status_code = 200
    return out


@router.get("/orders/{order_id}", summary="An order and what it did to the ledgers")
def get_order(order_id: str, rt: RuntimeDep, principal: Reader) -> OrderOut:
    with transaction(rt.engine) as conn:
        return orders.get(conn, order_id)


@router.get(
    "/members/{member_id}/orders",
    summary="The member's orders, newest first, each with its refunds (paginated)",
)
def member_orders(
    member_id: str,
    rt: RuntimeDep,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    after: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Page[MemberOrder]:
    with transaction(rt.engine) as conn:
        ledger.member_exists(conn, member_id)
        return orders.member_orders(conn, member_id, after=after, limit=limit)


@router.post(
    "/orders/{order_id}/refunds",
    status_code=201,
    summary="Refund part or all of an order: take back its points pro rata (idempotent)",
    responses={200: {"description": "A replay: the refund as first made."}},
)
def refund_order(
    order_id: str, body: RefundIn, response: Response, rt: RuntimeDep, principal: Platform
) -> RefundOut:
    program = rt.program()
    out, created = ledger.write(
        rt.engine, lambda conn: orders.refund(conn, program, order_id, body, actor=principal)
    )
    if not created:
        response.status_code = 200
    return out


@router.post(
    "/orders/{order_id}/complete",
    summary="The return window closed: the order's points become available (idempotent)",
)
def complete_order(order_id: str, rt: RuntimeDep, principal: Platform) -> OrderOut:
    return ledger.write(rt.engine, lambda conn: orders.complete(conn, order_id, actor=principal))


# -- points -----------------------------------------------------------------------------------


@router.get(
    "/members/{member_id}/points",
    summary="The member's points: balance, lots (nearest expiry first), history page",
)
def get_points(
    member_id: str,
    rt: RuntimeDep,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    after: Annotated[str | None, Query(description="history.next_cursor of a page")] = None,
) -> PointsOut:
    with transaction(rt.engine) as conn:
        ledger.member_exists(conn, member_id)
        return points.points_of(conn, member_id, after=after, limit=limit)


@router.post(
    "/members/{member_id}/points/awards",
    summary="Points for a review (once per review id) or a check-in (once a day)",
)
def award_points(
    member_id: str, body: AwardIn, rt: RuntimeDep, principal: Platform
) -> PointsChange:
    program = rt.program()

    def work(conn: Connection) -> PointsChange:
        ledger.member_exists(conn, member_id)
        return points.award(
            conn, program, member_id, body.kind, body.source_id, at=body.at, actor=principal
        )

    return ledger.write(rt.engine, work)


@router.post(
    "/members/{member_id}/points/adjustments",
    summary="A staff adjustment of the member's points, with a reason (Idempotency-Key)",
)
def adjust_points(
    member_id: str,
    body: AdjustmentIn,
    key: IdempotencyKey,
    rt: RuntimeDep,
    principal: Staff,
) -> PointsChange:
    program = rt.program()
    return ledger.write(
        rt.engine,
        lambda conn: points.adjust_once(conn, program, member_id, body, key, actor=principal),
    )


@router.post(
    "/members/{member_id}/points/redemptions",
    summary="Spend points on a gift or on a coupon sold for points (Idempotency-Key)",
)
def redeem_points(
    member_id: str,
    body: RedemptionIn,
    key: IdempotencyKey,
    rt: RuntimeDep,
    principal: Platform,
) -> RedemptionOut:
    program = rt.program()
    return ledger.write(
        rt.engine,
        lambda conn: coupons.redeem_once(conn, program, member_id, body, key, actor=principal),
    )


# -- coupons ----------------------------------------------------------------------------------


@router.get("/members/{member_id}/coupons", summary="The member's coupons, in issue order")
def get_coupons(
    member_id: str,
    rt: RuntimeDep,
    principal: Reader,
    status: CouponStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    after: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Page[CouponOut]:
    with transaction(rt.engine) as conn:
        ledger.member_exists(conn, member_id)
        items, last = coupons.member_coupons(
            conn, member_id, status=status, after=decode_cursor(after), limit=limit
        )
    return Page[CouponOut](items=items, next_cursor=encode_cursor(last) if last else None)


@router.post(
    "/coupons/issuances",
    summary="Issue a template's coupons to members or a segment (Idempotency-Key)",
)
def issue_coupons(
    body: IssueIn, key: IdempotencyKey, rt: RuntimeDep, principal: Operator
) -> IssueOut:
    program = rt.program()
    return ledger.write(
        rt.engine, lambda conn: coupons.issue_once(conn, program, body, key, actor=principal)
    )


@router.get(
    "/coupons/templates",
    summary="The program's coupon templates with how much of their budgets is used",
)
def list_templates(rt: RuntimeDep, principal: Analyst) -> list[TemplateOut]:
    program = rt.program()
    with transaction(rt.engine) as conn:
        return coupons.templates(conn, program)
