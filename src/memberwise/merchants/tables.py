"""Merchant quality in the operational store: the latest build's scorecards and each
merchant's items (for keeping members away from bad shops), the append-only penalty ledger,
appeals against its entries, and the actions (penalties and support) taken on merchants."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from memberwise.kit.db import metadata
from memberwise.kit.time import UTCDateTime

merchant_scorecards = Table(
    "merchant_scorecards",
    metadata,
    Column("merchant_id", String(128), primary_key=True),
    Column("industry", String(128), nullable=False),
    Column("ratings", BigInteger, nullable=False),
    Column("dsr_described", Float, nullable=True),
    Column("dsr_service", Float, nullable=True),
    Column("dsr_logistics", Float, nullable=True),
    Column("dsr_score", Float, nullable=False),
    Column("dsr_percentile", Float, nullable=False),
    Column("orders", BigInteger, nullable=False),
    Column("refunds", BigInteger, nullable=False),
    Column("disputes", BigInteger, nullable=False),
    Column("complaints", BigInteger, nullable=False),
    Column("refund_rate", Float, nullable=False),
    Column("dispute_rate", Float, nullable=False),
    Column("complaint_rate", Float, nullable=False),
    Column("handling_hours", Float, nullable=True),
    Column("quality", Float, nullable=False),
    Column("quality_percentile", Float, nullable=False),
    Column("as_of", UTCDateTime, nullable=False),
    Column("build_id", String(64), nullable=False),
    Index("ix_merchant_scorecards_quality", "quality_percentile"),
)

merchant_items = Table(
    "merchant_items",
    metadata,
    Column("merchant_id", String(128), primary_key=True),
    Column("item_id", String(128), primary_key=True),
)

# Append-only: a row is never updated or deleted. A withdrawn entry (an upheld appeal, the
# yearly reset) is a new row with negative points that names the entry it reverses.
merchant_penalties = Table(
    "merchant_penalties",
    metadata,
    Column("entry_id", String(36), primary_key=True),
    Column("merchant_id", String(128), nullable=False),
    Column("violation", String(64), nullable=False),
    Column("points", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("reverses", String(36), ForeignKey("merchant_penalties.entry_id"), nullable=True),
    # The caller's idempotency key: a replay finds the first entry and adds nothing.
    Column("idempotency_key", String(200), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("merchant_id", "idempotency_key", name="uq_merchant_penalties_key"),
    Index("ix_merchant_penalties_merchant", "merchant_id", "created_at"),
)

merchant_appeals = Table(
    "merchant_appeals",
    metadata,
    Column("appeal_id", String(36), primary_key=True),
    Column("entry_id", String(36), ForeignKey("merchant_penalties.entry_id"), nullable=False),
    Column("merchant_id", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    # open -> upheld (the entry is reversed) | rejected
    Column("status", String(16), nullable=False),
    Column("decision", Text, nullable=True),
    Column("decided_by", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("decided_at", UTCDateTime, nullable=True),
    UniqueConstraint("entry_id", name="uq_merchant_appeals_entry"),
)

merchant_actions = Table(
    "merchant_actions",
    metadata,
    Column("action_id", String(36), primary_key=True),
    Column("merchant_id", String(128), nullable=False),
    # marketing_ban, shop_block, closure (penalties) or badge (support)
    Column("kind", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    # Penalty points when a threshold triggered it (None for support actions).
    Column("points", Integer, nullable=True),
    Column("starts_at", UTCDateTime, nullable=False),
    # None: until lifted.
    Column("ends_at", UTCDateTime, nullable=True),
    Column("lifted_at", UTCDateTime, nullable=True),
    # Stable per trigger, so re-evaluating never takes the same action twice.
    Column("trigger_key", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("merchant_id", "trigger_key", name="uq_merchant_actions_trigger"),
    Index("ix_merchant_actions_merchant", "merchant_id", "starts_at"),
)
