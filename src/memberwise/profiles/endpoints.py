"""HTTP routes of published profiles, segments and tags: parse, authorize, call one service
function, return."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from memberwise.kit.db import transaction
from memberwise.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page
from memberwise.privacy.auth import Authorize
from memberwise.privacy.schemas import Principal, Role
from memberwise.profiles import service
from memberwise.profiles.schemas import ProfileOut, SegmentMember, SegmentsOut, TagsOut
from memberwise.runtime import Runtime, get_runtime

router = APIRouter(prefix="/v1", tags=["profiles"])

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
# A profile holds no PII (region is not personal data here), so every reading role may see it.
ProfileReader = Annotated[
    Principal,
    Depends(Authorize(Role.operator, Role.analyst, Role.service, Role.platform)),
]
GroupReader = Annotated[Principal, Depends(Authorize(Role.operator, Role.analyst))]


@router.get("/members/{member_id}/profile", summary="A member's profile in the published build")
def get_profile(member_id: str, rt: RuntimeDep, principal: ProfileReader) -> ProfileOut:
    with transaction(rt.engine) as conn:
        return service.get_profile(conn, member_id)


@router.get("/segments", summary="Lifecycle segments and personas of the published build")
def list_segments(rt: RuntimeDep, principal: GroupReader) -> SegmentsOut:
    with transaction(rt.engine) as conn:
        return service.list_segments(conn)


@router.get(
    "/segments/{name}/members",
    summary="Members of a segment or persona (`persona-<id>`), ordered by member_id",
)
def segment_members(
    name: str,
    rt: RuntimeDep,
    principal: GroupReader,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    after: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Page[SegmentMember]:
    with transaction(rt.engine) as conn:
        return service.segment_members(conn, name, after, limit)


@router.get("/tags", summary="Tags of the published build with their member counts")
def list_tags(rt: RuntimeDep, principal: GroupReader) -> TagsOut:
    with transaction(rt.engine) as conn:
        return service.list_tags(conn)
