"""HTTP routes for campaigns: define, launch, send what is due, the exposure log, the results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from memberwise.campaigns import journeys, outcomes, service
from memberwise.campaigns.schemas import (
    CampaignCreate,
    CampaignMemberOut,
    CampaignOut,
    CampaignResults,
    EnrollmentOut,
    JourneyCreate,
    JourneyOut,
    JourneyRun,
    SendReport,
)
from memberwise.kit.db import transaction
from memberwise.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page
from memberwise.privacy.auth import Authorize
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime, get_runtime

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])
journeys_router = APIRouter(prefix="/v1/journeys", tags=["campaigns"])

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Operator = Annotated[Principal, Depends(Authorize(Role.admin, Role.operator))]
Reader = Annotated[Principal, Depends(Authorize(Role.admin, Role.operator, Role.analyst))]


@router.post("", status_code=201, summary="Define a campaign (a draft)")
def create(body: CampaignCreate, rt: RuntimeDep, principal: Operator) -> CampaignOut:
    with transaction(rt.engine) as conn:
        return service.create(conn, rt.program(), body, actor=principal)


@router.get("", summary="Campaigns, newest first")
def list_campaigns(rt: RuntimeDep, principal: Reader) -> list[CampaignOut]:
    with transaction(rt.engine) as conn:
        return service.list_all(conn)


@router.get("/{campaign_id}", summary="One campaign with its members by status")
def get(campaign_id: str, rt: RuntimeDep, principal: Reader) -> CampaignOut:
    with transaction(rt.engine) as conn:
        return service.get(conn, campaign_id)


@router.post("/{campaign_id}/launch", summary="Assign the audience and schedule the sends")
def launch(campaign_id: str, rt: RuntimeDep, principal: Operator) -> CampaignOut:
    with transaction(rt.engine) as conn:
        return service.launch(conn, rt.program(), campaign_id, actor=principal)


@router.post("/send-due", summary="Send every campaign's due messages now")
def send_due(rt: RuntimeDep, principal: Operator) -> SendReport:
    with transaction(rt.engine) as conn:
        return service.send_due(conn, rt.program(), actor=principal)


@router.get("/{campaign_id}/members", summary="The exposure log: arm and send of each member")
def members(
    campaign_id: str,
    rt: RuntimeDep,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    after: str | None = None,
    status: Annotated[str | None, Query(pattern="^(scheduled|sent|held_out|skipped)$")] = None,
    arm: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = None,
) -> Page[CampaignMemberOut]:
    with transaction(rt.engine) as conn:
        return service.members(conn, campaign_id, after=after, limit=limit, status=status, arm=arm)


@router.get("/{campaign_id}/results", summary="Treatment vs holdout: SRM, effects, intervals")
def results(campaign_id: str, rt: RuntimeDep, principal: Reader) -> CampaignResults:
    with transaction(rt.engine) as conn:
        return outcomes.results(conn, campaign_id)


@journeys_router.post("", status_code=201, summary="Define a journey (active at once)")
def create_journey(body: JourneyCreate, rt: RuntimeDep, principal: Operator) -> JourneyOut:
    with transaction(rt.engine) as conn:
        return journeys.create(conn, rt.program(), body, actor=principal)


@journeys_router.get("", summary="Journeys, newest first")
def list_journeys(rt: RuntimeDep, principal: Reader) -> list[JourneyOut]:
    with transaction(rt.engine) as conn:
        return journeys.list_all(conn)


@journeys_router.get("/{journey_id}", summary="One journey with its enrollments by status")
def get_journey(journey_id: str, rt: RuntimeDep, principal: Reader) -> JourneyOut:
    with transaction(rt.engine) as conn:
        return journeys.get(conn, journey_id)


@journeys_router.post("/run", summary="Enroll new triggers and run every due step now")
def run_journeys(rt: RuntimeDep, principal: Operator) -> JourneyRun:
    with transaction(rt.engine) as conn:
        return journeys.run(conn, rt.program(), actor=principal, lake=rt.lake)


@journeys_router.get("/{journey_id}/enrollments", summary="Each member's progress")
def list_enrollments(
    journey_id: str,
    rt: RuntimeDep,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    after: str | None = None,
    status: Annotated[str | None, Query(pattern="^(active|completed|exited)$")] = None,
) -> Page[EnrollmentOut]:
    with transaction(rt.engine) as conn:
        return journeys.enrollments(conn, journey_id, after=after, limit=limit, status=status)
