"""The order hot path's reads and guarded writes: prepared SQL run on the driver's cursor.

Placing an order is the ledgers' hottest write (≥ 1,000 a second on SQLite is the target).
Building and compiling SQLAlchemy statements costs more than SQLite takes to run them, so the
statements of that path are written once, as portable SQL with ``:name`` parameters, and run
on the DBAPI cursor of the same connection (so inside the same transaction). Only the
parameter style, timestamps and JSON differ between the drivers; :mod:`memberwise.kit.rawsql`
handles them. The rows an order then appends (entries, lot, audit, allocations) are
:mod:`.fast_entries`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from memberwise.kit import rawsql
from memberwise.ledger.tables import orders


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
    params["items_json"] = rawsql.json_text(params.pop("items"))
    params["coupon_ids_json"] = rawsql.json_text(params.pop("coupon_ids"))
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
