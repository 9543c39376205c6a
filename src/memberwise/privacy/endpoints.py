"""HTTP routes for API keys, the audit log and the caller's own identity."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from memberwise.kit.db import transaction
from memberwise.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page
from memberwise.privacy import service
from memberwise.privacy.auth import Authorize
from memberwise.privacy.schemas import (
    AuditEntry,
    KeyCreate,
    KeyCreated,
    KeyOut,
    Principal,
    Role,
    StaffCreate,
    StaffOut,
)
from memberwise.runtime import Runtime, get_runtime

router = APIRouter(prefix="/v1", tags=["access"])

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Admin = Annotated[Principal, Depends(Authorize())]
Anyone = Annotated[Principal, Depends(Authorize(*Role))]


@router.get("/me", summary="Who the presented key belongs to")
def whoami(principal: Anyone) -> Principal:
    return principal


@router.post("/staff", summary="Add a staff account (idempotent)")
def create_staff(body: StaffCreate, rt: RuntimeDep, principal: Admin) -> StaffOut:
    with transaction(rt.engine) as conn:
        return service.create_staff(conn, body, actor=principal)


@router.get("/staff", summary="List staff accounts")
def list_staff(rt: RuntimeDep, principal: Admin) -> list[StaffOut]:
    with transaction(rt.engine) as conn:
        return service.list_staff(conn)


@router.post("/keys", status_code=201, summary="Create an API key (shown once)")
def create_key(body: KeyCreate, rt: RuntimeDep, principal: Admin) -> KeyCreated:
    with transaction(rt.engine) as conn:
        return service.create_key(conn, body, actor=principal)


@router.get("/keys", summary="List API keys (never their secrets)")
def list_keys(rt: RuntimeDep, principal: Admin) -> list[KeyOut]:
    with transaction(rt.engine) as conn:
        return service.list_keys(conn)


@router.delete("/keys/{key_id}", status_code=204, summary="Revoke an API key")
def revoke_key(key_id: str, rt: RuntimeDep, principal: Admin) -> Response:
    with transaction(rt.engine) as conn:
        service.revoke_key(conn, key_id, actor=principal, verifier=rt.verifier)
    return Response(status_code=204)


@router.get("/audit", summary="Audit log, newest first")
def list_audit(
    rt: RuntimeDep,
    principal: Admin,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    after: str | None = None,
    member_id: str | None = None,
    action: str | None = None,
) -> Page[AuditEntry]:
    with transaction(rt.engine) as conn:
        return service.list_audit(
            conn, limit=limit, after=after, member_id=member_id, action=action
        )
