"""The order hot path's appended rows: its points entries, its earned lot, its audit row and
the allocation of spent points to lots (nearest expiry first), as prepared multi-row INSERTs
on the driver's cursor (see :mod:`.fast_repository` for why the hot path skips SQLAlchemy).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from memberwise.kit import rawsql

_LOT_ORDER = (
    "ORDER BY CASE WHEN expires_at IS NULL THEN 1 ELSE 0 END, expires_at, earned_at, lot_id"
)


def fast_allocate(conn: Connection, member_id: str, entry_id: str, points: int) -> None:
    """Take ``points`` from the member's available lots, nearest expiry first, recording the
    allocations (the caller has debited the balance, which holds the member's lock).

    The common case, the first lot holding enough, is one statement; otherwise the lots are
    walked in order.
    """
    one = rawsql.execute(
        conn,
        "UPDATE points_lots SET remaining = remaining - :points WHERE lot_id = ("
        "SELECT lot_id FROM points_lots WHERE member_id = :member_id AND status = 'available' "
        f"AND remaining > 0 {_LOT_ORDER} LIMIT 1) AND remaining >= :points RETURNING lot_id",
        {"points": points, "member_id": member_id},
    ).fetchone()
    taken: list[dict[str, Any]] = []
    if one is not None:
        taken.append({"lot_id": one[0], "points": points})
    else:
        cursor = rawsql.execute(
            conn,
            "SELECT lot_id, remaining FROM points_lots WHERE member_id = :member_id "
            f"AND status = 'available' AND remaining > 0 {_LOT_ORDER}",
            {"member_id": member_id},
        )
        left = points
        while left:
            row = cursor.fetchone()
            if row is None:  # pragma: no cover - balance == sum of available lots
                raise RuntimeError(f"member {member_id} has {left} points fewer in lots")
            n = min(left, int(row[1]))
            taken.append({"lot_id": row[0], "points": n})
            left -= n
        cursor.close()
        for t in taken:
            rawsql.execute(
                conn,
                "UPDATE points_lots SET remaining = remaining - :points "
                "WHERE lot_id = :lot_id AND remaining >= :points",
                t,
            )
    _insert_rows(
        conn,
        "points_allocations",
        ("entry_id", "lot_id", "member_id", "points"),
        [{**t, "entry_id": entry_id, "member_id": member_id} for t in taken],
    )


_ENTRY_COLUMNS = (
    "entry_id",
    "member_id",
    "kind",
    "available_delta",
    "pending_delta",
    "debt_delta",
    "idem_key",
    "order_id",
    "reason",
    "actor",
    "created_at",
)


_LOT_COLUMNS = (
    "lot_id",
    "member_id",
    "entry_id",
    "order_id",
    "points",
    "remaining",
    "status",
    "earned_at",
    "available_at",
    "expires_at",
)
_AUDIT_COLUMNS = (
    "audit_id",
    "ts",
    "actor",
    "actor_role",
    "action",
    "subject_type",
    "subject_id",
    "member_id",
    "reason",
    "details_json",
)


@functools.cache
def _marks(
    prefix: str, columns: tuple[str, ...], n: int
) -> tuple[str, tuple[tuple[str, ...], ...]]:
    """``VALUES (...), (...)`` for ``n`` rows with parameters named ``<prefix><column>_<row>``,
    and those names row by row (cached: the hot path's statements have a few shapes)."""
    names = tuple(tuple(f"{prefix}{c}_{i}" for c in columns) for i in range(n))
    return ", ".join("(" + ", ".join(f":{k}" for k in row) + ")" for row in names), names


def _bind(
    params: dict[str, Any],
    prefix: str,
    columns: tuple[str, ...],
    rows: Sequence[dict[str, Any]],
) -> str:
    """Add ``rows``' values to ``params`` (named as :func:`_marks` names them); the VALUES."""
    values, names = _marks(prefix, columns, len(rows))
    for row, keys in zip(rows, names, strict=True):
        for key, column in zip(keys, columns, strict=True):
            params[key] = row[column]
    return values


@functools.cache
def _tail_sql(entries: int, lot: bool, spend: bool) -> str:
    """The PostgreSQL statement of :func:`fast_write_tail` for its shape."""
    parts = []
    for name, table, columns, rows in (
        ("e", "points_entries", _ENTRY_COLUMNS, entries),
        ("l", "points_lots", _LOT_COLUMNS, int(lot)),
        ("a", "audit_log", _AUDIT_COLUMNS, 1),
    ):
        if rows:
            values, _ = _marks(f"{name}_", columns, rows)
            names = ", ".join(c.removesuffix("_json") for c in columns)
            parts.append(f"{name} AS (INSERT INTO {table} ({names}) VALUES {values})")
    if not spend:
        last = parts.pop()
        _, _, body = last.partition(" AS (")
        return ("WITH " + ", ".join(parts) + " " if parts else "") + body[:-1]
    parts.append(
        "t AS (UPDATE points_lots SET remaining = remaining - :t_points WHERE lot_id = ("
        "SELECT lot_id FROM points_lots WHERE member_id = :t_member AND status = 'available' "
        f"AND remaining > 0 {_LOT_ORDER} LIMIT 1) AND remaining >= :t_points RETURNING lot_id)"
    )
    return (
        "WITH " + ", ".join(parts) + " INSERT INTO points_allocations "
        "(entry_id, lot_id, member_id, points) SELECT :t_entry, lot_id, :t_member, :t_points "
        "FROM t RETURNING lot_id"
    )


def fast_write_tail(
    conn: Connection,
    entries: list[dict[str, Any]],
    lot: dict[str, Any] | None,
    audit: dict[str, Any],
    spend: tuple[str, str, int] | None,
) -> None:
    """The order's remaining writes: its entries, its earned lot, its audit row, and the
    allocation of ``spend`` (member, entry id, points) to lots, nearest expiry first.

    On PostgreSQL they go as one statement (data-modifying CTEs: one round trip instead of
    four); the allocation is folded in when the first lot holds enough, otherwise lots are
    walked afterwards. On SQLite (in-process, no round trips) they are separate statements.
    """
    entry_rows = [{**r, "created_at": rawsql.stamp(conn, r["created_at"])} for r in entries]
    lot_rows = (
        []
        if lot is None
        else [
            {
                **lot,
                **{
                    k: rawsql.stamp(conn, lot[k])
                    for k in ("earned_at", "available_at", "expires_at")
                },
            }
        ]
    )
    audit_row = {k: v for k, v in audit.items() if k != "details"}
    audit_row.update(
        ts=rawsql.stamp(conn, audit["ts"]), details_json=rawsql.json_text(audit["details"])
    )
    if conn.dialect.name != "postgresql":
        _insert_rows(conn, "points_entries", _ENTRY_COLUMNS, entry_rows)
        _insert_rows(conn, "points_lots", _LOT_COLUMNS, lot_rows)
        audit_names = ", ".join(c.removesuffix("_json") for c in _AUDIT_COLUMNS)
        params: dict[str, Any] = {}
        values = _bind(params, "", _AUDIT_COLUMNS, [audit_row])
        rawsql.execute(conn, f"INSERT INTO audit_log ({audit_names}) VALUES {values}", params)
        if spend is not None:
            fast_allocate(conn, *spend)
        return
    params = {}
    _bind(params, "e_", _ENTRY_COLUMNS, entry_rows)
    _bind(params, "l_", _LOT_COLUMNS, lot_rows)
    _bind(params, "a_", _AUDIT_COLUMNS, [audit_row])
    sql = _tail_sql(len(entry_rows), bool(lot_rows), spend is not None)
    if spend is None:
        rawsql.execute(conn, sql, params)
        return
    member_id, entry_id, points = spend
    params.update(t_points=points, t_member=member_id, t_entry=entry_id)
    if rawsql.execute(conn, sql, params).fetchone() is None:
        # The first lot holds fewer than the points: walk the lots (the CTE changed none).
        fast_allocate(conn, member_id, entry_id, points)


def _insert_rows(
    conn: Connection, table: str, columns: tuple[str, ...], rows: list[dict[str, Any]]
) -> None:
    """One multi-row INSERT (one round trip, whatever the number of rows)."""
    if not rows:
        return
    params: dict[str, Any] = {}
    values = _bind(params, "", columns, rows)
    rawsql.execute(conn, f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}", params)
