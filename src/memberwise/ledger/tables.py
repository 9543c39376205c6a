"""The ledgers' tables: points (balances, entries, lots, allocations), coupons, orders, refunds
and stored answers to idempotent requests.

Entries and allocations are append-only; a lot's ``remaining`` and ``status`` and a balance are
caches of them, changed only in the same transaction as the entry that explains the change (the
invariants are checked by ``tests/ledger/test_stateful.py``). Every row is keyed by or carries
``member_id`` so the store can be sharded by member.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from memberwise.kit.db import metadata
from memberwise.kit.time import UTCDateTime

#: One row a member: the cached balance (available and pending points, and points owed).
points_balances = Table(
    "points_balances",
    metadata,
    Column("member_id", String(128), primary_key=True),
    Column("available", BigInteger, nullable=False),
    Column("pending", BigInteger, nullable=False),
    Column("debt", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("available >= 0", name="available_not_negative"),
    CheckConstraint("pending >= 0", name="pending_not_negative"),
    CheckConstraint("debt >= 0", name="debt_not_negative"),
)

#: Every change of a balance, with the key that makes it happen at most once.
points_entries = Table(
    "points_entries",
    metadata,
    Column("entry_id", String(32), primary_key=True),
    Column("member_id", String(128), nullable=False),
    # earn_order, earn_review, earn_check_in, adjust, spend_order, spend_redeem, mature,
    # expire, reverse_refund, restore_refund, debt, repay_debt
    Column("kind", String(24), nullable=False),
    Column("available_delta", BigInteger, nullable=False),
    Column("pending_delta", BigInteger, nullable=False),
    Column("debt_delta", BigInteger, nullable=False),
    # Unique: a replay of the same award, spend or adjustment finds it and changes nothing.
    Column("idem_key", String(200), nullable=False, unique=True),
    Column("order_id", String(128), nullable=True),
    Column("reason", Text, nullable=True),
    Column("actor", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_points_entries_member_created", "member_id", "created_at", "entry_id"),
)

#: Each credit is a lot: it is spent, expired or cancelled through allocations.
points_lots = Table(
    "points_lots",
    metadata,
    Column("lot_id", String(32), primary_key=True),
    Column("member_id", String(128), nullable=False),
    Column("entry_id", String(32), nullable=False),
    Column("order_id", String(128), nullable=True),
    Column("points", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    # pending, available, expired, cancelled (spent-out lots stay available with remaining 0)
    Column("status", String(16), nullable=False),
    Column("earned_at", UTCDateTime, nullable=False),
    Column("available_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    CheckConstraint("remaining >= 0 AND remaining <= points", name="remaining_in_range"),
    # Spending walks a member's lots nearest expiry first.
    Index("ix_points_lots_member_status_expires", "member_id", "status", "expires_at"),
    Index("ix_points_lots_status_available", "status", "available_at"),
    Index("ix_points_lots_status_expires", "status", "expires_at"),
    Index("ix_points_lots_order", "order_id"),
)

#: Which lots a debit took its points from (spend, expiry, cancellation).
points_allocations = Table(
    "points_allocations",
    metadata,
    Column("entry_id", String(32), primary_key=True),
    Column("lot_id", String(32), primary_key=True),
    Column("member_id", String(128), nullable=False),
    Column("points", BigInteger, nullable=False),
    CheckConstraint("points > 0", name="points_positive"),
    Index("ix_points_allocations_lot", "lot_id"),
)

#: Points earned per member and period (``d:2026-11-24``, ``m:2026-11``), for earn caps.
points_earn_periods = Table(
    "points_earn_periods",
    metadata,
    Column("member_id", String(128), primary_key=True),
    Column("period", String(16), primary_key=True),
    Column("earned", BigInteger, nullable=False),
)

#: Per template: coupons issued and money taken off so far (the budgets' counters).
coupon_budgets = Table(
    "coupon_budgets",
    metadata,
    Column("template", String(64), primary_key=True),
    Column("issued", BigInteger, nullable=False),
    Column("redeemed", BigInteger, nullable=False),
    Column("redeemed_money", BigInteger, nullable=False),
    CheckConstraint("issued >= 0 AND redeemed >= 0 AND redeemed_money >= 0", name="counts"),
)

#: Per template and member: coupons issued to the member (the per-member limit's counter).
coupon_member_counts = Table(
    "coupon_member_counts",
    metadata,
    Column("template", String(64), primary_key=True),
    Column("member_id", String(128), primary_key=True),
    Column("issued", Integer, nullable=False),
)

coupons = Table(
    "coupons",
    metadata,
    Column("coupon_id", String(32), primary_key=True),
    Column("template", String(64), nullable=False),
    Column("member_id", String(128), nullable=False),
    # issued, redeemed, expired, void
    Column("status", String(16), nullable=False),
    # Who asked for it (benefit, operator, recommender, points) and under which key: a
    # replayed issuance finds the coupon and issues nothing.
    Column("source", String(32), nullable=False),
    Column("issue_key", String(200), nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("valid_from", UTCDateTime, nullable=False),
    Column("valid_until", UTCDateTime, nullable=False),
    Column("order_id", String(128), nullable=True),
    Column("discount", BigInteger, nullable=True),
    Column("redeemed_at", UTCDateTime, nullable=True),
    UniqueConstraint("issue_key", "member_id", "template", name="uq_coupons_issue"),
    Index("ix_coupons_member_status", "member_id", "status", "valid_until"),
    Index("ix_coupons_status_valid_until", "status", "valid_until"),
    Index("ix_coupons_order", "order_id"),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(128), primary_key=True),
    Column("member_id", String(128), nullable=False),
    # placed, completed, partially_refunded, refunded
    Column("status", String(24), nullable=False),
    Column("merchant_id", String(128), nullable=True),
    Column("goods_amount", BigInteger, nullable=False),
    Column("shipping_fee", BigInteger, nullable=False),
    Column("coupon_discount", BigInteger, nullable=False),
    Column("shipping_discount", BigInteger, nullable=False),
    Column("points_used", BigInteger, nullable=False),
    Column("points_value", BigInteger, nullable=False),
    # What the member paid in money: goods + shipping - discounts - points value.
    Column("paid", BigInteger, nullable=False),
    Column("points_earned", BigInteger, nullable=False),
    Column("refunded", BigInteger, nullable=False),
    Column("points_reversed", BigInteger, nullable=False),
    Column("points_restored", BigInteger, nullable=False),
    Column("tier", String(64), nullable=True),
    Column("items", JSON, nullable=False),
    Column("coupon_ids", JSON, nullable=False),
    # When the order's points become available unless the order is completed earlier.
    Column("points_available_at", UTCDateTime, nullable=False),
    # sha256 of the placing request: a replay with the same body gets the stored order, a
    # different body under the same id is refused (order_exists).
    Column("request_hash", String(64), nullable=False),
    Column("placed_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_orders_member_placed", "member_id", "placed_at"),
)

order_refunds = Table(
    "order_refunds",
    metadata,
    Column("refund_id", String(128), primary_key=True),
    Column("order_id", String(128), nullable=False),
    Column("member_id", String(128), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("points_reversed", BigInteger, nullable=False),
    Column("points_restored", BigInteger, nullable=False),
    Column("points_shortfall", BigInteger, nullable=False),
    Column("refund_deduction", BigInteger, nullable=False),
    Column("coupons_restored", JSON, nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_order_refunds_order", "order_id"),
)

#: First answers of requests made with an ``Idempotency-Key`` header, per route and caller.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(200), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)


# -- benefits: entitlement counters (owned by ledger/benefits.py) ---------------------------------

benefit_counters = Table(
    "benefit_counters",
    metadata,
    Column("member_id", String(128), primary_key=True),
    # What is counted: "express_refund" and "return_cards" (one counter a member, whichever
    # benefit grants them), "monthly_coupons:<benefit>" or "partner_perk:<benefit>".
    Column("counter", String(160), primary_key=True),
    # The counter's period: "" (express refund credit has none), a day "2026-11-24", a month
    # "2026-11" or a year "2026", in the program's display time zone.
    Column("period", String(16), primary_key=True),
    # Express refund: fen outstanding (paid, return not arrived); the others: uses in the period.
    # Changed only by a guarded ``used = used + :n`` so concurrent uses never pass the limit.
    Column("used", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("used >= 0", name="used_not_negative"),
)

benefit_uses = Table(
    "benefit_uses",
    metadata,
    # The idempotency key, e.g. "express_refund:<refund id>", "return_card:<use id>",
    # "monthly_coupons:<benefit>:<member>:<month>": a replay finds this row and changes nothing.
    Column("use_id", String(320), primary_key=True),
    Column("member_id", String(128), nullable=False),
    Column("benefit", String(128), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("counter", String(160), nullable=False),
    Column("period", String(16), nullable=False),
    # Fen for an express refund, cards / coupons / claims otherwise.
    Column("amount", BigInteger, nullable=False),
    # The platform's order or refund id the use belongs to, if any.
    Column("reference", String(128), nullable=True),
    # "open" (express refund paid, return awaited), "restored" (return arrived), "used",
    # "issued" (monthly coupons), "claimed" (partner perk).
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("settled_at", UTCDateTime, nullable=True),
    Index("ix_benefit_uses_member_created", "member_id", "created_at"),
)
