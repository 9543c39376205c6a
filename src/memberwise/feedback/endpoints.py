"""HTTP routes of feedback analysis: parse, authorize, call one service function, return."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from memberwise.feedback import service
from memberwise.feedback.schemas import (
    AnalyzeIn,
    AnalyzeOut,
    Level,
    RisingLevel,
    RisingListOut,
    TopicsOut,
)
from memberwise.kit.db import transaction
from memberwise.privacy.auth import Authorize
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime, get_runtime

router = APIRouter(prefix="/v1/feedback", tags=["feedback"])

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[
    Principal, Depends(Authorize(Role.operator, Role.analyst, Role.service, Role.platform))
]


@router.post("/analyze", summary="Sentiment and aspects (with trigger phrases) of Chinese texts")
async def post_analyze(body: AnalyzeIn, principal: Reader) -> AnalyzeOut:
    return await run_in_threadpool(service.analyze, body.texts)


@router.get("/topics", summary="Recurring problems per category, brand, item or merchant")
def get_topics(
    rt: RuntimeDep,
    principal: Reader,
    level: Level | None = None,
    key: Annotated[str | None, Query(max_length=128)] = None,
    aspect: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> TopicsOut:
    with transaction(rt.engine) as conn:
        return service.topics(conn, level=level, key=key, aspect=aspect, limit=limit)


@router.get("/rising", summary="Items and merchants whose complaint rate is rising")
def get_rising(
    rt: RuntimeDep,
    principal: Reader,
    level: RisingLevel | None = None,
    all_tested: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> RisingListOut:
    with transaction(rt.engine) as conn:
        return service.rising(conn, level=level, only_rising=not all_tested, limit=limit)
