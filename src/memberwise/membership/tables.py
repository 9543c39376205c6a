"""Memberships: each member's tier and score, the tier history, paid subscriptions with their
invoices, payments and history, black-card invitations and account managers.

All times are UTC; money is integer fen. JSON columns hold what is shown as a whole (score parts,
a notice, an invitation's explanation) and is never queried inside.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from memberwise.kit.db import metadata
from memberwise.kit.time import UTCDateTime

member_tiers = Table(
    "member_tiers",
    metadata,
    Column("member_id", String(128), primary_key=True),
    Column("tier", String(64), nullable=False),
    # auto: recalculated at each build; manual / invitation: never touched by recalculation.
    Column("source", String(16), nullable=False),
    Column("since", UTCDateTime, nullable=False),
    # End of the qualification period; null for the floor tier (never expires).
    Column("until", UTCDateTime, nullable=True),
    Column("score", Integer, nullable=False),
    # JSON text (compared and copied as text, never queried inside):
    # {"parts": {name: [field value, points]}, "metrics": {"net_spend_365d": fen, ...},
    #  "fees": {plan: fen}, "notice": {"downgrade_on_us", "to"} | null}
    Column("details", Text, nullable=False),
    Column("build_id", String(64), nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_member_tiers_tier_member", "tier", "member_id"),
    # Covers the build's read of every member's state, so it never reads the wide details.
    Index("ix_member_tiers_state", "member_id", "tier", "source", "since", "until"),
)

tier_history = Table(
    "tier_history",
    metadata,
    Column("change_id", String(32), primary_key=True),
    Column("member_id", String(128), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("from_tier", String(64), nullable=True),
    Column("to_tier", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("build_id", String(64), nullable=True),
    Column("actor", String(64), nullable=False),
    Index("ix_tier_history_member_at", "member_id", "at"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("subscription_id", String(32), primary_key=True),
    Column("member_id", String(128), nullable=False),
    Column("plan", String(64), nullable=False),
    # pending, active, past_due, cancelled, expired
    Column("status", String(16), nullable=False),
    Column("fee", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("auto_renew", Boolean, nullable=False),
    Column("trial_until", UTCDateTime, nullable=True),
    Column("period_start", UTCDateTime, nullable=True),
    Column("period_end", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("cancelled_at", UTCDateTime, nullable=True),
    Column("refunded", BigInteger, nullable=False, default=0),
    Column("idempotency_key", String(200), nullable=True),
    Column("version", Integer, nullable=False),
    Index("ix_subscriptions_member", "member_id", "created_at"),
    UniqueConstraint("member_id", "idempotency_key", name="uq_subscriptions_member_key"),
)

subscription_invoices = Table(
    "subscription_invoices",
    metadata,
    Column("invoice_id", String(32), primary_key=True),
    Column("subscription_id", String(32), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
    # open, paid, void
    Column("status", String(16), nullable=False),
    Column("period_start", UTCDateTime, nullable=False),
    Column("period_end", UTCDateTime, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("paid_at", UTCDateTime, nullable=True),
    Column("payment_id", String(128), nullable=True),
    UniqueConstraint("subscription_id", "seq", name="uq_invoices_subscription_seq"),
)

subscription_payments = Table(
    "subscription_payments",
    metadata,
    # The platform payment system's id: the idempotency key of the callback.
    Column("payment_id", String(128), primary_key=True),
    Column("subscription_id", String(32), nullable=False),
    Column("invoice_id", String(32), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    # The first answer (status and body), returned again on a replay.
    Column("response_status", Integer, nullable=False),
    Column("response", JSON, nullable=False),
)

subscription_events = Table(
    "subscription_events",
    metadata,
    Column("event_id", String(32), primary_key=True),
    Column("subscription_id", String(32), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("event", String(32), nullable=False),
    Column("from_status", String(16), nullable=True),
    Column("to_status", String(16), nullable=False),
    Column("details", JSON, nullable=True),
    Index("ix_subscription_events_sub_at", "subscription_id", "at"),
)

invitations = Table(
    "invitations",
    metadata,
    Column("invitation_id", String(32), primary_key=True),
    Column("member_id", String(128), nullable=False),
    Column("tier", String(64), nullable=False),
    # pending, accepted, declined, expired
    Column("status", String(16), nullable=False),
    Column("rank", Integer, nullable=False),
    Column("score", Float, nullable=False),
    # {"criteria": rule, "values": {...}, "contributions": [...]}: why the member was invited.
    Column("explanation", JSON, nullable=False),
    Column("build_id", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("decided_at", UTCDateTime, nullable=True),
    Index("ix_invitations_member", "member_id", "created_at"),
    Index("ix_invitations_status_created", "status", "created_at"),
)

account_managers = Table(
    "account_managers",
    metadata,
    Column("staff_id", String(64), primary_key=True),
    Column("capacity", Integer, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("left_at", UTCDateTime, nullable=True),
)

member_managers = Table(
    "member_managers",
    metadata,
    Column("member_id", String(128), primary_key=True),
    Column("staff_id", String(64), nullable=False),
    Column("assigned_at", UTCDateTime, nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_member_managers_staff_member", "staff_id", "member_id"),
)

tier_notices = Table(
    "tier_notices",
    metadata,
    # One notice per member, tier at risk and downgrade date: a rebuild that finds the same
    # pending downgrade gives no second notice; a new period at risk gives a new one.
    Column("member_id", String(128), primary_key=True),
    Column("tier", String(64), primary_key=True),
    Column("downgrade_on", UTCDateTime, primary_key=True),
    Column("to_tier", String(64), nullable=False),
    Column("build_id", String(64), nullable=False),
    Column("noticed_at", UTCDateTime, nullable=False),
    # The ``member.downgrade_notice`` outbox message that told the platform.
    Column("message_id", String(40), nullable=False),
    Index("ix_tier_notices_downgrade_on", "downgrade_on"),
)
