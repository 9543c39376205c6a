"""Members as the API accepts and shows them. PII appears only for roles allowed to read it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from memberwise.kit.ids import MemberId
from memberwise.kit.time import BusinessTime


class MemberStatus(StrEnum):
    active = "active"
    closed = "closed"


class MemberSource(StrEnum):
    """How memberwise learned of the member: registered by the platform, or seen in events."""

    registered = "registered"
    events = "events"


#: Personal data, sealed at rest; the other fields are stored in clear for analytics.
PII_FIELDS: tuple[str, ...] = ("name", "phone", "email")


class MemberFields(BaseModel):
    """Fields a platform may set on a member; all optional."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=32, pattern=r"^\+?[0-9][0-9 \-]{3,30}$")
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    gender: str | None = Field(default=None, max_length=16)
    birth_year: int | None = Field(default=None, ge=1900, le=2100)
    region: str | None = Field(default=None, max_length=128)
    city: str | None = Field(default=None, max_length=128)
    credit_stars: int | None = Field(
        default=None, ge=0, le=7, description="The platform's credit rating, 0-7 stars."
    )
    registered_at: BusinessTime | None = None


class MemberCreate(MemberFields):
    """Register a member. ``member_id`` is the platform's own id and the idempotency key."""

    member_id: MemberId


class MemberUpdate(MemberFields):
    """Change some fields: only the fields present in the body change; null clears one."""

    status: MemberStatus | None = None


class MemberPII(BaseModel):
    name: str | None
    phone: str | None
    email: str | None


class MemberOut(BaseModel):
    member_id: str
    status: MemberStatus
    source: MemberSource
    gender: str | None
    birth_year: int | None
    region: str | None
    city: str | None
    credit_stars: int | None
    registered_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int
    pii: MemberPII | None = Field(
        default=None, description="Present only for roles allowed to read PII; each read audited."
    )


class ImportResult(BaseModel):
    created: int
    registered: int
    unchanged: int
