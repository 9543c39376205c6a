"""HTTP route for event ingestion."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from memberwise.events import service
from memberwise.events.schemas import MAX_BATCH, EventBatch, IngestResult
from memberwise.kit.db import transaction
from memberwise.kit.openapi import inline_schema
from memberwise.privacy import erasure
from memberwise.privacy.auth import Authorize
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime, get_runtime

router = APIRouter(prefix="/v1", tags=["events"])

_batch_schema = inline_schema(EventBatch)


def _ingest(rt: Runtime, body: bytes, principal: Principal) -> IngestResult:
    events, rejections = service.read_batch(body)
    with transaction(rt.engine) as conn:
        return service.ingest_batch(
            conn,
            rt.lake,
            events,
            rejections,
            actor=principal,
            known_members=rt.known_members,
            tombstone_secret=erasure.tombstone_secret(rt.settings.pii_key_bytes),
        )


@router.post(
    "/events",
    summary=f"Send up to {MAX_BATCH} behaviour events (idempotent by event_id)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _batch_schema}},
        }
    },
)
async def ingest_events(
    request: Request,
    rt: Annotated[Runtime, Depends(get_runtime)],
    principal: Annotated[Principal, Depends(Authorize(Role.platform))],
) -> IngestResult:
    # The body is parsed by hand, not by FastAPI, so one bad event is rejected on its own
    # instead of failing the whole batch with a 422.
    body = await request.body()
    return await run_in_threadpool(_ingest, rt, body, principal)
