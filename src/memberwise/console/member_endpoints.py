"""``POST /v1/member-center/links``: the platform asks for a member's signed member-center link
(with its API key) instead of signing links itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from memberwise.console import member_links
from memberwise.console.member_center import ROOT, link_secret
from memberwise.console.member_i18n import Locale
from memberwise.kit.db import transaction
from memberwise.kit.time import utcnow
from memberwise.ledger import service as ledger
from memberwise.privacy.auth import Authorize
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime, get_runtime

router = APIRouter(prefix="/v1/member-center", tags=["member center"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Platform = Annotated[Principal, Depends(Authorize(Role.platform))]


class LinkIn(BaseModel):
    member_id: str = Field(min_length=1, max_length=128)
    ttl_seconds: int | None = Field(
        default=None, ge=30, le=86_400, description="Default: member_center_link_seconds."
    )
    lang: Locale | None = Field(default=None, description="Default: the program's locale.")


class LinkOut(BaseModel):
    """A link to open in the member's web view; it works until ``expires_at``."""

    url: str
    member_id: str
    expires_at: datetime


@router.post("/links", status_code=201, summary="A signed, short-lived member-center link")
def create_link(body: LinkIn, request: Request, rt: RuntimeDep, principal: Platform) -> LinkOut:
    """Raises member_not_found for an unknown member, link_lifetime_too_long past the cap."""
    ttl = body.ttl_seconds or rt.settings.member_center_link_seconds
    if ttl > rt.settings.member_center_max_link_seconds:
        raise member_links.LinkTooLong(
            f"a link may last at most {rt.settings.member_center_max_link_seconds} seconds"
        )
    with transaction(rt.engine) as conn:
        ledger.member_exists(conn, body.member_id)
    expires = int(utcnow().timestamp()) + ttl
    link = member_links.sign(link_secret(rt), body.member_id, expires)
    query = link.query() | ({"lang": body.lang} if body.lang else {})
    base = (rt.settings.member_center_url or str(request.base_url).rstrip("/") + ROOT).rstrip("/")
    return LinkOut(
        url=f"{base}?{urlencode(query)}",
        member_id=body.member_id,
        expires_at=datetime.fromtimestamp(expires, UTC),
    )
