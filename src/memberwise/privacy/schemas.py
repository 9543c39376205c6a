"""Roles, principals, API keys and audit entries as the API shows them."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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


# -- consent, data-subject requests, erasure, merges (issue 16) --------------------------------


class Purpose(StrEnum):
    """What a member's data may be used for; each needs its own consent.

    Marketing is consented per channel (``marketing_sms``, ``marketing_email``,
    ``marketing_push``); sensitive personal information needs its own separate consent (PIPL
    art. 29).
    """

    personalization = "personalization"
    marketing_sms = "marketing_sms"
    marketing_email = "marketing_email"
    marketing_push = "marketing_push"
    profiling = "profiling"
    partner_sharing = "partner_sharing"
    sensitive = "sensitive"


class ConsentStatus(StrEnum):
    """A member's answer for one purpose; only ``granted`` allows the use."""

    granted = "granted"
    denied = "denied"
    revoked = "revoked"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PurposeSettings(_Settings):
    """A purpose as the program declares it: its default (before the member answers) and what
    the member is told."""

    default: Literal["granted", "denied"] = "denied"
    description: str = ""


class DeadlinePreset(StrEnum):
    """How long staff have to answer a data-subject request."""

    pipl_15_working_days = "pipl_15_working_days"
    gdpr_one_month = "gdpr_one_month"
    days = "days"


class RequestDeadline(_Settings):
    """The deadline of data-subject requests: a preset, or ``days`` calendar days."""

    preset: DeadlinePreset = DeadlinePreset.pipl_15_working_days
    days: int = Field(default=30, ge=1, le=365)


class RetentionSettings(_Settings):
    """How long data is kept: events older than ``events_days`` are dropped (or aggregated
    into daily counts first), and members inactive for ``inactive_member_days`` are erased."""

    events_days: int | None = Field(default=None, ge=1)
    aggregate_dropped_events: bool = True
    inactive_member_days: int | None = Field(default=None, ge=1)


#: Purposes every program has, with defaults chosen for the law's defaults: personalization
#: and profiling may run until the member refuses (PIPL art. 24 offers the refusal), every
#: other use needs an explicit yes.
DEFAULT_PURPOSES: dict[str, PurposeSettings] = {
    Purpose.personalization.value: PurposeSettings(
        default="granted", description="personalised recommendations"
    ),
    Purpose.profiling.value: PurposeSettings(
        default="granted", description="profiling for tiers, segments and predictions"
    ),
    Purpose.marketing_sms.value: PurposeSettings(description="marketing messages by SMS"),
    Purpose.marketing_email.value: PurposeSettings(description="marketing messages by email"),
    Purpose.marketing_push.value: PurposeSettings(description="marketing push notifications"),
    Purpose.partner_sharing.value: PurposeSettings(description="sharing with partners"),
    Purpose.sensitive.value: PurposeSettings(description="sensitive personal information"),
}


class PrivacySettings(_Settings):
    """The program's ``privacy`` section: purposes and defaults, the notice version, request
    deadlines and retention. Purposes the file leaves out keep :data:`DEFAULT_PURPOSES`."""

    notice_version: str = Field(default="1", min_length=1, max_length=64)
    purposes: dict[str, PurposeSettings] = Field(default_factory=lambda: dict(DEFAULT_PURPOSES))
    request_deadline: RequestDeadline = Field(default_factory=RequestDeadline)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    @field_validator("purposes")
    @classmethod
    def _known(cls, value: dict[str, PurposeSettings]) -> dict[str, PurposeSettings]:
        for name in value:
            if not _PURPOSE_NAME.fullmatch(name):
                raise ValueError(
                    f"purpose {name!r} is not a lowercase identifier (letters, digits, '_')"
                )
        return {**DEFAULT_PURPOSES, **value}

    def default_granted(self, purpose: str) -> bool:
        """Whether a member who never answered allows ``purpose``."""
        return self.purposes[purpose].default == "granted"


_PURPOSE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class ConsentIn(BaseModel):
    """A member's answer for one purpose, with its evidence."""

    purpose: str = Field(min_length=1, max_length=64)
    status: ConsentStatus
    notice_version: str | None = Field(
        default=None, max_length=64, description="The notice the member saw; default: current."
    )
    channel: str = Field(min_length=1, max_length=32, description="app, web, sms, desk, ...")
    request_id: str = Field(
        min_length=1, max_length=128, description="The platform's id of the request (idempotency)."
    )


class ConsentRecord(BaseModel):
    """One row of the append-only consent ledger."""

    record_id: str
    member_id: str
    purpose: str
    status: ConsentStatus
    notice_version: str
    channel: str
    request_id: str
    recorded_at: datetime
    actor: str


class PurposeState(BaseModel):
    """The current state of one purpose, derived from the ledger (or the program's default)."""

    purpose: str
    allowed: bool
    status: ConsentStatus | None = Field(description="null: the member never answered.")
    default: Literal["granted", "denied"]
    notice_version: str | None
    recorded_at: datetime | None


class ConsentState(BaseModel):
    member_id: str
    purposes: list[PurposeState]


class RequestKind(StrEnum):
    """The rights a member exercises through a data-subject request."""

    access = "access"
    copy = "copy"
    correction = "correction"
    erasure = "erasure"


class RequestStatus(StrEnum):
    open = "open"
    completed = "completed"
    rejected = "rejected"


class DataRequestIn(BaseModel):
    """A member's request, sent by the platform on their behalf."""

    kind: RequestKind
    channel: str = Field(default="app", min_length=1, max_length=32)
    idempotency_key: str = Field(min_length=1, max_length=128)
    corrections: dict[str, str | None] | None = Field(
        default=None, description="correction only: field -> the right value (name, phone, ...)."
    )


class DataRequestOut(BaseModel):
    request_id: str
    member_id: str
    kind: RequestKind
    status: RequestStatus
    received_at: datetime
    due_at: datetime
    deadline: str
    channel: str
    assignee: str | None
    completed_at: datetime | None
    outcome: str | None
    overdue: bool


class RequestDecision(BaseModel):
    """Staff closing a request: complete it (the service does the work) or reject it."""

    action: Literal["complete", "reject"]
    reason: str = Field(default="", max_length=2000)


class ErasureResult(BaseModel):
    """What erasing one member did."""

    pseudonym: str
    rows_deleted: dict[str, int]
    rows_pseudonymised: dict[str, int]
    lake_files_rewritten: int
    lake_rows_removed: int
    other_files_rewritten: int


class MergeIn(BaseModel):
    """Two ids of one person: ``source`` (e.g. a guest id) is folded into ``target``."""

    source_id: str = Field(min_length=1, max_length=128)
    target_id: str = Field(min_length=1, max_length=128)


class MergeResult(BaseModel):
    source_id: str
    target_id: str
    merged: bool = Field(description="False when the ids were merged already (a replay).")
    moved: dict[str, int]
