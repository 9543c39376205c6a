"""Endpoints, their signing secrets, one delivery per (endpoint, message) and every attempt."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from memberwise.kit.db import metadata
from memberwise.kit.time import UTCDateTime

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("endpoint_id", String(40), primary_key=True),
    Column("url", Text, nullable=False),
    Column("description", Text, nullable=True),
    # JSON list of event types; an empty list subscribes to every type.
    Column("event_types", Text, nullable=False),
    Column("status", String(16), nullable=False),  # active | disabled
    Column("disabled_reason", Text, nullable=True),
    Column("consecutive_failures", Integer, nullable=False),
    Column("failing_since", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

webhook_secrets = Table(
    "webhook_secrets",
    metadata,
    Column("secret_id", String(40), primary_key=True),
    Column(
        "endpoint_id",
        String(40),
        ForeignKey("webhook_endpoints.endpoint_id", ondelete="CASCADE"),
        nullable=False,
    ),
    # ``whsec_...`` sealed with the store's field cipher (bound to this row and column).
    Column("secret", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Null while current; a rotated-out secret keeps signing until then, so a receiver can
    # roll its configuration without dropping a delivery.
    Column("expires_at", UTCDateTime, nullable=True),
    Index("ix_webhook_secrets_endpoint_id", "endpoint_id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("delivery_id", String(40), primary_key=True),
    Column(
        "endpoint_id",
        String(40),
        ForeignKey("webhook_endpoints.endpoint_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("message_id", String(40), nullable=False),
    Column("seq", BigInteger, nullable=False),  # the outbox row's, for per-member order
    Column("event_type", String(64), nullable=False),
    Column("member_key", String(128), nullable=False),  # member id, or "" for none
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    # A sender claims a delivery by writing its own token and a deadline; a sender that dies
    # mid-delivery leaves a lease that runs out, and the delivery is sent again (same id).
    Column("lease_token", String(40), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    UniqueConstraint("endpoint_id", "message_id", name="uq_webhook_deliveries_endpoint_message"),
    Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_member_order", "endpoint_id", "member_key", "seq"),
    Index("ix_webhook_deliveries_created_at", "created_at"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("attempt_id", String(40), primary_key=True),
    Column(
        "delivery_id",
        String(40),
        ForeignKey("webhook_deliveries.delivery_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempted_at", UTCDateTime, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Column("response", Text, nullable=True),  # the first KiB of the body, for the log
    Index("ix_webhook_attempts_delivery_id", "delivery_id"),
)
