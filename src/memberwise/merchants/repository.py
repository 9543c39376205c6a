"""Every query of the merchants domain."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, delete, insert, or_, select, update

from memberwise.merchants.tables import (
    merchant_actions,
    merchant_appeals,
    merchant_items,
    merchant_penalties,
    merchant_scorecards,
)

BATCH = 5_000


def _insert_all(conn: Connection, table: Any, rows: Iterable[dict[str, Any]]) -> int:
    batch: list[dict[str, Any]] = []
    count = 0
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            conn.execute(insert(table), batch)
            count, batch = count + len(batch), []
    if batch:
        conn.execute(insert(table), batch)
        count += len(batch)
    return count


def replace_scorecards(conn: Connection, rows: Iterable[dict[str, Any]]) -> int:
    conn.execute(delete(merchant_scorecards))
    return _insert_all(conn, merchant_scorecards, rows)


def replace_items(conn: Connection, rows: Iterable[dict[str, Any]]) -> int:
    conn.execute(delete(merchant_items))
    return _insert_all(conn, merchant_items, rows)


def scorecard(conn: Connection, merchant_id: str) -> RowMapping | None:
    t = merchant_scorecards
    return conn.execute(select(t).where(t.c.merchant_id == merchant_id)).mappings().first()


def scorecards(
    conn: Connection, *, industry: str | None, worst_first: bool, limit: int
) -> Sequence[RowMapping]:
    t = merchant_scorecards
    query = select(t)
    if industry is not None:
        query = query.where(t.c.industry == industry)
    order = t.c.quality if worst_first else t.c.quality.desc()
    return conn.execute(query.order_by(order, t.c.merchant_id).limit(limit)).mappings().all()


def below_percentile(conn: Connection, percentile: float) -> list[str]:
    t = merchant_scorecards
    query = select(t.c.merchant_id).where(t.c.quality_percentile < percentile)
    return [r[0] for r in conn.execute(query)]


def at_or_above_percentile(conn: Connection, percentile: float) -> list[str]:
    t = merchant_scorecards
    query = select(t.c.merchant_id).where(t.c.quality_percentile >= percentile)
    return [r[0] for r in conn.execute(query)]


def items_of(conn: Connection, merchant_ids: Sequence[str]) -> list[str]:
    if not merchant_ids:
        return []
    t = merchant_items
    found: list[str] = []
    for start in range(0, len(merchant_ids), 500):  # bounded IN lists
        chunk = list(merchant_ids[start : start + 500])
        found += [r[0] for r in conn.execute(select(t.c.item_id).where(t.c.merchant_id.in_(chunk)))]
    return found


def penalty_by_key(conn: Connection, merchant_id: str, key: str) -> RowMapping | None:
    t = merchant_penalties
    query = select(t).where(t.c.merchant_id == merchant_id, t.c.idempotency_key == key)
    return conn.execute(query).mappings().first()


def penalty(conn: Connection, entry_id: str) -> RowMapping | None:
    t = merchant_penalties
    return conn.execute(select(t).where(t.c.entry_id == entry_id)).mappings().first()


def insert_penalty(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(merchant_penalties), [row])


def penalties(conn: Connection, merchant_id: str) -> Sequence[RowMapping]:
    t = merchant_penalties
    query = select(t).where(t.c.merchant_id == merchant_id)
    return conn.execute(query.order_by(t.c.created_at, t.c.entry_id)).mappings().all()


def reversal_of(conn: Connection, entry_id: str) -> RowMapping | None:
    t = merchant_penalties
    return conn.execute(select(t).where(t.c.reverses == entry_id)).mappings().first()


def appeal_of(conn: Connection, entry_id: str) -> RowMapping | None:
    t = merchant_appeals
    return conn.execute(select(t).where(t.c.entry_id == entry_id)).mappings().first()


def appeal(conn: Connection, appeal_id: str) -> RowMapping | None:
    t = merchant_appeals
    return conn.execute(select(t).where(t.c.appeal_id == appeal_id)).mappings().first()


def insert_appeal(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(merchant_appeals), [row])


def decide_appeal(conn: Connection, appeal_id: str, values: dict[str, Any]) -> bool:
    """Close an open appeal; False when it was no longer open (a concurrent decision)."""
    t = merchant_appeals
    result = conn.execute(
        update(t).where(t.c.appeal_id == appeal_id, t.c.status == "open").values(**values)
    )
    return result.rowcount == 1


def appeals(conn: Connection, merchant_id: str) -> Sequence[RowMapping]:
    t = merchant_appeals
    query = select(t).where(t.c.merchant_id == merchant_id).order_by(t.c.created_at)
    return conn.execute(query).mappings().all()


def action_by_trigger(conn: Connection, merchant_id: str, key: str) -> RowMapping | None:
    t = merchant_actions
    query = select(t).where(t.c.merchant_id == merchant_id, t.c.trigger_key == key)
    return conn.execute(query).mappings().first()


def insert_action(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(merchant_actions), [row])


def lift_actions(conn: Connection, action_ids: Sequence[str], at: datetime) -> None:
    t = merchant_actions
    conn.execute(update(t).where(t.c.action_id.in_(list(action_ids))).values(lifted_at=at))


def _active(at: datetime) -> Any:
    t = merchant_actions
    return and_(
        t.c.starts_at <= at, t.c.lifted_at.is_(None), or_(t.c.ends_at.is_(None), t.c.ends_at > at)
    )


def active_actions(conn: Connection, merchant_id: str, at: datetime) -> Sequence[RowMapping]:
    t = merchant_actions
    query = select(t).where(t.c.merchant_id == merchant_id, _active(at))
    return conn.execute(query.order_by(t.c.starts_at, t.c.action_id)).mappings().all()


def actions(conn: Connection, merchant_id: str) -> Sequence[RowMapping]:
    t = merchant_actions
    query = select(t).where(t.c.merchant_id == merchant_id)
    return conn.execute(query.order_by(t.c.starts_at, t.c.action_id)).mappings().all()


def merchants_under(conn: Connection, kinds: Sequence[str], at: datetime) -> list[str]:
    t = merchant_actions
    query = select(t.c.merchant_id).where(t.c.kind.in_(list(kinds)), _active(at)).distinct()
    return [r[0] for r in conn.execute(query)]


def merchants_with(conn: Connection, kind: str, at: datetime) -> list[str]:
    t = merchant_actions
    query = select(t.c.merchant_id).where(t.c.kind == kind, _active(at)).distinct()
    return [r[0] for r in conn.execute(query)]
