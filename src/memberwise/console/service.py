"""Staff sign-in for the console: argon2 passwords, one-time links, server-side sessions, CSRF.

A session is a random 256-bit token in an HttpOnly, SameSite=Strict cookie; the store keeps only
its SHA-256 digest, with the staff id and when it was last used (idle timeout). The CSRF token of
a session is an HMAC of the session token, so it needs no storage and changes with the session.
Failed sign-ins cost the same whether or not the account exists (a dummy argon2 verification),
and a :class:`FailureLimiter` refuses more than a few failures per account and address.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import deque
from datetime import timedelta
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection

from memberwise.config import Settings
from memberwise.console import repository
from memberwise.console.schemas import ConsoleUser
from memberwise.kit.errors import InvalidRequest, MemberwiseError, NotFound, Unauthenticated
from memberwise.kit.time import as_utc, utcnow
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, Principal, StaffOut
from memberwise.program.service import parse_program


class SignInFailed(Unauthenticated):
    code = "sign_in_failed"


class SessionEnded(Unauthenticated):
    code = "session_ended"


class CsrfFailed(MemberwiseError):
    status_code = 403
    code = "csrf_failed"


class TooManyAttempts(MemberwiseError):
    status_code = 429
    code = "too_many_attempts"


class WeakPassword(InvalidRequest):
    code = "weak_password"


class StaffUnknown(NotFound):
    code = "staff_not_found"


MIN_PASSWORD_LENGTH = 12
_hasher = PasswordHasher()
# Verified against when the account has no password, so a miss costs what a hit costs.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def digest(token: str) -> str:
    """The stored form of a link or session token."""
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session (an HMAC of its token: nothing stored, nothing guessable)."""
    return hmac.new(session_token.encode(), b"memberwise-console-csrf", "sha256").hexdigest()


def check_csrf(expected: str, presented: str | None) -> None:
    """Raises CsrfFailed unless ``presented`` is ``expected`` (compared in constant time)."""
    if not presented or not hmac.compare_digest(expected.encode(), presented.encode()):
        raise CsrfFailed("the form is stale or was not sent by the console; reload and retry")


def _active_staff(conn: Connection, staff_id: str) -> StaffOut:
    staff = privacy.get_staff(conn, staff_id)
    if staff is None:
        raise StaffUnknown(f"no staff account {staff_id!r}")
    return staff


def set_password(
    conn: Connection, staff_id: str, password: str, *, actor: Principal = SYSTEM
) -> None:
    """Set a staff member's console password (argon2id). Raises StaffUnknown, WeakPassword."""
    _active_staff(conn, staff_id)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"a console password has at least {MIN_PASSWORD_LENGTH} characters")
    repository.put_password_hash(conn, staff_id, _hasher.hash(password), utcnow())
    privacy.audit(conn, actor, "console.password_set", "staff", staff_id)


def create_link(
    conn: Connection, staff_id: str, *, minutes: float, actor: Principal = SYSTEM
) -> str:
    """A one-time sign-in token for ``staff_id``, valid ``minutes``; only its digest is kept.

    Raises StaffUnknown for an unknown or inactive account.
    """
    staff = _active_staff(conn, staff_id)
    if not staff.active:
        raise StaffUnknown(f"staff account {staff_id!r} is not active")
    token = secrets.token_urlsafe(32)
    now = utcnow()
    repository.insert_link(conn, digest(token), staff_id, now, now + timedelta(minutes=minutes))
    privacy.audit(conn, actor, "console.link_create", "staff", staff_id)
    return token


def _refused() -> SignInFailed:
    return SignInFailed("that staff id and password do not match an active account")


def check_password(conn: Connection, staff_id: str, password: str) -> StaffOut:
    """The account ``staff_id`` if ``password`` is its console password. Raises SignInFailed
    (the same message whatever was wrong, after the same argon2 work)."""
    staff = privacy.get_staff(conn, staff_id)
    stored = repository.get_password_hash(conn, staff_id) if staff is not None else None
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        raise _refused() from None
    if staff is None or stored is None or not staff.active:
        raise _refused()
    return staff


