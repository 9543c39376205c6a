"""Staff accounts, their API keys, and the audit log."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

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

# -- consent, member keys, data-subject requests, erasure, merges (issue 16) --------------------

consent_records = Table(
    "consent_records",
    metadata,
    # Time-ordered id: the newest record of a member and purpose is their current state.
    Column("record_id", String(32), primary_key=True),
    Column("member_id", String(128), nullable=False),
    Column("purpose", String(64), nullable=False),
    # "granted", "denied" or "revoked"; rows are only ever appended.
    Column("status", String(16), nullable=False),
    Column("notice_version", String(64), nullable=False),
    # Evidence: where the member said so (app, web, sms, ...) and the platform's request id.
    Column("channel", String(32), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("actor", String(64), nullable=False),
    UniqueConstraint("member_id", "request_id", "purpose", name="uq_consent_records_request"),
    Index("ix_consent_records_member_purpose", "member_id", "purpose", "record_id"),
    Index("ix_consent_records_purpose_member", "purpose", "member_id", "record_id"),
)

member_keys = Table(
    "member_keys",
    metadata,
    # Each member's own data key, sealed under the PII key; deleting the row is crypto-shredding:
    # every copy of the member's sealed PII (backups, WAL, exports) becomes unreadable at once.
    Column("member_id", String(128), primary_key=True),
    Column("key_enc", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

erasures = Table(
    "erasures",
    metadata,
    # A keyed hash of the erased member id (never the id): re-ingested events and new records
    # for it are refused, and the lake scrub can find the member's rows without knowing who.
    Column("member_hash", String(64), primary_key=True),
    Column("pseudonym", String(64), nullable=False),
    Column("erased_at", UTCDateTime, nullable=False),
    # Set when the lake, dead letters and builds were rewritten without the member.
    Column("files_scrubbed_at", UTCDateTime, nullable=True),
    Column("reason", String(64), nullable=False),
)

data_requests = Table(
    "data_requests",
    metadata,
    Column("request_id", String(32), primary_key=True),
    Column("member_id", String(128), nullable=False),
    # access, copy, correction, erasure
    Column("kind", String(16), nullable=False),
    # open, completed, rejected
    Column("status", String(16), nullable=False),
    Column("idempotency_key", String(128), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("deadline", String(32), nullable=False),
    Column("channel", String(32), nullable=False),
    # A correction's new values, sealed under the member's own key (shredded with it).
    Column("payload_enc", LargeBinary, nullable=True),
    Column("assignee", String(64), nullable=True),
    Column("completed_at", UTCDateTime, nullable=True),
    Column("outcome", Text, nullable=True),
    UniqueConstraint("member_id", "idempotency_key", name="uq_data_requests_key"),
    Index("ix_data_requests_status_due", "status", "due_at"),
    Index("ix_data_requests_member", "member_id", "received_at"),
)

member_merges = Table(
    "member_merges",
    metadata,
    # ``source`` (e.g. a guest id) now reads as ``target``: events are re-keyed at read.
    Column("source_id", String(128), primary_key=True),
    Column("target_id", String(128), nullable=False),
    Column("merged_at", UTCDateTime, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("details", JSON, nullable=True),
    Index("ix_member_merges_target", "target_id"),
)
