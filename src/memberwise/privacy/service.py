"""API keys (argon2-hashed, shown once), key verification with a short cache, and the audit log.

Keys look like ``mw_<key_id>_<secret>``: the id finds the row, the secret is checked against an
argon2id hash. Argon2 is deliberately slow (tens of ms), so a verified key is trusted for
``api_key_cache_seconds``; revoking through this service drops it from the cache at once.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Engine

from memberwise.kit.db import transaction
from memberwise.kit.errors import Conflict, Forbidden, NotFound, Unauthenticated
from memberwise.kit.ids import new_id
from memberwise.kit.pagination import Page, decode_cursor, encode_cursor
from memberwise.kit.time import utcnow
from memberwise.privacy import repository
from memberwise.privacy.schemas import (
    SYSTEM,
    AuditEntry,
    KeyCreate,
    KeyCreated,
    KeyOut,
    Principal,
    Role,
    StaffCreate,
    StaffOut,
)


class InvalidKey(Unauthenticated):
    code = "invalid_api_key"


class MissingKey(Unauthenticated):
    code = "missing_api_key"


class RoleNotAllowed(Forbidden):
    code = "role_not_allowed"


class KeyNotFound(NotFound):
    code = "api_key_not_found"


class LastAdminKey(Conflict):
    code = "last_admin_key"


class StaffNotFound(NotFound):
    code = "staff_not_found"


class StaffExists(Conflict):
    code = "staff_exists"


_hasher = PasswordHasher()
KEY_PREFIX = "mw"


def _split(key: str) -> tuple[str, str] | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def create_staff(conn: Connection, data: StaffCreate, *, actor: Principal = SYSTEM) -> StaffOut:
    """Add a staff account; repeating the same one is a no-op.

    Raises StaffExists when the id is taken by a different account.
    """
    row = repository.get_staff(conn, data.staff_id)
    if row is not None:
        existing = StaffOut.model_validate(dict(row))
        if (existing.name, existing.role) == (data.name, data.role):
            return existing
        raise StaffExists(f"staff id {data.staff_id!r} belongs to another account")
    values = {**data.model_dump(), "role": data.role.value, "active": True, "created_at": utcnow()}
    repository.insert_staff(conn, **values)
    audit(conn, actor, "staff.create", "staff", data.staff_id, details={"role": data.role.value})
    return StaffOut.model_validate(values)


def get_staff(conn: Connection, staff_id: str) -> StaffOut | None:
    """The staff account ``staff_id``, or None (the console signs staff in by it)."""
    row = repository.get_staff(conn, staff_id)
    return StaffOut.model_validate(dict(row)) if row is not None else None


def list_staff(conn: Connection) -> list[StaffOut]:
    return [StaffOut.model_validate(dict(row)) for row in repository.list_staff(conn)]


def create_key(conn: Connection, data: KeyCreate, *, actor: Principal = SYSTEM) -> KeyCreated:
    """Create a key and return it once. Raises StaffNotFound for an unknown ``staff_id``."""
    if data.staff_id is not None and repository.get_staff(conn, data.staff_id) is None:
        raise StaffNotFound(f"no staff account {data.staff_id!r}")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    name = data.name or f"{data.role.value} key"
    repository.insert_key(
        conn,
        key_id=key_id,
        name=name,
        role=data.role.value,
        staff_id=data.staff_id,
        secret_hash=_hasher.hash(secret),
        created_at=utcnow(),
    )
    audit(conn, actor, "api_key.create", "api_key", key_id, details={"role": data.role.value})
    return KeyCreated(
        key=f"{KEY_PREFIX}_{key_id}_{secret}", key_id=key_id, role=data.role, name=name
    )


def list_keys(conn: Connection) -> list[KeyOut]:
    return [KeyOut.model_validate(dict(row)) for row in repository.list_keys(conn)]


def revoke_key(
    conn: Connection, key_id: str, *, actor: Principal = SYSTEM, verifier: KeyVerifier | None = None
) -> None:
    """Revoke a key for good. Raises KeyNotFound when there is no active key with that id,
    LastAdminKey when it is the last active admin key (revoking it would lock everyone out of
    key management; create another admin key first)."""
    row = repository.get_key(conn, key_id)
    active_admin = row is not None and row["role"] == Role.admin.value and not row["revoked_at"]
    # The active admin keys are locked (PostgreSQL) so two revocations at once cannot each see
    # the other's key still active and both go through.
    if active_admin and repository.lock_active_keys(conn, Role.admin.value) == [key_id]:
        raise LastAdminKey("this is the last active admin key; create another one first")
    if not repository.revoke_key(conn, key_id, utcnow()):
        raise KeyNotFound(f"no active API key {key_id!r}")
    audit(conn, actor, "api_key.revoke", "api_key", key_id)
    if verifier is not None:
        verifier.forget(key_id)


def has_active_key(conn: Connection, role: Role) -> bool:
    return repository.count_active_keys(conn, role.value) > 0


class KeyVerifier:
    """Checks presented keys against the store, trusting a verified key for ``ttl`` seconds.

    Two things keep a busy key from stalling a server when its ``ttl`` runs out (measured: a
    1.8 s stall at 500 requests/s, every ``ttl``, when each waiting request ran argon2):

    - a key seen before is checked again with one keyed read (still there, not revoked, the
      same stored hash it was verified against), not with argon2 again;
    - concurrent checks of one key are made once (single flight): the others wait for it.
    """

    def __init__(self, engine: Engine, *, ttl: float, max_entries: int = 10_000) -> None:
        self._engine = engine
        self._ttl = ttl
        self._max = max_entries
        # sha256(key) -> (trusted until, principal, the stored hash it was verified against)
        self._cache: OrderedDict[str, tuple[float, Principal, str]] = OrderedDict()
        self._lock = threading.Lock()
        self._flights: dict[str, threading.Lock] = {}

    def cached(self, key: str) -> Principal | None:
        """The principal of a key verified within ``ttl``, without touching the store (so it
        may run on the event loop); None when :meth:`verify` must decide."""
        return self._trusted(hashlib.sha256(key.encode()).hexdigest())

    def _trusted(self, digest: str) -> Principal | None:
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None and hit[0] > time.monotonic():
                self._cache.move_to_end(digest)
                return hit[1]
        return None

    def verify(self, key: str | None) -> Principal:
        """The principal a key stands for. Raises MissingKey / InvalidKey."""
        if not key:
            raise MissingKey("send an API key as `Authorization: Bearer <key>`")
        digest = hashlib.sha256(key.encode()).hexdigest()
        hit = self._trusted(digest)
        if hit is not None:
            return hit
        with self._lock:
            flight = self._flights.setdefault(digest, threading.Lock())
        try:
            with flight:
                return self._trusted(digest) or self._check(key, digest)
        finally:
            with self._lock:
                if self._flights.get(digest) is flight and not flight.locked():
                    del self._flights[digest]

    def _check(self, key: str, digest: str) -> Principal:
        parts = _split(key)
        if parts is None:
            raise InvalidKey("the API key is malformed")
        key_id, secret = parts
        now = time.monotonic()
        with transaction(self._engine) as conn:
            row = repository.get_key(conn, key_id)
        if row is None or row["revoked_at"] is not None:
            raise InvalidKey("the API key is unknown or revoked")
        with self._lock:
            seen = self._cache.get(digest)
        if seen is None or seen[2] != row["secret_hash"]:
            try:
                _hasher.verify(row["secret_hash"], secret)
            except (VerificationError, InvalidHashError) as exc:
                raise InvalidKey("the API key is unknown or revoked") from exc
        principal = Principal(
            key_id=key_id, role=Role(row["role"]), name=row["name"], staff_id=row["staff_id"]
        )
        with self._lock:
            self._cache[digest] = (now + self._ttl, principal, row["secret_hash"])
            self._cache.move_to_end(digest)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return principal

    def forget(self, key_id: str) -> None:
        """Drop a key from the cache (after revocation)."""
        with self._lock:
            for digest in [d for d, (_, p, _h) in self._cache.items() if p.key_id == key_id]:
                del self._cache[digest]


def authorize(principal: Principal, allowed: frozenset[Role]) -> None:
    """Raises RoleNotAllowed unless the principal's role is allowed (admin always is)."""
    if principal.role is not Role.admin and principal.role not in allowed:
        names = ", ".join(sorted(r.value for r in allowed | {Role.admin}))
        raise RoleNotAllowed(
            f"role {principal.role.value!r} may not do this (needs one of {names})"
        )


