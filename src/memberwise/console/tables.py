"""The console's own tables: staff passwords, one-time sign-in links and server-side sessions.

Every secret is stored as a hash only: an argon2id hash for passwords, a SHA-256 digest for the
random link and session tokens (they carry 256 bits of randomness, so a fast hash suffices).
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, String, Table

from memberwise.kit.db import metadata
from memberwise.kit.time import UTCDateTime

console_passwords = Table(
    "console_passwords",
    metadata,
    Column("staff_id", String(64), ForeignKey("staff.staff_id"), primary_key=True),
    Column("password_hash", String(200), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

console_links = Table(
    "console_links",
    metadata,
    # sha256 of the token printed by `memberwise console link`; the token is never stored.
    Column("token_hash", String(64), primary_key=True),
    Column("staff_id", String(64), ForeignKey("staff.staff_id"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    # Set when the link is used: a link signs in once.
    Column("used_at", UTCDateTime, nullable=True),
    Index("ix_console_links_staff", "staff_id"),
)

console_sessions = Table(
    "console_sessions",
    metadata,
    # sha256 of the session cookie's value.
    Column("session_hash", String(64), primary_key=True),
    Column("staff_id", String(64), ForeignKey("staff.staff_id"), nullable=False),
    # "password" or "link": how the session was opened (for the audit trail).
    Column("method", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    # Set at sign-out (or when an idle session is found): the cookie no longer opens anything.
    Column("ended_at", UTCDateTime, nullable=True),
    Index("ix_console_sessions_staff", "staff_id"),
)
