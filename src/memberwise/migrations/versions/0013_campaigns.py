"""campaigns and their members (the exposure log), journeys and their enrollments

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 21:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import memberwise.kit.time

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time() -> memberwise.kit.time.UTCDateTime:
    return memberwise.kit.time.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("mde_fen", sa.String(length=32), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("launched_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_campaigns")),
    )
    op.create_table(
        "campaign_members",
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("arm", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("send_at", _time(), nullable=True),
        sa.Column("sent_at", _time(), nullable=True),
        sa.Column("message_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("campaign_id", "member_id", name=op.f("pk_campaign_members")),
    )
    op.create_index("ix_campaign_members_status_send_at", "campaign_members", ["status", "send_at"])
    op.create_index("ix_campaign_members_member_sent", "campaign_members", ["member_id", "sent_at"])
    op.create_table(
        "journeys",
        sa.Column("journey_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("journey_id", name=op.f("pk_journeys")),
    )
    op.create_table(
        "journey_enrollments",
        sa.Column("journey_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("trigger_key", sa.String(length=128), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("next_at", _time(), nullable=True),
        sa.Column("entered_at", _time(), nullable=False),
        sa.Column("exit_reason", sa.Text(), nullable=True),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint(
            "journey_id", "member_id", "trigger_key", name=op.f("pk_journey_enrollments")
        ),
    )
    op.create_index(
        "ix_journey_enrollments_status_next", "journey_enrollments", ["status", "next_at"]
    )


def downgrade() -> None:
    op.drop_table("journey_enrollments")
    op.drop_table("journeys")
    op.drop_table("campaign_members")
    op.drop_table("campaigns")
