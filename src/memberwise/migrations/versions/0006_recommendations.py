"""recommendation lists, similar items, coupon suggestions

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 01:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import memberwise.kit.time

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time() -> memberwise.kit.time.UTCDateTime:
    return memberwise.kit.time.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("item_id", sa.String(length=128), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("category_id", sa.String(length=128), nullable=True),
        sa.Column("parent_category_id", sa.String(length=128), nullable=True),
        sa.Column("brand", sa.String(length=128), nullable=True),
        sa.Column("merchant_id", sa.String(length=128), nullable=True),
        sa.Column("price", sa.BigInteger(), nullable=True),
        sa.Column("launched_at", _time(), nullable=True),
        sa.Column("consumable", sa.Boolean(), nullable=False),
        sa.Column("rebuy_days", sa.Integer(), nullable=True),
        sa.Column("in_stock", sa.Boolean(), nullable=False),
        sa.Column("hidden", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("item_id", name=op.f("pk_items")),
    )
    op.create_index("ix_items_updated_at", "items", ["updated_at"], unique=False)
    op.create_table(
        "item_categories",
        sa.Column("category_id", sa.String(length=128), nullable=False),
        sa.Column("parent_id", sa.String(length=128), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("category_id", name=op.f("pk_item_categories")),
    )
    op.create_table(
        "rec_models",
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("as_of", _time(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("published_at", _time(), nullable=True),
        sa.Column("metrics", sa.Text(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("model_id", name=op.f("pk_rec_models")),
    )
    op.create_table(
        "member_recommendations",
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=128), nullable=True),
        sa.Column("top_category", sa.String(length=128), nullable=True),
        sa.Column("best_hour", sa.Integer(), nullable=True),
        sa.Column("entries", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_recommendations")),
    )
    op.create_table(
        "similar_items",
        sa.Column("item_id", sa.String(length=128), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("entries", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("item_id", name=op.f("pk_similar_items")),
    )
    op.create_table(
        "fallback_lists",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("entries", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_fallback_lists")),
    )
    op.create_table(
        "coupon_suggestions",
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("campaign", sa.String(length=128), nullable=False),
        sa.Column("build_id", sa.String(length=64), nullable=False),
        sa.Column("template", sa.String(length=128), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("uplift", sa.Float(), nullable=False),
        sa.Column("p_purchase", sa.Float(), nullable=False),
        sa.Column("best_hour", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("member_id", "campaign", name=op.f("pk_coupon_suggestions")),
    )


def downgrade() -> None:
    op.drop_index("ix_items_updated_at", table_name="items")
    for name in (
        "coupon_suggestions",
        "fallback_lists",
        "similar_items",
        "member_recommendations",
        "rec_models",
        "item_categories",
        "items",
    ):
        op.drop_table(name)
