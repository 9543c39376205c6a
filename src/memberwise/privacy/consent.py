"""The consent ledger: each member's answer per purpose, append-only, the current state derived.

A member's state for a purpose is their newest record, or the program's default when they never
answered. Higher domains ask here before using data (recommendations, marketing, builds,
partner perks); the program's :class:`~memberwise.privacy.schemas.PrivacySettings` is passed in,
because the program sits above privacy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from memberwise.kit.errors import Conflict, Forbidden, InvalidRequest
from memberwise.kit.ids import new_id
from memberwise.kit.time import utcnow
from memberwise.privacy import repository
from memberwise.privacy.schemas import (
    ConsentIn,
    ConsentRecord,
    ConsentState,
    ConsentStatus,
    Principal,
    PrivacySettings,
    PurposeState,
)
from memberwise.privacy.service import audit


class UnknownPurpose(InvalidRequest):
    code = "unknown_purpose"


class ConsentRequestReused(Conflict):
    code = "consent_request_reused"


class ConsentRequired(Forbidden):
    code = "consent_required"


def _check_purpose(settings: PrivacySettings, purpose: str) -> None:
    if purpose not in settings.purposes:
        names = ", ".join(sorted(settings.purposes))
        raise UnknownPurpose(f"unknown purpose {purpose!r}; the program's purposes: {names}")


def record(
    conn: Connection,
    settings: PrivacySettings,
    member_id: str,
    data: ConsentIn,
    *,
    actor: Principal,
    at: datetime | None = None,
) -> tuple[ConsentRecord, bool]:
    """Append the member's answer; returns it and whether it is new.

    Idempotent by the platform's ``request_id``: a replay returns the first record. Raises
    UnknownPurpose, or ConsentRequestReused when the request id carried another answer.
    """
    _check_purpose(settings, data.purpose)
    record_id = new_id()
    values: dict[str, Any] = {
        "record_id": record_id,
        "member_id": member_id,
        "purpose": data.purpose,
        "status": data.status.value,
        "notice_version": data.notice_version or settings.notice_version,
        "channel": data.channel,
        "request_id": data.request_id,
        "recorded_at": at or utcnow(),
        "actor": actor.key_id,
    }
    if repository.insert_consent(conn, values):
        audit(
            conn,
            actor,
            "consent.record",
            "consent",
            record_id,
            member_id=member_id,
            details={"purpose": data.purpose, "status": data.status.value},
        )
        return ConsentRecord.model_validate(values), True
    first = repository.get_consent_by_request(conn, member_id, data.request_id, data.purpose)
    assert first is not None
    if first["status"] != data.status.value:
        raise ConsentRequestReused(
            f"request {data.request_id!r} already recorded {first['status']!r} for "
            f"{data.purpose!r}; send a new request id"
        )
    return ConsentRecord.model_validate(dict(first)), False


def history(conn: Connection, member_id: str) -> list[ConsentRecord]:
    """Every record of the member, oldest first (the evidence)."""
    return [
        ConsentRecord.model_validate(dict(r)) for r in repository.consent_history(conn, member_id)
    ]


def state(conn: Connection, settings: PrivacySettings, member_id: str) -> ConsentState:
    """The member's current state for every purpose of the program."""
    latest = repository.latest_consents(conn, member_id)
    purposes = []
    for name, purpose in settings.purposes.items():
        row = latest.get(name)
        status = ConsentStatus(row["status"]) if row is not None else None
        purposes.append(
            PurposeState(
                purpose=name,
                allowed=status is ConsentStatus.granted
                if status is not None
                else purpose.default == "granted",
                status=status,
                default=purpose.default,
                notice_version=row["notice_version"] if row is not None else None,
                recorded_at=row["recorded_at"] if row is not None else None,
            )
        )
    return ConsentState(member_id=member_id, purposes=purposes)


def allows(conn: Connection, settings: PrivacySettings, member_id: str, purpose: str) -> bool:
    """Whether the member's data may be used for ``purpose`` now."""
    _check_purpose(settings, purpose)
    row = repository.latest_consents(conn, member_id).get(purpose)
    if row is None:
        return settings.default_granted(purpose)
    return bool(row["status"] == ConsentStatus.granted.value)


def require(conn: Connection, settings: PrivacySettings, member_id: str, purpose: str) -> None:
    """Raises ConsentRequired unless the member allows ``purpose``."""
    if not allows(conn, settings, member_id, purpose):
        raise ConsentRequired(
            f"the member has not consented to {purpose!r}",
            details={"purpose": purpose},
        )


@dataclass(frozen=True)
class Audience:
    """Who may be used for a purpose, as a batch job needs it: everyone but ``except_ids``
    (a purpose granted by default) or only ``except_ids`` (denied by default)."""

    purpose: str
    default_allowed: bool
    except_ids: frozenset[str]

    def allows(self, member_id: str) -> bool:
        return (member_id in self.except_ids) != self.default_allowed

    def keep(self, member_ids: Iterable[str]) -> list[str]:
        return [m for m in member_ids if self.allows(m)]


def audience(conn: Connection, settings: PrivacySettings, purpose: str) -> Audience:
    """The members whose data may be used for ``purpose``, for a batch (one query)."""
    _check_purpose(settings, purpose)
    default = settings.default_granted(purpose)
    # Granted by default: the exceptions are the refusals; denied by default: the grants.
    exceptions = repository.members_by_latest_status(conn, purpose, granted=not default)
    return Audience(purpose=purpose, default_allowed=default, except_ids=frozenset(exceptions))


_STRICTNESS = {
    ConsentStatus.granted.value: 0,
    ConsentStatus.revoked.value: 1,
    ConsentStatus.denied.value: 2,
}


def stricter(a: str | None, b: str | None) -> str | None:
    """The stricter of two answers (a refusal beats a grant; no answer loses to any)."""
    if a is None or b is None:
        return a or b
    return a if _STRICTNESS[a] >= _STRICTNESS[b] else b
