"""points, coupons, benefits, orders

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 01:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import memberwise.kit.time

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # -- points, coupons, orders, idempotent answers (ledger/tables.py) --
    op.create_table(
        "points_balances",
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("pending", sa.BigInteger(), nullable=False),
        sa.Column("debt", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "available >= 0", name=op.f("ck_points_balances_available_not_negative")
        ),
        sa.CheckConstraint("debt >= 0", name=op.f("ck_points_balances_debt_not_negative")),
        sa.CheckConstraint("pending >= 0", name=op.f("ck_points_balances_pending_not_negative")),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_points_balances")),
    )
    op.create_table(
        "points_entries",
        sa.Column("entry_id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("available_delta", sa.BigInteger(), nullable=False),
        sa.Column("pending_delta", sa.BigInteger(), nullable=False),
        sa.Column("debt_delta", sa.BigInteger(), nullable=False),
        sa.Column("idem_key", sa.String(length=200), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("created_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_points_entries")),
        sa.UniqueConstraint("idem_key", name=op.f("uq_points_entries_idem_key")),
    )
    op.create_index(
        "ix_points_entries_member_created",
        "points_entries",
        ["member_id", "created_at", "entry_id"],
        unique=False,
    )
    op.create_table(
        "points_lots",
        sa.Column("lot_id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("entry_id", sa.String(length=32), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("earned_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("available_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "remaining >= 0 AND remaining <= points", name=op.f("ck_points_lots_remaining_in_range")
        ),
        sa.PrimaryKeyConstraint("lot_id", name=op.f("pk_points_lots")),
    )
    op.create_index(
        "ix_points_lots_member_status_expires",
        "points_lots",
        ["member_id", "status", "expires_at"],
        unique=False,
    )
    op.create_index("ix_points_lots_order", "points_lots", ["order_id"], unique=False)
    op.create_index(
        "ix_points_lots_status_available", "points_lots", ["status", "available_at"], unique=False
    )
    op.create_index(
        "ix_points_lots_status_expires", "points_lots", ["status", "expires_at"], unique=False
    )
    op.create_table(
        "points_allocations",
        sa.Column("entry_id", sa.String(length=32), nullable=False),
        sa.Column("lot_id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("points > 0", name=op.f("ck_points_allocations_points_positive")),
        sa.PrimaryKeyConstraint("entry_id", "lot_id", name=op.f("pk_points_allocations")),
    )
    op.create_index("ix_points_allocations_lot", "points_allocations", ["lot_id"], unique=False)
    op.create_table(
        "points_earn_periods",
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("earned", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("member_id", "period", name=op.f("pk_points_earn_periods")),
    )
    op.create_table(
        "coupon_budgets",
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("issued", sa.BigInteger(), nullable=False),
        sa.Column("redeemed", sa.BigInteger(), nullable=False),
        sa.Column("redeemed_money", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "issued >= 0 AND redeemed >= 0 AND redeemed_money >= 0",
            name=op.f("ck_coupon_budgets_counts"),
        ),
        sa.PrimaryKeyConstraint("template", name=op.f("pk_coupon_budgets")),
    )
    op.create_table(
        "coupon_member_counts",
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("issued", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("template", "member_id", name=op.f("pk_coupon_member_counts")),
    )
    op.create_table(
        "coupons",
        sa.Column("coupon_id", sa.String(length=32), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("issue_key", sa.String(length=200), nullable=False),
        sa.Column("issued_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_from", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_until", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=True),
        sa.Column("discount", sa.BigInteger(), nullable=True),
        sa.Column("redeemed_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("coupon_id", name=op.f("pk_coupons")),
        sa.UniqueConstraint("issue_key", "member_id", "template", name="uq_coupons_issue"),
    )
    op.create_index(
        "ix_coupons_member_status", "coupons", ["member_id", "status", "valid_until"], unique=False
    )
    op.create_index("ix_coupons_order", "coupons", ["order_id"], unique=False)
    op.create_index(
        "ix_coupons_status_valid_until", "coupons", ["status", "valid_until"], unique=False
    )
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("merchant_id", sa.String(length=128), nullable=True),
        sa.Column("goods_amount", sa.BigInteger(), nullable=False),
        sa.Column("shipping_fee", sa.BigInteger(), nullable=False),
        sa.Column("coupon_discount", sa.BigInteger(), nullable=False),
        sa.Column("shipping_discount", sa.BigInteger(), nullable=False),
        sa.Column("points_used", sa.BigInteger(), nullable=False),
        sa.Column("points_value", sa.BigInteger(), nullable=False),
        sa.Column("paid", sa.BigInteger(), nullable=False),
        sa.Column("points_earned", sa.BigInteger(), nullable=False),
        sa.Column("refunded", sa.BigInteger(), nullable=False),
        sa.Column("points_reversed", sa.BigInteger(), nullable=False),
        sa.Column("points_restored", sa.BigInteger(), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=True),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("coupon_ids", sa.JSON(), nullable=False),
        sa.Column(
            "points_available_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("placed_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_orders")),
    )
    op.create_index("ix_orders_member_placed", "orders", ["member_id", "placed_at"], unique=False)
    op.create_table(
        "order_refunds",
        sa.Column("refund_id", sa.String(length=128), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("points_reversed", sa.BigInteger(), nullable=False),
        sa.Column("points_restored", sa.BigInteger(), nullable=False),
        sa.Column("points_shortfall", sa.BigInteger(), nullable=False),
        sa.Column("refund_deduction", sa.BigInteger(), nullable=False),
        sa.Column("coupons_restored", sa.JSON(), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("refund_id", name=op.f("pk_order_refunds")),
    )
    op.create_index("ix_order_refunds_order", "order_refunds", ["order_id"], unique=False)
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("created_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_keys")),
    )

    # -- benefits: entitlement counters (ledger/benefits.py) --
    op.create_table(
        "benefit_counters",
        sa.Column("member_id", sa.String(128), nullable=False),
        sa.Column("counter", sa.String(160), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", memberwise.kit.time.UTCDateTime(), nullable=False),
        sa.CheckConstraint("used >= 0", name=op.f("ck_benefit_counters_used_not_negative")),
        sa.PrimaryKeyConstraint("member_id", "counter", "period", name=op.f("pk_benefit_counters")),
    )
    op.create_table(
        "benefit_uses",
        sa.Column("use_id", sa.String(320), nullable=False),
        sa.Column("member_id", sa.String(128), nullable=False),
        sa.Column("benefit", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("counter", sa.String(160), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", memberwise.kit.time.UTCDateTime(), nullable=False),
        sa.Column("settled_at", memberwise.kit.time.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("use_id", name=op.f("pk_benefit_uses")),
    )
    op.create_index("ix_benefit_uses_member_created", "benefit_uses", ["member_id", "created_at"])


def downgrade() -> None:
    # -- benefits (ledger/benefits.py) --
    op.drop_index("ix_benefit_uses_member_created", table_name="benefit_uses")
    op.drop_table("benefit_uses")
    op.drop_table("benefit_counters")
    # -- points, coupons, orders (ledger/tables.py); indexes go with their tables --
    op.drop_table("idempotency_keys")
    op.drop_table("order_refunds")
    op.drop_table("orders")
    op.drop_table("coupons")
    op.drop_table("coupon_member_counts")
    op.drop_table("coupon_budgets")
    op.drop_table("points_earn_periods")
    op.drop_table("points_allocations")
    op.drop_table("points_lots")
    op.drop_table("points_entries")
    op.drop_table("points_balances")
