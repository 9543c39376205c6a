"""Staff accounts, their API keys, and the audit log."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, ForeignKey, Index, String, Table, Text

from memberwise.kit.db import metadata
from memberwise.kit.time import UTCDateTime

staff = Table(
    "staff",
    metadata,
    Column("staff_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", UTCDateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("staff_id", String(64), ForeignKey("staff.staff_id"), nullable=True),
    # argon2id hash of the secret part; the key itself is shown once and never stored.
    Column("secret_hash", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("audit_id", String(32), primary_key=True),
    Column("ts", UTCDateTime, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("actor_role", String(16), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject_type", String(32), nullable=False),
    Column("subject_id", String(128), nullable=False),
    Column("member_id", String(128), nullable=True),
    Column("reason", Text, nullable=True),
    Column("details", JSON, nullable=True),
    Index("ix_audit_log_member_ts", "member_id", "ts"),
    Index("ix_audit_log_ts", "ts"),
)
