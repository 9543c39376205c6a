"""Every query of the feedback domain."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, select

from memberwise.feedback.tables import feedback_rising, feedback_topics

BATCH = 5_000


def _insert(conn: Connection, table: Any, rows: Iterable[dict[str, Any]]) -> int:
    batch: list[dict[str, Any]] = []
    count = 0
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            conn.execute(table.insert(), batch)
            count += len(batch)
            batch = []
    if batch:
        conn.execute(table.insert(), batch)
        count += len(batch)
    return count


def replace_topics(conn: Connection, rows: Iterable[dict[str, Any]]) -> int:
    conn.execute(delete(feedback_topics))
    return _insert(conn, feedback_topics, rows)


def replace_rising(conn: Connection, rows: Iterable[dict[str, Any]]) -> int:
    conn.execute(delete(feedback_rising))
    return _insert(conn, feedback_rising, rows)


def topics(
    conn: Connection, *, level: str | None, key: str | None, aspect: str | None, limit: int
) -> Sequence[RowMapping]:
    t = feedback_topics
    query = select(t)
    if level is not None:
        query = query.where(t.c.level == level)
    if key is not None:
        query = query.where(t.c.key == key)
    if aspect is not None:
        query = query.where(t.c.aspect == aspect)
    query = query.order_by(t.c.mentions.desc(), t.c.level, t.c.key, t.c.aspect, t.c.trigger)
    return conn.execute(query.limit(limit)).mappings().all()


def rising(
    conn: Connection, *, level: str | None, only_rising: bool, limit: int
) -> Sequence[RowMapping]:
    t = feedback_rising
    query = select(t)
    if level is not None:
        query = query.where(t.c.level == level)
    if only_rising:
        query = query.where(t.c.rising.is_(True))
    query = query.order_by(t.c.q_value, t.c.ratio.desc(), t.c.level, t.c.key)
    return conn.execute(query.limit(limit)).mappings().all()


def build_id(conn: Connection) -> str | None:
    row = conn.execute(select(feedback_topics.c.build_id).limit(1)).first()
    if row is None:
        row = conn.execute(select(feedback_rising.c.build_id).limit(1)).first()
    return None if row is None else str(row[0])
