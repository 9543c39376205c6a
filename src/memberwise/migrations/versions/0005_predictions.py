"""member predictions and model versions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 01:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import memberwise.kit.time

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "prediction_models",
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("as_of", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("fitted_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.Column("published_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("model_version", name=op.f("pk_prediction_models")),
    )
    op.create_table(
        "member_predictions",
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("as_of", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("clv_12m_fen", sa.BigInteger(), nullable=True),
        sa.Column("p_alive", sa.Float(), nullable=True),
        sa.Column("churn_risk", sa.Float(), nullable=True),
        sa.Column("expected_purchases_90d", sa.Float(), nullable=True),
        sa.Column("expected_spend_fen", sa.BigInteger(), nullable=True),
        sa.Column("repeat_purchases", sa.Integer(), nullable=False),
        sa.Column("purchase_days", sa.Integer(), nullable=False),
        sa.Column("purchase_interval_days", sa.Float(), nullable=True),
        sa.Column("next_purchase_date", sa.Date(), nullable=True),
        sa.Column("best_hour", sa.Integer(), nullable=False),
        sa.Column("best_weekday", sa.Integer(), nullable=False),
        sa.Column("published_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_predictions")),
    )
    with op.batch_alter_table("member_predictions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_member_predictions_model_version", ["model_version"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("member_predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_member_predictions_model_version")
    op.drop_table("member_predictions")
    op.drop_table("prediction_models")
