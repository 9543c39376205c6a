"""HTTP routes of merchant quality: parse, authorize, call one service function, return."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query

from memberwise.kit.db import transaction
from memberwise.merchants import service
from memberwise.merchants.schemas import (
    AppealDecisionIn,
    AppealIn,
    AppealOut,
    LedgerOut,
    MerchantOut,
    PenaltyResult,
    ScorecardsOut,
    ViolationIn,
)
from memberwise.privacy.auth import Authorize
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime, get_runtime

router = APIRouter(prefix="/v1", tags=["merchants"])

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[
    Principal, Depends(Authorize(Role.operator, Role.analyst, Role.service, Role.platform))
]
Operator = Annotated[Principal, Depends(Authorize(Role.operator))]
MerchantId = Annotated[str, Query(min_length=1, max_length=128)]


@router.get("/merchants/scorecards", summary="Merchant scorecards, worst quality first")
def list_scorecards(
    rt: RuntimeDep,
    principal: Reader,
    industry: Annotated[str | None, Query(max_length=128)] = None,
    best_first: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> ScorecardsOut:
    with transaction(rt.engine) as conn:
        return service.scorecards(conn, industry=industry, worst_first=not best_first, limit=limit)


@router.get(
    "/merchants/{merchant_id}",
    summary="A merchant's DSR scorecard, penalty points, actions in force, badge",
)
def get_merchant(merchant_id: str, rt: RuntimeDep, principal: Reader) -> MerchantOut:
    program = rt.program()
    with transaction(rt.engine) as conn:
        return service.scorecard(conn, program.merchants, merchant_id, program.display_timezone)


@router.get("/merchants/{merchant_id}/penalties", summary="A merchant's penalty ledger")
def get_ledger(merchant_id: str, rt: RuntimeDep, principal: Reader) -> LedgerOut:
    program = rt.program()
    with transaction(rt.engine) as conn:
        return service.ledger(conn, program.merchants, merchant_id, program.display_timezone)


@router.post(
    "/merchants/{merchant_id}/penalties",
    summary="Record a violation (idempotent by Idempotency-Key); thresholds trigger actions",
)
def post_penalty(
    merchant_id: str,
    body: ViolationIn,
    rt: RuntimeDep,
    principal: Operator,
    idempotency_key: Annotated[str, Header(min_length=1, max_length=200)],
) -> PenaltyResult:
    program = rt.program()
    with transaction(rt.engine) as conn:
        result = service.record_violation(
            conn, program.merchants, merchant_id, body.violation, body.reason,
            idempotency_key=idempotency_key, tz=program.display_timezone, actor=principal,
        )  # fmt: skip
    service.clear_exclusion_cache()
    return result


@router.post("/penalties/{entry_id}/appeal", summary="Appeal a penalty entry")
def post_appeal(entry_id: str, body: AppealIn, rt: RuntimeDep, principal: Operator) -> AppealOut:
    with transaction(rt.engine) as conn:
        return service.appeal(conn, entry_id, body.reason, actor=principal)


@router.post("/appeals/{appeal_id}/decision", summary="Uphold (reverse the points) or reject")
def post_decision(
    appeal_id: str, body: AppealDecisionIn, rt: RuntimeDep, principal: Operator
) -> AppealOut:
    program = rt.program()
    with transaction(rt.engine) as conn:
        result = service.decide_appeal(
            conn, program.merchants, appeal_id, uphold=body.uphold, decision=body.decision,
            tz=program.display_timezone, actor=principal,
        )  # fmt: skip
    service.clear_exclusion_cache()
    return result
