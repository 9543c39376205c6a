"""Roles, principals, API keys and audit entries as the API shows them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class Role(StrEnum):
    """What a key may do. ``admin`` may do everything; ``platform`` is the platform backend."""

    admin = "admin"
    operator = "operator"
    analyst = "analyst"
    service = "service"
    platform = "platform"


#: Roles that may read members' personal data (name, phone, email); each read is audited.
PII_ROLES: frozenset[Role] = frozenset({Role.admin, Role.platform, Role.service})


class Principal(BaseModel):
    """Who is calling: the key's id, role and name (and staff account, if any)."""

    key_id: str
    role: Role
    name: str
    staff_id: str | None = None

    @property
    def can_read_pii(self) -> bool:
        return self.role in PII_ROLES


#: The actor of work started from the command line or a batch job, not through a key.
SYSTEM = Principal(key_id="system", role=Role.admin, name="system")


class StaffCreate(BaseModel):
    """A person on the platform's staff (service desk, account managers, operators)."""

    staff_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    role: Role


class StaffOut(StaffCreate):
    active: bool
    created_at: datetime


class KeyCreate(BaseModel):
    role: Role
    name: str = Field(default="", max_length=200, description="Who or what the key is for.")
    staff_id: str | None = Field(default=None, max_length=64)


class KeyCreated(BaseModel):
    """A new key: ``key`` is shown this once and cannot be recovered."""

    key: str
    key_id: str
    role: Role
    name: str


class KeyOut(BaseModel):
    key_id: str
    role: Role
    name: str
    staff_id: str | None
    created_at: datetime
    revoked_at: datetime | None


class AuditEntry(BaseModel):
    audit_id: str
    ts: datetime
    actor: str
    actor_role: str
    action: str
    subject_type: str
    subject_id: str
    member_id: str | None
    reason: str | None
    details: dict[str, Any] | None
