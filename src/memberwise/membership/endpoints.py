"""HTTP routes of memberships: a member's membership, paid subscriptions and their payment
callbacks, black-card invitations, manual tier grants and account managers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse

from memberwise.kit.db import transaction
from memberwise.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page
from memberwise.kit.time import utcnow
from memberwise.membership import grants as membership_grants
from memberwise.membership import managers as membership_managers
from memberwise.membership import member_view, notices, subscriptions
from memberwise.membership.schemas import (
    CancelIn,
    CancelOut,
    InvitationOut,
    ManagerAssign,
    ManagerMembersOut,
    MemberManagerOut,
    MembershipOut,
    PaymentIn,
    SubscriptionCreate,
    SubscriptionOut,
    SubscriptionStatus,
    TierGrant,
    TierNoticeOut,
)
from memberwise.privacy.auth import Authorize
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime, get_runtime

router = APIRouter(prefix="/v1", tags=["membership"])

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[
    Principal, Depends(Authorize(Role.operator, Role.analyst, Role.service, Role.platform))
]
# Joining, paying and cancelling happen in the platform's app and payment system; service
# staff may cancel on a member's behalf.
Platform = Annotated[Principal, Depends(Authorize(Role.platform))]
PlatformOrService = Annotated[Principal, Depends(Authorize(Role.platform, Role.service))]
Staff = Annotated[Principal, Depends(Authorize(Role.operator, Role.service))]
Operator = Annotated[Principal, Depends(Authorize(Role.operator))]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


@router.get(
    "/members/{member_id}/membership",
    summary="Tier, score with its parts, the next tier and what is missing, subscriptions",
)
def get_membership(member_id: str, rt: RuntimeDep, principal: Reader) -> MembershipOut:
    with transaction(rt.engine) as conn:
        return member_view.membership(conn, rt.program(), member_id)


@router.get(
    "/members/{member_id}/tier-notices",
    summary="Every downgrade notice given to the member, newest first",
)
def get_tier_notices(member_id: str, rt: RuntimeDep, principal: Reader) -> list[TierNoticeOut]:
    with transaction(rt.engine) as conn:
        return notices.notices_of(conn, member_id)


@router.post(
    "/members/{member_id}/tier",
    summary="Grant a tier by hand (never changed by recalculation until `until`)",
)
def grant_tier(
    member_id: str, body: TierGrant, rt: RuntimeDep, principal: Operator
) -> MembershipOut:
    with transaction(rt.engine) as conn:
        return membership_grants.grant(conn, rt.program(), member_id, body, actor=principal)


@router.post(
    "/members/{member_id}/subscriptions",
    status_code=201,
    summary="Join a paid membership: the subscription with its fee and first invoice",
)
def join(
    member_id: str,
    body: SubscriptionCreate,
    rt: RuntimeDep,
    principal: Platform,
    idempotency_key: IdempotencyKey = None,
) -> SubscriptionOut:
    with transaction(rt.engine) as conn:
        return subscriptions.join(
            conn,
            rt.program(),
            member_id,
            body.plan,
            at=utcnow(),
            auto_renew=body.auto_renew,
            key=idempotency_key,
            actor=principal,
        )


@router.get(
    "/subscriptions",
    summary="Subscriptions, filtered by member, plan and status, with invoices (paginated)",
)
def list_subscriptions(
    rt: RuntimeDep,
    principal: Reader,
    member_id: Annotated[str | None, Query(max_length=128)] = None,
    plan: Annotated[str | None, Query(max_length=64)] = None,
    status: SubscriptionStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    after: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Page[SubscriptionOut]:
    with transaction(rt.engine) as conn:
        return subscriptions.listing(
            conn,
            rt.program(),
            member_id=member_id,
            plan=plan,
            status=status,
            after=after,
            limit=limit,
            at=utcnow(),
        )


@router.get("/subscriptions/{subscription_id}", summary="A subscription with invoices and history")
def get_subscription(subscription_id: str, rt: RuntimeDep, principal: Reader) -> SubscriptionOut:
    with transaction(rt.engine) as conn:
        return subscriptions.view(conn, rt.program(), subscription_id, at=utcnow())


@router.post(
    "/subscriptions/{subscription_id}/payments",
    summary="Payment callback (idempotent by payment_id; a replay returns the first answer)",
)
def payment(
    subscription_id: str, body: PaymentIn, rt: RuntimeDep, principal: Platform
) -> JSONResponse:
    with transaction(rt.engine) as conn:
        status, answer = subscriptions.pay(
            conn, rt.program(), subscription_id, body, at=utcnow(), actor=principal
        )
    return JSONResponse(answer, status_code=status)


@router.post(
    "/subscriptions/{subscription_id}/cancel",
    summary="Cancel: no renewal, a refund by the plan's policy",
)
def cancel(
    subscription_id: str, body: CancelIn, rt: RuntimeDep, principal: PlatformOrService
) -> CancelOut:
    with transaction(rt.engine) as conn:
        return subscriptions.cancel(
            conn,
            rt.program(),
            subscription_id,
            at=utcnow(),
            reason=body.reason,
            actor=principal,
        )


@router.get("/invitations", summary="Black-card invitations, each with why it was made")
def list_invitations(
    rt: RuntimeDep,
    principal: Staff,
    status: Annotated[str | None, Query(pattern="^(pending|accepted|declined|expired)$")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    after: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Page[InvitationOut]:
    with transaction(rt.engine) as conn:
        return membership_grants.list_invitations(conn, status=status, after=after, limit=limit)


@router.post("/invitations/{invitation_id}/accept", summary="The member accepts the invitation")
def accept(invitation_id: str, rt: RuntimeDep, principal: PlatformOrService) -> InvitationOut:
    with transaction(rt.engine) as conn:
        return membership_grants.decide(conn, rt.program(), invitation_id, True, actor=principal)


@router.post("/invitations/{invitation_id}/decline", summary="The member declines the invitation")
def decline(invitation_id: str, rt: RuntimeDep, principal: PlatformOrService) -> InvitationOut:
    with transaction(rt.engine) as conn:
        return membership_grants.decide(conn, rt.program(), invitation_id, False, actor=principal)


@router.put(
    "/members/{member_id}/manager",
    summary="Reassign the member's account manager, with a reason (idempotent)",
)
def reassign_manager(
    member_id: str, body: ManagerAssign, rt: RuntimeDep, principal: Staff
) -> MemberManagerOut:
    with transaction(rt.engine) as conn:
        return membership_managers.reassign_manager(
            conn, rt.program(), member_id, body, at=utcnow(), actor=principal
        )


@router.get("/managers/{staff_id}/members", summary="The members an account manager looks after")
def managed(
    staff_id: str,
    rt: RuntimeDep,
    principal: Staff,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    after: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> ManagerMembersOut:
    with transaction(rt.engine) as conn:
        return membership_managers.managed_members(conn, staff_id, after=after, limit=limit)