def use_link(conn: Connection, token: str) -> StaffOut:
    """The account a one-time link signs in, marking it used. Raises SignInFailed when the link
    is unknown, used or expired."""
    staff_id = repository.use_link(conn, digest(token), utcnow())
    staff = privacy.get_staff(conn, staff_id) if staff_id is not None else None
    if staff is None or not staff.active:
        raise SignInFailed(
            "this sign-in link is unknown, already used or expired; ask for a new one"
        )
    return staff


def open_session(conn: Connection, staff: StaffOut, *, method: str) -> str:
    """A new session for ``staff``; returns the cookie value (shown to nobody else)."""
    token = secrets.token_urlsafe(32)
    repository.insert_session(conn, digest(token), staff.staff_id, method, utcnow())
    actor = ConsoleUser(
        staff_id=staff.staff_id, name=staff.name, role=staff.role, csrf_token=""
    ).principal
    privacy.audit(conn, actor, "console.sign_in", "staff", staff.staff_id, details={"by": method})
    return token


#: A session's last use is written at most this often (a page view is not a write each time).
_TOUCH_EVERY = timedelta(seconds=30)


def session_user(conn: Connection, token: str, *, idle_minutes: float) -> ConsoleUser:
    """The staff member a session cookie stands for, now. Raises SessionEnded when the session
    is unknown, signed out, idle too long, or its account is no longer active."""
    key = digest(token)
    row = repository.get_session(conn, key)
    now = utcnow()
    if row is None or row["ended_at"] is not None:
        raise SessionEnded("please sign in")
    if now - as_utc(row["last_seen_at"]) > timedelta(minutes=idle_minutes):
        repository.end_session(conn, key, now)
        raise SessionEnded("your session was idle too long; please sign in again")
    staff = privacy.get_staff(conn, row["staff_id"])
    if staff is None or not staff.active:
        repository.end_session(conn, key, now)
        raise SessionEnded("this account is no longer active")
    if now - as_utc(row["last_seen_at"]) > _TOUCH_EVERY:
        repository.touch_session(conn, key, now)
    return ConsoleUser(
        staff_id=staff.staff_id, name=staff.name, role=staff.role, csrf_token=csrf_token(token)
    )


def end_session(conn: Connection, token: str) -> None:
    """Sign out: the cookie no longer opens anything (a second sign-out is a no-op)."""
    repository.end_session(conn, digest(token), utcnow())


class FailureLimiter:
    """At most ``limit`` failed sign-ins per key (account, address) in ``window`` seconds.

    Kept in the process: a console is served by one process per machine; several processes
    each allow ``limit``, still far from a brute-force rate against argon2.
    """

    def __init__(self, *, limit: int = 5, window: float = 300.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def check(self, *keys: str) -> None:
        """Raises TooManyAttempts when any key failed ``limit`` times within the window."""
        now = time.monotonic()
        with self._lock:
            if any(len(self._recent(k, now)) >= self.limit for k in keys):
                raise TooManyAttempts(
                    "too many failed sign-ins; wait a few minutes before trying again"
                )

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for k in keys:
                self._recent(k, now).append(now)
            if len(self._failures) > 100_000:  # forget the oldest keys, memory stays bounded
                for k in list(self._failures)[:50_000]:
                    del self._failures[k]


def apply_program(
    conn: Connection, settings: Settings, text: str, *, actor: Principal
) -> tuple[Path, str]:
    """Make ``text`` the home's program: checked first (raises ProgramError with the line),
    written as a new file under ``HOME/programs/`` (temporary file, fsync, rename) and kept in
    the home's settings, so this server (at its next request) and every later command use it.
    Returns the file and the program's name; audited as ``program.apply`` with the text's hash.
    """
    program = parse_program(text, source="the edited program")
    folder = settings.home / "programs"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
    path = folder / f"{utcnow():%Y%m%dT%H%M%S}-{digest[:8]}.yaml"
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    previous = settings.program_file
    settings.remember(program_file=path)
    privacy.audit(
        conn,
        actor,
        "program.apply",
        "program",
        program.name,
        details={"file": str(path), "sha256": digest, "previous": str(previous or "")},
    )
    return path, program.name
