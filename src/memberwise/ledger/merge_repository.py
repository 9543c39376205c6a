"""The queries of an identity merge (:mod:`memberwise.ledger.merge`): moving a member's
ledger rows to another member, and folding their counters and coupons together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, exists, insert, select, update

from memberwise.ledger.tables import coupon_member_counts, coupons


def move_rows(conn: Connection, table: Any, source: str, target: str) -> int:
    """Re-key every row of ``source`` in ``table`` (keyed by its own id) to ``target``."""
    stmt = update(table).where(table.c.member_id == source).values(member_id=target)
    return int(conn.execute(stmt).rowcount)


def coupon_collisions(conn: Connection, source: str, target: str) -> list[str]:
    """Source coupons whose (issue_key, template) the target holds too (one issuance reached
    both ids): they cannot move under the same key."""
    other = coupons.alias("other")
    query = select(coupons.c.coupon_id).where(
        coupons.c.member_id == source,
        exists().where(
            other.c.member_id == target,
            other.c.issue_key == coupons.c.issue_key,
            other.c.template == coupons.c.template,
        ),
    )
    return list(conn.execute(query).scalars())


def rename_issue_key(conn: Connection, coupon_ids: Sequence[str], suffix: str) -> None:
    if coupon_ids:
        conn.execute(
            update(coupons)
            .where(coupons.c.coupon_id.in_(coupon_ids))
            .values(issue_key=coupons.c.issue_key + suffix)
        )


def member_coupon_counts(conn: Connection, member_id: str) -> dict[str, int]:
    c = coupon_member_counts.c
    return dict(conn.execute(select(c.template, c.issued).where(c.member_id == member_id)).all())


def set_member_coupon_count(conn: Connection, template: str, member_id: str, n: int) -> None:
    c = coupon_member_counts.c
    conn.execute(
        coupon_member_counts.delete().where(c.template == template, c.member_id == member_id)
    )
    if n:
        conn.execute(
            insert(coupon_member_counts).values(template=template, member_id=member_id, issued=n)
        )


def issued_coupons(conn: Connection, member_id: str, template: str) -> list[str]:
    """The member's unused coupons of ``template``, latest expiry first (the ones to void)."""
    c = coupons.c
    query = (
        select(c.coupon_id)
        .where(c.member_id == member_id, c.template == template, c.status == "issued")
        .order_by(c.valid_until.desc(), c.coupon_id)
    )
    return list(conn.execute(query).scalars())


def void_coupons(conn: Connection, coupon_ids: Sequence[str]) -> None:
    if coupon_ids:
        conn.execute(
            update(coupons)
            .where(coupons.c.coupon_id.in_(coupon_ids), coupons.c.status == "issued")
            .values(status="void")
        )


def counter_rows(conn: Connection, table: Any, member_id: str) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in conn.execute(select(table).where(table.c.member_id == member_id)).mappings()
    ]


def delete_member_rows(conn: Connection, table: Any, member_id: str) -> int:
    return int(conn.execute(table.delete().where(table.c.member_id == member_id)).rowcount)


def add_to_counter(
    conn: Connection,
    table: Any,
    key: dict[str, Any],
    column: str,
    amount: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Add ``amount`` to ``column`` of the row at ``key`` (inserting it, with ``extra``, when
    missing)."""
    where = [table.c[k] == v for k, v in key.items()]
    found = conn.execute(select(table.c[column]).where(*where)).first()
    if found is None:
        conn.execute(insert(table).values(**key, **(extra or {}), **{column: amount}))
    else:
        conn.execute(
            update(table).where(*where).values({column: table.c[column] + amount, **(extra or {})})
        )
