"""tiers, member scores, subscriptions, invitations, account managers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 01:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import memberwise.kit.time

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_managers",
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("left_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("staff_id", name=op.f("pk_account_managers")),
    )
    op.create_table(
        "invitations",
        sa.Column("invitation_id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("explanation", sa.JSON(), nullable=False),
        sa.Column("build_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("invitation_id", name=op.f("pk_invitations")),
    )
    op.create_index(
        "ix_invitations_member", "invitations", ["member_id", "created_at"], unique=False
    )
    op.create_index(
        "ix_invitations_status_created", "invitations", ["status", "created_at"], unique=False
    )
    op.create_table(
        "member_managers",
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("assigned_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_managers")),
    )
    op.create_index(
        "ix_member_managers_staff_member",
        "member_managers",
        ["staff_id", "member_id"],
        unique=False,
    )
    op.create_table(
        "member_tiers",
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("since", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("until", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("build_id", sa.String(length=64), nullable=True),
        sa.Column("updated_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_tiers")),
    )
    op.create_index(
        "ix_member_tiers_tier_member", "member_tiers", ["tier", "member_id"], unique=False
    )
    op.create_index(
        "ix_member_tiers_state",
        "member_tiers",
        ["member_id", "tier", "source", "since", "until"],
        unique=False,
    )
    op.create_table(
        "subscription_events",
        sa.Column("event_id", sa.String(length=32), nullable=False),
        sa.Column("subscription_id", sa.String(length=32), nullable=False),
        sa.Column("at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_subscription_events")),
    )
    op.create_index(
        "ix_subscription_events_sub_at",
        "subscription_events",
        ["subscription_id", "at"],
        unique=False,
    )
    op.create_table(
        "subscription_invoices",
        sa.Column("invoice_id", sa.String(length=32), nullable=False),
        sa.Column("subscription_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("period_start", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("period_end", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("due_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("paid_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.Column("payment_id", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("invoice_id", name=op.f("pk_subscription_invoices")),
        sa.UniqueConstraint("subscription_id", "seq", name="uq_invoices_subscription_seq"),
    )
    op.create_table(
        "subscription_payments",
        sa.Column("payment_id", sa.String(length=128), nullable=False),
        sa.Column("subscription_id", sa.String(length=32), nullable=False),
        sa.Column("invoice_id", sa.String(length=32), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("payment_id", name=op.f("pk_subscription_payments")),
    )
    op.create_table(
        "subscriptions",
        sa.Column("subscription_id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("plan", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("auto_renew", sa.Boolean(), nullable=False),
        sa.Column("trial_until", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.Column("period_start", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.Column("period_end", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.Column("refunded", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", name=op.f("pk_subscriptions")),
        sa.UniqueConstraint("member_id", "idempotency_key", name="uq_subscriptions_member_key"),
    )
    op.create_index(
        "ix_subscriptions_member", "subscriptions", ["member_id", "created_at"], unique=False
    )
    op.create_table(
        "tier_history",
        sa.Column("change_id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("from_tier", sa.String(length=64), nullable=True),
        sa.Column("to_tier", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("build_id", sa.String(length=64), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("change_id", name=op.f("pk_tier_history")),
    )
    op.create_index("ix_tier_history_member_at", "tier_history", ["member_id", "at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_tier_history_member_at", table_name="tier_history")
    op.drop_table("tier_history")
    op.drop_index("ix_subscriptions_member", table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_table("subscription_payments")
    op.drop_table("subscription_invoices")
    op.drop_index("ix_subscription_events_sub_at", table_name="subscription_events")
    op.drop_table("subscription_events")
    op.drop_index("ix_member_tiers_state", table_name="member_tiers")
    op.drop_index("ix_member_tiers_tier_member", table_name="member_tiers")
    op.drop_table("member_tiers")
    op.drop_index("ix_member_managers_staff_member", table_name="member_managers")
    op.drop_table("member_managers")
    op.drop_index("ix_invitations_status_created", table_name="invitations")
    op.drop_index("ix_invitations_member", table_name="invitations")
    op.drop_table("invitations")
    op.drop_table("account_managers")
