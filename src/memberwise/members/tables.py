"""Members: the platform's customers, with their PII sealed (see privacy.crypto)."""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, LargeBinary, String, Table

from memberwise.kit.db import metadata
from memberwise.kit.time import UTCDateTime

members = Table(
    "members",
    metadata,
    Column("member_id", String(128), primary_key=True),
    Column("status", String(16), nullable=False),
    # "registered": the platform told us about the member; "events": first seen in behaviour.
    Column("source", String(16), nullable=False),
    Column("name_enc", LargeBinary, nullable=True),
    Column("phone_enc", LargeBinary, nullable=True),
    Column("email_enc", LargeBinary, nullable=True),
    Column("gender", String(16), nullable=True),
    Column("birth_year", Integer, nullable=True),
    Column("region", String(128), nullable=True),
    Column("city", String(128), nullable=True),
    # The platform's credit rating of the member (0-7 stars), when it registers one.
    Column("credit_stars", Integer, nullable=True),
    Column("registered_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    # Keyed hashes (privacy.crypto.FieldCipher.lookup) of the normalised phone and email, so
    # staff can find a member by them (the console's search) while the values stay sealed.
    Column("phone_hash", String(64), nullable=True),
    Column("email_hash", String(64), nullable=True),
    Index("ix_members_phone_hash", "phone_hash"),
    Index("ix_members_email_hash", "email_hash"),
    # Clustered on the key on SQLite (no separate rowid tree): half the work per insert.
    sqlite_with_rowid=False,
)
