"""service desk: tickets, messages, events, SLA clocks, agents, budgets, compensations,
after-sales requests

Revision ID: 0009
Revises: 0006 (on this branch; the integrator re-links it to 0008)
Create Date: 2026-12-06 20:15:48
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import memberwise.kit.time

revision: str = "0009"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "service_after_sales",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("ticket_id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=24), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("no_reason", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("express", sa.Boolean(), nullable=False),
        sa.Column("refund_id", sa.String(length=128), nullable=True),
        sa.Column("return_card", sa.Boolean(), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=True),
        sa.Column("step_due_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_service_after_sales")),
    )
    with op.batch_alter_table("service_after_sales", schema=None) as batch_op:
        batch_op.create_index("ix_service_after_sales_order", ["order_id"], unique=False)
        batch_op.create_index("ix_service_after_sales_step_due", ["step_due_at"], unique=False)

    op.create_table(
        "service_agents",
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("team", sa.String(length=64), nullable=False),
        sa.Column("skills", sa.JSON(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("load", sa.Integer(), nullable=False),
        sa.Column("authority", sa.String(length=32), nullable=False),
        sa.Column("supervisor_id", sa.String(length=64), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("staff_id", name=op.f("pk_service_agents")),
    )
    op.create_table(
        "service_budgets",
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("staff_id", "day", name="pk_service_budgets"),
    )
    op.create_table(
        "service_clocks",
        sa.Column("ticket_id", sa.String(length=32), nullable=False),
        sa.Column("metric", sa.String(length=24), nullable=False),
        sa.Column("target_seconds", sa.BigInteger(), nullable=False),
        sa.Column("hours", sa.String(length=16), nullable=False),
        sa.Column("elapsed_seconds", sa.BigInteger(), nullable=False),
        sa.Column("running", sa.Boolean(), nullable=False),
        sa.Column("since", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.Column("stopped", sa.Boolean(), nullable=False),
        sa.Column("warned", sa.Integer(), nullable=False),
        sa.Column("breached", sa.Boolean(), nullable=False),
        sa.Column("alert_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.Column("stopped_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.Column("met", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint("ticket_id", "metric", name="pk_service_clocks"),
    )
    with op.batch_alter_table("service_clocks", schema=None) as batch_op:
        batch_op.create_index("ix_service_clocks_alert_at", ["alert_at"], unique=False)

    op.create_table(
        "service_compensations",
        sa.Column("compensation_id", sa.String(length=32), nullable=False),
        sa.Column("ticket_id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("coupon_template", sa.String(length=64), nullable=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("merchant_id", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("required_role", sa.String(length=32), nullable=True),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("reference", sa.String(length=128), nullable=True),
        sa.Column("request_key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("compensation_id", name=op.f("pk_service_compensations")),
        sa.UniqueConstraint("ticket_id", "request_key", name="uq_service_compensations_key"),
    )
    with op.batch_alter_table("service_compensations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_service_compensations_status", ["status", "created_at"], unique=False
        )

    op.create_table(
        "service_events",
        sa.Column("event_id", sa.String(length=32), nullable=False),
        sa.Column("ticket_id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("metric", sa.String(length=24), nullable=True),
        sa.Column("late_seconds", sa.BigInteger(), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column("at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_service_events")),
    )
    with op.batch_alter_table("service_events", schema=None) as batch_op:
        batch_op.create_index("ix_service_events_kind_at", ["kind", "at"], unique=False)
        batch_op.create_index("ix_service_events_ticket", ["ticket_id", "at"], unique=False)

    op.create_table(
        "service_messages",
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("ticket_id", sa.String(length=32), nullable=False),
        sa.Column("author_kind", sa.String(length=16), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("internal", sa.Boolean(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_service_messages")),
    )
    with op.batch_alter_table("service_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_service_messages_ticket", ["ticket_id", "created_at"], unique=False
        )

    op.create_table(
        "service_tickets",
        sa.Column("ticket_id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=True),
        sa.Column("tier_rank", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("pending_reason", sa.Text(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=True),
        sa.Column("item_ids", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("skill", sa.String(length=32), nullable=True),
        sa.Column("assignee", sa.String(length=64), nullable=True),
        sa.Column("escalated_to", sa.String(length=64), nullable=True),
        sa.Column("policy", sa.String(length=64), nullable=True),
        sa.Column("due_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("merged_into", sa.String(length=32), nullable=True),
        sa.Column("agent_replies", sa.Integer(), nullable=False),
        sa.Column("reopened", sa.Integer(), nullable=False),
        sa.Column("csat", sa.Integer(), nullable=True),
        sa.Column("csat_comment", sa.Text(), nullable=True),
        sa.Column("open_key", sa.String(length=200), nullable=True),
        sa.Column("opened_by", sa.String(length=64), nullable=False),
        sa.Column("opened_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "first_response_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("resolved_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.Column("closed_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name=op.f("pk_service_tickets")),
        sa.UniqueConstraint("member_id", "open_key", name="uq_service_tickets_member_key"),
    )
    with op.batch_alter_table("service_tickets", schema=None) as batch_op:
        batch_op.create_index(
            "ix_service_tickets_assignee_state", ["assignee", "state"], unique=False
        )
        batch_op.create_index(
            "ix_service_tickets_member_opened", ["member_id", "opened_at"], unique=False
        )
        batch_op.create_index(
            "ix_service_tickets_queue",
            ["assignee", sa.text("tier_rank DESC"), "due_at", "ticket_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("service_tickets", schema=None) as batch_op:
        batch_op.drop_index("ix_service_tickets_queue")
        batch_op.drop_index("ix_service_tickets_member_opened")
        batch_op.drop_index("ix_service_tickets_assignee_state")

    op.drop_table("service_tickets")
    with op.batch_alter_table("service_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_service_messages_ticket")

    op.drop_table("service_messages")
    with op.batch_alter_table("service_events", schema=None) as batch_op:
        batch_op.drop_index("ix_service_events_ticket")
        batch_op.drop_index("ix_service_events_kind_at")

    op.drop_table("service_events")
    with op.batch_alter_table("service_compensations", schema=None) as batch_op:
        batch_op.drop_index("ix_service_compensations_status")

    op.drop_table("service_compensations")
    with op.batch_alter_table("service_clocks", schema=None) as batch_op:
        batch_op.drop_index("ix_service_clocks_alert_at")

    op.drop_table("service_clocks")
    op.drop_table("service_budgets")
    op.drop_table("service_agents")
    with op.batch_alter_table("service_after_sales", schema=None) as batch_op:
        batch_op.drop_index("ix_service_after_sales_step_due")
        batch_op.drop_index("ix_service_after_sales_order")

    op.drop_table("service_after_sales")
