"""Merging the ledgers of two ids of one person (a guest id into a registered id), exactly.

Points: the source's lots move to the target as they are (their expiry, pending state and
allocations kept), and one entry on each side moves the balance (``merge_out`` on the source,
``merge_in`` on the target), so every balance still equals the sum of its entries and of its
lots. Coupons, orders, refunds, benefit uses and subscriptions move to the target; counters
(coupon issues per template, benefit uses per period, points earned per period) are added up.
A coupon template's per-member limit still holds: the source's unused coupons past it are
voided. Run in the caller's transaction; privacy.merge records the merge and makes it
idempotent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from memberwise.kit.ids import new_id
from memberwise.ledger import merge_repository, repository
from memberwise.ledger.schemas import EntryKind
from memberwise.ledger.tables import (
    benefit_counters,
    benefit_uses,
    coupons,
    order_refunds,
    orders,
    points_earn_periods,
    points_lots,
)
from memberwise.privacy.schemas import Principal
from memberwise.program.schemas import Program


def merge_points(
    conn: Connection, source: str, target: str, *, at: datetime, actor: Principal
) -> int:
    """Move the source's points to the target; returns the lots moved."""
    # Lock both balances in member-id order (every writer locks one balance, so two merges in
    # opposite directions are the only way to wait in a circle; a fixed order prevents it).
    for member in sorted((source, target)):
        repository.lock_balance(conn, member, at)
    moved = repository.get_balance(conn, source)
    assert moved is not None
    available, pending, debt = int(moved["available"]), int(moved["pending"]), int(moved["debt"])
    lots = merge_repository.move_rows(conn, points_lots, source, target)
    if available or pending or debt:
        entries: list[dict[str, Any]] = []
        for member, sign, kind in (
            (source, -1, EntryKind.merge_out),
            (target, 1, EntryKind.merge_in),
        ):
            entries.append(
                {
                    "entry_id": new_id(),
                    "member_id": member,
                    "kind": kind.value,
                    "available_delta": sign * available,
                    "pending_delta": sign * pending,
                    "debt_delta": sign * debt,
                    "idem_key": f"merge:{source}:{target}:{kind.value}",
                    "order_id": None,
                    "reason": f"identity merge of {source} into {target}",
                    "actor": actor.key_id,
                    "created_at": at,
                }
            )
        repository.insert_entries(conn, entries)
        taken = repository.change_balance(
            conn, source, at, available=-available, pending=-pending, debt=-debt
        )
        assert taken  # the balance row is locked and was read above
        repository.change_balance(conn, target, at, available=available, pending=pending, debt=debt)
    for row in merge_repository.counter_rows(conn, points_earn_periods, source):
        merge_repository.add_to_counter(
            conn,
            points_earn_periods,
            {"member_id": target, "period": row["period"]},
            "earned",
            int(row["earned"]),
        )
    merge_repository.delete_member_rows(conn, points_earn_periods, source)
    return lots


def merge_coupons(conn: Connection, program: Program, source: str, target: str) -> int:
    """Move the source's coupons to the target; returns the coupons moved."""
    # One issuance that reached both ids (same key): the source's copy keeps a distinct key.
    merge_repository.rename_issue_key(
        conn, merge_repository.coupon_collisions(conn, source, target), f"#merged:{source}"
    )
    theirs = merge_repository.member_coupon_counts(conn, target)
    mine = merge_repository.member_coupon_counts(conn, source)
    for template, n in mine.items():
        total = theirs.get(template, 0) + n
        settings = program.coupons.get(template)
        limit = settings.per_member_limit if settings is not None else None
        if limit is not None and total > limit:
            unused = merge_repository.issued_coupons(conn, source, template)
            void = unused[: total - limit]
            merge_repository.void_coupons(conn, void)
            total -= len(void)
        merge_repository.set_member_coupon_count(conn, template, source, 0)
        merge_repository.set_member_coupon_count(conn, template, target, total)
    return merge_repository.move_rows(conn, coupons, source, target)


def merge_benefits(conn: Connection, source: str, target: str, *, at: datetime) -> int:
    """Add the source's benefit counters to the target's, move its uses; returns uses moved."""
    for row in merge_repository.counter_rows(conn, benefit_counters, source):
        merge_repository.add_to_counter(
            conn,
            benefit_counters,
            {"member_id": target, "counter": row["counter"], "period": row["period"]},
            "used",
            int(row["used"]),
            extra={"updated_at": at},
        )
    merge_repository.delete_member_rows(conn, benefit_counters, source)
    return merge_repository.move_rows(conn, benefit_uses, source, target)


def merge_member(
    conn: Connection,
    program: Program,
    source: str,
    target: str,
    *,
    at: datetime,
    actor: Principal,
) -> dict[str, int]:
    """Every ledger of ``source`` into ``target``; returns what moved, by kind."""
    return {
        "points_lots": merge_points(conn, source, target, at=at, actor=actor),
        "coupons": merge_coupons(conn, program, source, target),
        "orders": merge_repository.move_rows(conn, orders, source, target),
        "refunds": merge_repository.move_rows(conn, order_refunds, source, target),
        "benefit_uses": merge_benefits(conn, source, target, at=at),
    }
