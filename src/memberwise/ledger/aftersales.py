"""After-sales uses of benefits, tied to the member's orders: express refunds and return cards.

An **express refund** pays a refund at once, before the return arrives, against the member's
express-refund credit (:func:`memberwise.ledger.benefits.reserve_express_refund`). It must name a
real order of that member, and it *is* that order's refund: the same transaction records refund
``refund_id`` of the order through :func:`memberwise.ledger.orders.refund`, so the order's points
are taken back pro rata and its coupons given back on a full refund, exactly as a refund posted
to ``POST /v1/orders/{id}/refunds``. If the platform already posted that refund (same id, same
order, same amount), the express refund links to it instead of refunding twice. When the return
arrives, :func:`memberwise.ledger.benefits.restore_express_refund` gives the credit back; the
refund stands.

A **return card** is used on a real order of the member; it changes no ledger.

Idempotent: the refund id (express refund) or the use id (return card) is the key; a replay
answers the first result, the same key with another order or amount is
``idempotency_key_reused``. Nothing here commits.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from memberwise.ledger import benefits, orders
from memberwise.ledger.benefits import BenefitUse, ExpressRefundIn, ReturnCardIn
from memberwise.ledger.schemas import RefundIn, RefundOut
from memberwise.ledger.service import RefundExists
from memberwise.privacy.schemas import Principal
from memberwise.program.schemas import Program


class ExpressRefundOut(BenefitUse):
    """The credit taken (the use) and the order's refund it paid, with the order after it."""

    refund: RefundOut


def express_refund(
    conn: Connection,
    program: Program,
    member_id: str,
    data: ExpressRefundIn,
    *,
    at: datetime,
    actor: Principal,
) -> ExpressRefundOut:
    """Pay ``data.amount`` of the member's order ``data.order_id`` back now against the
    express-refund credit, as that order's refund ``data.refund_id``.

    Raises MemberUnknown, OrderNotFound (no such order of this member), BenefitNotHeld,
    ExpressRefundCreditExceeded, RefundTooLarge (more than is left to refund), OrderRefunded,
    RefundExists (the refund id was used for another order or amount) and
    IdempotencyKeyReused; on any refusal nothing changes.
    """
    held = benefits.entitled_now(conn, program, member_id, at)
    orders.member_order(conn, member_id, data.order_id)
    use = benefits.reserve_express_refund(conn, program, member_id, held, data, at=at, actor=actor)
    refund = orders.find_refund(conn, data.refund_id)
    if refund is None:
        ask = RefundIn(refund_id=data.refund_id, amount=data.amount, at=at)
        refund, _ = orders.refund(conn, program, data.order_id, ask, at=at, actor=actor)
    elif (refund.order_id, refund.amount) != (data.order_id, data.amount):
        raise RefundExists(
            f"refund {data.refund_id!r} was made for another order or amount; an express refund "
            "must be the same refund"
        )
    return ExpressRefundOut(**use.model_dump(), refund=refund)


def return_card(
    conn: Connection,
    program: Program,
    member_id: str,
    data: ReturnCardIn,
    *,
    at: datetime,
    actor: Principal,
) -> BenefitUse:
    """Use one of the member's return-guarantee cards on their order ``data.order_id``.

    Raises MemberUnknown, OrderNotFound (no such order of this member), BenefitNotHeld,
    ReturnCardsUsedUp and IdempotencyKeyReused; on any refusal nothing changes.
    """
    held = benefits.entitled_now(conn, program, member_id, at)
    orders.member_order(conn, member_id, data.order_id)
    return benefits.use_return_card(conn, program, member_id, held, data, at=at, actor=actor)
