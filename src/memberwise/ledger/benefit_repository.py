"""Every query of the benefit counters (uses per period) and benefit uses (express refunds,
return cards): guarded counts, so a benefit is never used past its allowance.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, func, select, update

from memberwise.kit import rawsql
from memberwise.kit.db import insert_ignore
from memberwise.ledger.tables import benefit_counters, benefit_uses, coupons


def counter_used(conn: Connection, member_id: str, counter: str, period: str) -> int:
    value = conn.execute(
        select(benefit_counters.c.used).where(
            benefit_counters.c.member_id == member_id,
            benefit_counters.c.counter == counter,
            benefit_counters.c.period == period,
        )
    ).scalar()
    return int(value or 0)


def counters_of(conn: Connection, member_id: str) -> dict[tuple[str, str], int]:
    """(counter, period) -> used, of every counter of the member (on the driver's cursor:
    every benefits read asks it)."""
    rows = rawsql.fetchall(
        conn,
        "SELECT counter, period, used FROM benefit_counters WHERE member_id = :member_id",
        {"member_id": member_id},
    )
    return {(counter, period): int(used) for counter, period, used in rows}


def take_counter(
    conn: Connection, member_id: str, counter: str, period: str, n: int, limit: int, at: datetime
) -> bool:
    """Add ``n`` to a counter if it stays within ``limit``; False (and nothing changed) if not.

    The check and the change are one statement, so two concurrent uses cannot both pass: on
    PostgreSQL the second waits for the first's row lock and re-checks the new value; SQLite
    has one writer at a time.
    """
    conn.execute(
        insert_ignore(conn, benefit_counters).values(
            member_id=member_id, counter=counter, period=period, used=0, updated_at=at
        )
    )
    result = conn.execute(
        update(benefit_counters)
        .where(
            benefit_counters.c.member_id == member_id,
            benefit_counters.c.counter == counter,
            benefit_counters.c.period == period,
            benefit_counters.c.used + n <= limit,
        )
        .values(used=benefit_counters.c.used + n, updated_at=at)
    )
    return result.rowcount == 1


def give_back_counter(
    conn: Connection, member_id: str, counter: str, period: str, n: int, at: datetime
) -> None:
    conn.execute(
        update(benefit_counters)
        .where(
            benefit_counters.c.member_id == member_id,
            benefit_counters.c.counter == counter,
            benefit_counters.c.period == period,
        )
        .values(used=benefit_counters.c.used - n, updated_at=at)
    )


def unused_monthly_coupons(
    conn: Connection, member_id: str, benefit: str, month: str, count: int
) -> int:
    """This month's coupons of a monthly-coupons benefit the member has not used yet (all
    ``count`` of them before they are issued)."""
    key = f"monthly_coupons:{benefit}:{member_id}:{month}"
    if get_use(conn, key) is None:
        return count
    c = coupons.c
    unused = conn.execute(
        select(func.count()).where(
            c.member_id == member_id,
            c.status == "issued",
            c.issue_key.startswith(f"benefit:{benefit}:{month}:", autoescape=True),
        )
    ).scalar_one()
    return int(unused)


def get_use(conn: Connection, use_id: str) -> RowMapping | None:
    return (
        conn.execute(select(benefit_uses).where(benefit_uses.c.use_id == use_id)).mappings().first()
    )


def insert_use(conn: Connection, **values: Any) -> bool:
    """Record a use under its key; False when the key exists (a replay or a concurrent twin,
    which PostgreSQL makes wait until the first commits)."""
    # RETURNING, not rowcount: PostgreSQL drivers may report -1 for INSERT ... ON CONFLICT.
    stmt = insert_ignore(conn, benefit_uses).values(**values).returning(benefit_uses.c.use_id)
    return conn.execute(stmt).first() is not None


def benefit_used_since(
    conn: Connection, member_id: str, benefits: list[str], since: datetime
) -> bool:
    stmt = (
        select(benefit_uses.c.use_id)
        .where(
            benefit_uses.c.member_id == member_id,
            benefit_uses.c.benefit.in_(benefits),
            benefit_uses.c.created_at >= since,
        )
        .limit(1)
    )
    return conn.execute(stmt).first() is not None


def settle_use(conn: Connection, use_id: str, member_id: str, status: str, at: datetime) -> bool:
    """Mark an open use of the member settled (an express refund's return arrived); False
    when there was none open (a replay)."""
    result = conn.execute(
        update(benefit_uses)
        .where(
            benefit_uses.c.use_id == use_id,
            benefit_uses.c.member_id == member_id,
            benefit_uses.c.status == "open",
        )
        .values(status=status, settled_at=at)
    )
    return result.rowcount == 1
