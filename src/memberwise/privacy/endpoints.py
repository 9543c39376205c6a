"""HTTP routes for API keys, the audit log, the caller's own identity, consent and the
members' data rights."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from memberwise.kit.db import transaction
from memberwise.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page
from memberwise.privacy import consent, erasure, merge, rights, service
from memberwise.privacy.auth import Authorize
from memberwise.privacy.schemas import (
    AuditEntry,
    ConsentIn,
    ConsentRecord,
    ConsentState,
    DataRequestIn,
    DataRequestOut,
    KeyCreate,
    KeyCreated,
    KeyOut,
    MergeIn,
    MergeResult,
    Principal,
    RequestDecision,
    RequestKind,
    RequestStatus,
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


# -- consent (the platform, on the member's behalf; service staff read) -----------------------

consent_router = APIRouter(prefix="/v1", tags=["consent and data rights"])
Platform = Annotated[Principal, Depends(Authorize(Role.platform))]
ConsentReader = Annotated[Principal, Depends(Authorize(Role.platform, Role.service))]


@consent_router.get(
    "/members/{member_id}/consents",
    summary="The member's current consent per purpose (derived from the ledger or the default)",
)
def get_consents(member_id: str, rt: RuntimeDep, principal: ConsentReader) -> ConsentState:
    settings = rt.program().privacy
    with transaction(rt.engine) as conn:
        return consent.state(conn, settings, member_id)


@consent_router.get(
    "/members/{member_id}/consents/history",
    summary="Every consent record of the member, oldest first (the evidence)",
)
def get_consent_history(
    member_id: str, rt: RuntimeDep, principal: ConsentReader
) -> list[ConsentRecord]:
    with transaction(rt.engine) as conn:
        return consent.history(conn, member_id)


@consent_router.post(
    "/members/{member_id}/consents",
    status_code=201,
    summary="Record the member's answer for a purpose (append-only; idempotent by request_id)",
)
def post_consent(
    member_id: str, body: ConsentIn, rt: RuntimeDep, principal: Platform, response: Response
) -> ConsentRecord:
    settings = rt.program().privacy
    with transaction(rt.engine) as conn:
        out, new = consent.record(conn, settings, member_id, body, actor=principal)
    if not new:
        response.status_code = 200
    return out


# -- data-subject requests: filed by the platform, worked by the service desk ------------------

Staff = Annotated[Principal, Depends(Authorize(Role.service))]
RequestReader = Annotated[Principal, Depends(Authorize(Role.platform, Role.service))]


def _secret(rt: Runtime) -> bytes:
    return erasure.tombstone_secret(rt.settings.pii_key_bytes)


@consent_router.post(
    "/members/{member_id}/data-requests",
    status_code=201,
    summary="File the member's request: access, copy, correction or erasure (idempotent)",
)
def post_data_request(
    member_id: str, body: DataRequestIn, rt: RuntimeDep, principal: Platform, response: Response
) -> DataRequestOut:
    program = rt.program()
    with transaction(rt.engine) as conn:
        out, new = rights.submit(
            conn,
            rt.cipher,
            member_id,
            body,
            deadline=program.privacy.request_deadline,
            timezone=program.display_timezone,
            actor=principal,
        )
    if not new:
        response.status_code = 200
    return out


@consent_router.get(
    "/members/{member_id}/data-requests", summary="The member's requests and their state"
)
def list_member_requests(
    member_id: str, rt: RuntimeDep, principal: RequestReader
) -> list[DataRequestOut]:
    with transaction(rt.engine) as conn:
        return rights.queue(conn, status=None, member_id=member_id)


@consent_router.get("/data-requests", summary="The staff queue: requests by deadline, oldest first")
def list_requests(
    rt: RuntimeDep,
    principal: Staff,
    status: RequestStatus | None = RequestStatus.open,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> list[DataRequestOut]:
    with transaction(rt.engine) as conn:
        return rights.queue(conn, status=status, limit=limit)


@consent_router.post(
    "/data-requests/{request_id}/decision",
    summary="Complete (do what was asked) or reject a request",
)
def decide_request(
    request_id: str, body: RequestDecision, rt: RuntimeDep, principal: Staff
) -> DataRequestOut:
    return rights.decide(
        rt.engine,
        rt.lake,
        rt.settings.home,
        rt.cipher,
        _secret(rt),
        request_id,
        body,
        actor=principal,
    )


@consent_router.get(
    "/data-requests/{request_id}/archive",
    summary="The member's archive of a completed access or copy request (machine-readable)",
)
def get_archive(request_id: str, rt: RuntimeDep, principal: RequestReader) -> dict[str, Any]:
    with transaction(rt.engine) as conn:
        request = rights.get_request(conn, request_id)
        if request.kind not in (RequestKind.access, RequestKind.copy) or (
            request.status is not RequestStatus.completed
        ):
            raise rights.RequestClosed(
                "the archive is served for a completed access or copy request only"
            )
        out = rights.archive(conn, rt.cipher, rt.lake, request.member_id)
        service.audit(
            conn,
            principal,
            "data_request.archive_read",
            "data_request",
            request_id,
            member_id=request.member_id,
        )
        return out


@consent_router.post(
    "/merges",
    summary="Fold a member id into another of the same person (idempotent, audited)",
)
def post_merge(body: MergeIn, rt: RuntimeDep, principal: Platform) -> MergeResult:
    program = rt.program()
    with transaction(rt.engine) as conn:
        return merge.merge(
            conn,
            program.privacy,
            program,
            body.source_id,
            body.target_id,
            secret=_secret(rt),
            actor=principal,
        )
