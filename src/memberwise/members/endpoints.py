"""HTTP routes of the members domain: parse, authorize, call one service function, return."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from memberwise.kit.db import transaction
from memberwise.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page
from memberwise.members import service
from memberwise.members.schemas import MemberCreate, MemberOut, MemberSource, MemberUpdate
from memberwise.privacy.auth import Authorize
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime, get_runtime

router = APIRouter(prefix="/v1/members", tags=["members"])

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Writer = Annotated[Principal, Depends(Authorize(Role.platform))]
Reader = Annotated[
    Principal,
    Depends(Authorize(Role.platform, Role.operator, Role.analyst, Role.service)),
]


@router.post("", status_code=201, summary="Register a member (idempotent by member_id)")
def create_member(
    body: MemberCreate, response: Response, rt: RuntimeDep, principal: Writer
) -> MemberOut:
    with transaction(rt.engine) as conn:
        member, changed = service.create_member(conn, rt.cipher, body, actor=principal)
    if not changed:
        response.status_code = 200
    return member


@router.get("", summary="List members (no PII), ordered by member_id")
def list_members(
    rt: RuntimeDep,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    after: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    source: MemberSource | None = None,
    region: str | None = None,
) -> Page[MemberOut]:
    with transaction(rt.engine) as conn:
        return service.list_members(conn, limit=limit, after=after, source=source, region=region)


@router.get("/{member_id}", summary="Get a member (PII for admin, platform, service; audited)")
def get_member(member_id: str, rt: RuntimeDep, principal: Reader) -> MemberOut:
    with transaction(rt.engine) as conn:
        return service.get_member(conn, rt.cipher, member_id, actor=principal)


@router.patch("/{member_id}", summary="Change some fields of a member")
def update_member(
    member_id: str, body: MemberUpdate, rt: RuntimeDep, principal: Writer
) -> MemberOut:
    with transaction(rt.engine) as conn:
        return service.update_member(conn, rt.cipher, member_id, body, actor=principal)
