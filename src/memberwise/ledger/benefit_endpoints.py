"""HTTP routes of benefits and the checkout quote: parse, authorize, call one service function,
return.

The program is ``Runtime.program()``: read from ``MEMBERWISE_PROGRAM_FILE`` again only when the
file changes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from memberwise.kit.db import transaction
from memberwise.kit.time import utcnow
from memberwise.ledger import aftersales, benefits, checkout
from memberwise.ledger import service as ledger
from memberwise.ledger.aftersales import ExpressRefundOut
from memberwise.ledger.benefits import (
    BenefitUse,
    ExpressRefundIn,
    MemberBenefits,
    PerkClaimIn,
    ReturnCardIn,
)
from memberwise.ledger.checkout import Quote, QuoteIn
from memberwise.privacy.auth import Authorize
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime, get_runtime

router = APIRouter(prefix="/v1", tags=["benefits"])

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[
    Principal, Depends(Authorize(Role.platform, Role.operator, Role.analyst, Role.service))
]
#: Express refunds are paid by the platform or by the service desk handling an after-sale.
Refunder = Annotated[Principal, Depends(Authorize(Role.platform, Role.service))]
Platform = Annotated[Principal, Depends(Authorize(Role.platform))]
Issuer = Annotated[Principal, Depends(Authorize(Role.platform, Role.operator))]


@router.get(
    "/members/{member_id}/benefits",
    summary="The member's benefits (tier and plans) with what remains of each now",
    response_model=MemberBenefits,
)
async def get_benefits(member_id: str, rt: RuntimeDep, principal: Reader) -> Response:
    # The hot read runs on the event loop: a few keyed reads and in-memory work (well under a
    # millisecond on the embedded store), cheaper than a hop to the thread pool, which under
    # load also fights the loop for the GIL. Serialized once here (the model was validated when
    # it was built) instead of validated again by FastAPI.
    program = rt.program()
    with transaction(rt.engine) as conn:
        out = benefits.benefits_now(conn, program, member_id, utcnow())
    return Response(out.model_dump_json(), media_type="application/json")


@router.post(
    "/members/{member_id}/benefits/express-refunds",
    summary="Pay a refund of the member's order at once against the express-refund credit; it "
    "is that order's refund (points and coupons follow it; idempotent by refund_id)",
)
def reserve_express_refund(
    member_id: str, body: ExpressRefundIn, rt: RuntimeDep, principal: Refunder
) -> ExpressRefundOut:
    program = rt.program()
    return ledger.write(
        rt.engine,
        lambda conn: aftersales.express_refund(
            conn, program, member_id, body, at=utcnow(), actor=principal
        ),
    )


@router.post(
    "/members/{member_id}/benefits/express-refunds/{refund_id}/restore",
    summary="The return arrived: give the express refund's credit back (idempotent)",
)
def restore_express_refund(
    member_id: str, refund_id: str, rt: RuntimeDep, principal: Refunder
) -> BenefitUse:
    return ledger.write(
        rt.engine,
        lambda conn: benefits.restore_express_refund(
            conn, member_id, refund_id, at=utcnow(), actor=principal
        ),
    )


@router.post(
    "/members/{member_id}/benefits/return-cards",
    summary="Use one of today's return-guarantee cards on the member's order (idempotent by "
    "use_id)",
)
def use_return_card(
    member_id: str, body: ReturnCardIn, rt: RuntimeDep, principal: Platform
) -> BenefitUse:
    program = rt.program()
    return ledger.write(
        rt.engine,
        lambda conn: aftersales.return_card(
            conn, program, member_id, body, at=utcnow(), actor=principal
        ),
    )


@router.post(
    "/members/{member_id}/benefits/partner-perks",
    summary="Record a claim of a partner perk for the current period (idempotent by claim_id)",
)
def claim_partner_perk(
    member_id: str, body: PerkClaimIn, rt: RuntimeDep, principal: Platform
) -> BenefitUse:
    program = rt.program()
    return ledger.write(
        rt.engine,
        lambda conn: benefits.partner_perk(
            conn, program, member_id, body, at=utcnow(), actor=principal
        ),
    )


@router.post(
    "/members/{member_id}/benefits/monthly-coupons",
    summary="Issue this month's coupons of the member's monthly-coupon benefits (idempotent)",
)
def issue_monthly_coupons(member_id: str, rt: RuntimeDep, principal: Issuer) -> dict[str, int]:
    program = rt.program()
    issued = ledger.write(
        rt.engine,
        lambda conn: benefits.monthly_coupons(
            conn, program, member_id, at=utcnow(), actor=principal
        ),
    )
    return {"issued": issued}


@router.post(
    "/checkout/quote",
    summary="Member prices, the best coupon combination, usable points and free shipping for "
    "a cart (changes nothing)",
)
def quote(body: QuoteIn, rt: RuntimeDep, principal: Platform) -> Quote:
    program = rt.program()
    with transaction(rt.engine) as conn:
        return checkout.quote(conn, program, body, at=utcnow())