def audit_row(
    actor: Principal,
    action: str,
    subject_type: str,
    subject_id: str,
    *,
    member_id: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One audit row, for callers that write many at once with :func:`audit_many`."""
    return {
        "audit_id": new_id(),
        "ts": utcnow(),
        "actor": actor.key_id,
        "actor_role": actor.role.value,
        "action": action,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "member_id": member_id,
        "reason": reason,
        "details": details,
    }


def audit(
    conn: Connection,
    actor: Principal,
    action: str,
    subject_type: str,
    subject_id: str,
    *,
    member_id: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Record who did what to what, and why, in the same transaction as the change."""
    repository.insert_audit(
        conn,
        [
            audit_row(
                actor,
                action,
                subject_type,
                subject_id,
                member_id=member_id,
                reason=reason,
                details=details,
            )
        ],
    )


def audit_many(conn: Connection, rows: list[dict[str, Any]]) -> None:
    repository.insert_audit(conn, rows)


def audit_members(
    conn: Connection, actor: Principal, action: str, member_ids: Sequence[str]
) -> None:
    """The same ``action`` audited for each of many members (subject = member), written in
    one set-based statement: a bulk ingest registers 100,000s of members at once."""
    if not member_ids:
        return
    # new_id()'s shape (16 hex of nanoseconds, 16 random hex), drawn for all rows at once and
    # sorted: with ids in order (a bulk ingest sends them sorted) both the audit id and the
    # member index then take the rows in order, about a tenth less work for PostgreSQL.
    prefix = f"{time.time_ns():016x}"
    draws = np.frombuffer(os.urandom(8 * len(member_ids)), dtype=">u8")
    noise = np.sort(draws).astype(">u8").tobytes().hex()
    keyed = [prefix + noise[16 * i : 16 * i + 16] + m for i, m in enumerate(member_ids)]
    shared = audit_row(actor, action, "member", "")
    repository.insert_member_audits(conn, keyed, shared)


def list_audit(
    conn: Connection,
    *,
    limit: int,
    after: str | None = None,
    member_id: str | None = None,
    action: str | None = None,
) -> Page[AuditEntry]:
    """Audit entries, newest first, one page at a time."""
    rows = repository.list_audit(
        conn, limit=limit + 1, before=decode_cursor(after), member_id=member_id, action=action
    )
    items = [AuditEntry.model_validate(dict(r)) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].audit_id) if len(rows) > limit else None
    return Page[AuditEntry](items=items, next_cursor=next_cursor)
