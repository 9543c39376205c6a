"""HTTP routes for webhook endpoints, the delivery log and replays (admin and platform keys)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from memberwise.kit.db import transaction
from memberwise.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page
from memberwise.privacy.auth import Authorize
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime, get_runtime
from memberwise.webhooks import service
from memberwise.webhooks.schemas import (
    EVENT_DESCRIPTIONS,
    AttemptOut,
    DeliveryOut,
    EndpointCreate,
    EndpointCreated,
    EndpointOut,
    EndpointUpdate,
    EventTypeOut,
    Replayed,
    ReplayRange,
    RotateSecret,
    SecretRotated,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Platform = Annotated[Principal, Depends(Authorize(Role.admin, Role.platform))]


@router.get("/event-types", summary="The event types an endpoint can subscribe to")
def event_types(principal: Platform) -> list[EventTypeOut]:
    return [EventTypeOut(type=t.value, description=d) for t, d in EVENT_DESCRIPTIONS.items()]


@router.post("/endpoints", status_code=201, summary="Register an endpoint (secret shown once)")
def create_endpoint(body: EndpointCreate, rt: RuntimeDep, principal: Platform) -> EndpointCreated:
    with transaction(rt.engine) as conn:
        return service.create_endpoint(conn, rt.cipher, body, actor=principal)


@router.get("/endpoints", summary="List endpoints")
def list_endpoints(rt: RuntimeDep, principal: Platform) -> list[EndpointOut]:
    with transaction(rt.engine) as conn:
        return service.list_endpoints(conn)


@router.get("/endpoints/{endpoint_id}", summary="One endpoint")
def get_endpoint(endpoint_id: str, rt: RuntimeDep, principal: Platform) -> EndpointOut:
    with transaction(rt.engine) as conn:
        return service.get_endpoint(conn, endpoint_id)


@router.patch("/endpoints/{endpoint_id}", summary="Change types, disable or re-enable")
def update_endpoint(
    endpoint_id: str, body: EndpointUpdate, rt: RuntimeDep, principal: Platform
) -> EndpointOut:
    with transaction(rt.engine) as conn:
        return service.update_endpoint(conn, endpoint_id, body, actor=principal)


@router.delete("/endpoints/{endpoint_id}", status_code=204, summary="Remove an endpoint")
def delete_endpoint(endpoint_id: str, rt: RuntimeDep, principal: Platform) -> Response:
    with transaction(rt.engine) as conn:
        service.delete_endpoint(conn, endpoint_id, actor=principal)
    return Response(status_code=204)


@router.post(
    "/endpoints/{endpoint_id}/rotate-secret", summary="New signing secret; the old one overlaps"
)
def rotate_secret(
    endpoint_id: str, body: RotateSecret, rt: RuntimeDep, principal: Platform
) -> SecretRotated:
    with transaction(rt.engine) as conn:
        return service.rotate_secret(
            conn,
            rt.cipher,
            endpoint_id,
            keep_previous=timedelta(hours=body.keep_previous_hours),
            actor=principal,
        )


@router.post("/endpoints/{endpoint_id}/replay", summary="Send a time range's deliveries again")
def replay_range(
    endpoint_id: str, body: ReplayRange, rt: RuntimeDep, principal: Platform
) -> Replayed:
    with transaction(rt.engine) as conn:
        return Replayed(replayed=service.replay_range(conn, endpoint_id, body, actor=principal))


@router.get("/deliveries", summary="The delivery log, newest first")
def list_deliveries(
    rt: RuntimeDep,
    principal: Platform,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    after: str | None = None,
    endpoint_id: str | None = None,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|failed)$")] = None,
    member_id: str | None = None,
) -> Page[DeliveryOut]:
    with transaction(rt.engine) as conn:
        return service.list_deliveries(
            conn,
            limit=limit,
            after=after,
            endpoint_id=endpoint_id,
            status=status,
            member_id=member_id,
        )


@router.get("/deliveries/{delivery_id}/attempts", summary="Every attempt of a delivery")
def list_attempts(delivery_id: str, rt: RuntimeDep, principal: Platform) -> list[AttemptOut]:
    with transaction(rt.engine) as conn:
        return service.list_attempts(conn, delivery_id)


@router.post("/deliveries/{delivery_id}/replay", summary="Send one delivery again (same id)")
def replay_delivery(delivery_id: str, rt: RuntimeDep, principal: Platform) -> DeliveryOut:
    with transaction(rt.engine) as conn:
        return service.replay_delivery(conn, delivery_id, actor=principal)
