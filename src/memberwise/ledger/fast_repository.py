"""The order hot path's statements: prepared SQL run on the driver's cursor.

Placing an order is the ledgers' hottest write (≥ 1,000 a second on SQLite is the target).
Building and compiling SQLAlchemy statements costs more than SQLite takes to run them, so the
statements of that path are written once, as portable SQL with ``:name`` parameters, and run
on the DBAPI cursor of the same connection (so inside the same transaction). Only the
parameter style, timestamps and JSON differ between the drivers; :mod:`memberwise.kit.rawsql`
handles them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection

from memberwise.kit import rawsql
from memberwise.ledger.tables import orders


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def fast_coupon(conn: Connection, coupon_id: str, at: datetime) -> dict[str, Any] | None:
    """A coupon with whether it has started and not ended at ``at`` (compared in SQL)."""
    row = rawsql.execute(
        conn,
        "SELECT coupon_id, member_id, template, status, "
        "CASE WHEN valid_from <= :at THEN 1 ELSE 0 END, "
        "CASE WHEN valid_until > :at THEN 1 ELSE 0 END "
        "FROM coupons WHERE coupon_id = :coupon_id",
        {"coupon_id": coupon_id, "at": rawsql.stamp(conn, at)},
    ).fetchone()
    if row is None:
        return None
    keys = ("coupon_id", "member_id", "template", "status", "started", "valid")
    return dict(zip(keys, row, strict=True))


_COUPON_KEYS = ("coupon_id", "member_id", "template", "status", "started", "valid")


def fast_prefetch(
    conn: Connection,
    order_id: str,
    member_id: str,
    coupon_id: str | None,
    at: datetime,
    tier_query: str | None = None,
) -> tuple[bool, bool, dict[str, Any] | None, str | None]:
    """In one round trip: whether the order exists, whether the member does, the order's
    (first) coupon as :func:`fast_coupon` reads it, and the result of ``tier_query`` (the
    membership domain's statement of ``:member_id``; None when not given)."""
    tier = f"({tier_query})" if tier_query else "NULL"
    row = rawsql.execute(
        conn,
        "SELECT (SELECT COUNT(*) FROM orders WHERE order_id = :order_id), "
        "(SELECT COUNT(*) FROM members WHERE member_id = :member_id), "
        "c.coupon_id, c.member_id, c.template, c.status, "
        "CASE WHEN c.valid_from <= :at THEN 1 ELSE 0 END, "
        f"CASE WHEN c.valid_until > :at THEN 1 ELSE 0 END, {tier} "
        "FROM (SELECT 1 AS one) AS x LEFT JOIN coupons AS c ON c.coupon_id = :coupon_id",
        {
            "order_id": order_id,
            "member_id": member_id,
            "coupon_id": coupon_id or "",
            "at": rawsql.stamp(conn, at),
        },
    ).fetchone()
    coupon = dict(zip(_COUPON_KEYS, row[2:8], strict=True)) if row[2] is not None else None
    return bool(row[0]), bool(row[1]), coupon, None if row[8] is None else str(row[8])


def _insert_rows(
    conn: Connection, table: str, columns: tuple[str, ...], rows: list[dict[str, Any]]
) -> None:
    """One multi-row INSERT (one round trip, whatever the number of rows)."""
    if not rows:
        return
    params: dict[str, Any] = {}
    values = _bind(params, "", columns, rows)
    rawsql.execute(conn, f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}", params)


_ORDER_COLUMNS = [c.name for c in orders.c]
_ORDER_INSERT = (
    f"INSERT INTO orders ({', '.join(_ORDER_COLUMNS)}) VALUES ("
    + ", ".join(f":{n}_json" if n in ("items", "coupon_ids") else f":{n}" for n in _ORDER_COLUMNS)
    + ") ON CONFLICT (order_id) DO NOTHING RETURNING order_id"
)
# The guarded writes of an order after its row, ``{p}`` their parameters' prefix and ``{gate}``
# (on PostgreSQL) the condition that the write before it passed.
_REDEEM = (
    "UPDATE coupons SET status = 'redeemed', order_id = :order_id, discount = :{p}discount, "
    "redeemed_at = :at WHERE coupon_id = :{p}coupon_id AND member_id = :member_id "
    "AND status = 'issued' AND valid_from <= :at AND valid_until > :at{gate} RETURNING coupon_id"
)
_ENSURE_BUDGET = (
    "INSERT INTO coupon_budgets (template, issued, redeemed, redeemed_money) "
    "VALUES (:{p}template, 0, 0, 0) ON CONFLICT (template) DO NOTHING"
)
_RESERVE = (
    "UPDATE coupon_budgets SET redeemed = redeemed + 1, "
    "redeemed_money = redeemed_money + :{p}money WHERE template = :{p}template "
    "AND redeemed_money + :{p}money <= :{p}cap{gate} RETURNING template"
)
_ENSURE_BALANCE = (
    "INSERT INTO points_balances (member_id, available, pending, debt, updated_at) "
    "VALUES (:member_id, 0, 0, 0, :at) ON CONFLICT (member_id) DO NOTHING"
)
_SPEND = (
    "UPDATE points_balances SET available = available - :spend, pending = pending + :pending, "
    "updated_at = :at WHERE member_id = :member_id AND available >= :spend{gate} "
    "RETURNING member_id"
)
# PostgreSQL: one statement creates the budget or balance row if missing and counts in it (the
# parts of a statement cannot see each other's rows); the guard is the upsert's WHERE.
_RESERVE_UPSERT = (
    "INSERT INTO coupon_budgets (template, issued, redeemed, redeemed_money) "
    "SELECT :{p}template, 0, 1, :{p}money WHERE :{p}money <= :{p}cap{gate} "
    "ON CONFLICT (template) DO UPDATE SET redeemed = coupon_budgets.redeemed + 1, "
    "redeemed_money = coupon_budgets.redeemed_money + EXCLUDED.redeemed_money "
    "WHERE coupon_budgets.redeemed_money + EXCLUDED.redeemed_money <= :{p}cap RETURNING template"
)
_EARN_UPSERT = (
    "INSERT INTO points_balances (member_id, available, pending, debt, updated_at) "
    "SELECT :member_id, 0, :pending, 0, :at WHERE TRUE{gate} "
    "ON CONFLICT (member_id) DO UPDATE SET pending = points_balances.pending + EXCLUDED.pending, "
    "updated_at = EXCLUDED.updated_at RETURNING member_id"
)


def fast_place(
    conn: Connection,
    values: dict[str, Any],
    coupons: Sequence[tuple[str, int]],
    budgets: Sequence[tuple[str, int, int]],
    spend: int,
    pending: int,
    at: datetime,
) -> tuple[str, str] | None:
    """The guarded writes of an order, in the lock order, each only if the one before passed:
    the order row (unless its id exists), its ``coupons`` redeemed ((coupon id, money off),
    by id), the money ``budgets`` counted ((template, money, cap), by template), then ``spend``
    available points taken and ``pending`` ones added (which locks the member's balance).

    Returns None when all passed, else the first that did not: ``("order", order_id)`` (the id
    was taken since the caller's read; then nothing changed), ``("coupon", coupon_id)``,
    ``("budget", template)`` or ``("points", member_id)``; the writes before it stand, for the
    caller's unit of work to roll back.

    On PostgreSQL they are one statement of data-modifying CTEs, each gated on the one before
    it (so they run in that order): one round trip instead of four. On SQLite (in-process, no
    round trips) they are separate statements.
    """
    params = dict(values)
    for name in ("placed_at", "completed_at", "updated_at", "points_available_at"):
        params[name] = rawsql.stamp(conn, params[name])
    params["items_json"] = _json(params.pop("items"))
    params["coupon_ids_json"] = _json(params.pop("coupon_ids"))
    params.update(at=rawsql.stamp(conn, at), spend=spend, pending=pending)
    steps = [("order", values["order_id"])]
    for i, (coupon_id, discount) in enumerate(coupons):
        params[f"c{i}_coupon_id"], params[f"c{i}_discount"] = coupon_id, discount
        steps.append(("coupon", coupon_id))
    for i, (template, money, cap) in enumerate(budgets):
        params[f"g{i}_template"], params[f"g{i}_money"], params[f"g{i}_cap"] = template, money, cap
        steps.append(("budget", template))
    steps.append(("points", values["member_id"]))
    postgres = conn.dialect.name == "postgresql"
    statements = _place_sql(len(coupons), len(budgets), bool(spend), postgres)
    if not postgres:
        for step, group in zip(steps, statements, strict=True):
            *before, last = group.split(";")
            for statement in before:
                rawsql.execute(conn, statement, params)
            if rawsql.execute(conn, last, params).fetchone() is None:
                return step
        return None
    row = rawsql.execute(conn, statements[0], params).fetchone()
    for step, done in zip(steps, row, strict=True):
        if not done:
            return step
    return None


@functools.cache
def _place_sql(coupons: int, budgets: int, spend: bool, postgres: bool) -> tuple[str, ...]:
    """:func:`fast_place`'s statements for its shape: on PostgreSQL one, each step a CTE gated
    on the one before; on SQLite one group of ``;``-separated statements a step."""
    steps = [_ORDER_INSERT]
    steps += [_REDEEM.replace("{p}", f"c{i}_") for i in range(coupons)]
    reserve = _RESERVE_UPSERT if postgres else _ENSURE_BUDGET + ";" + _RESERVE
    steps += [reserve.replace("{p}", f"g{i}_") for i in range(budgets)]
    if postgres:
        steps.append(_SPEND if spend else _EARN_UPSERT)
    else:
        steps.append(_SPEND if spend else _ENSURE_BALANCE + ";" + _SPEND)
    if not postgres:
        return tuple(sql.replace("{gate}", "") for sql in steps)
    parts = [f"s0 AS ({steps[0]})"]
    for i, sql in enumerate(steps[1:], start=1):
        parts.append(f"s{i} AS ({sql.replace('{gate}', f' AND EXISTS (SELECT 1 FROM s{i - 1})')})")
    counts = ", ".join(f"(SELECT COUNT(*) FROM s{i})" for i in range(len(steps)))
    return (f"WITH {', '.join(parts)} SELECT {counts}",)


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
    audit_row.update(ts=rawsql.stamp(conn, audit["ts"]), details_json=_json(audit["details"]))
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
