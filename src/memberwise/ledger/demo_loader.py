"""Load the demo platform's purchases and refunds into the ledgers, through the order semantics.

The demo generator writes behaviour events, not ledger calls. This loader replays the lake's
``purchase`` events (grouped into orders by ``order_id``) and ``refund`` events in time order
through the same service functions ``POST /v1/orders``, ``POST /v1/orders/{id}/refunds`` and
``POST /v1/orders/{id}/complete`` call, so every demo member's points, coupons and benefit
counters agree with their orders:

* each order is placed at its purchase time (its points pending), refunded when its refund
  events say (points reversed pro rata), and completed when its return window closed before now
  (points available);
* a refund of a member holding an express-refund benefit is an express refund (paid against
  the credit as the order's refund, :mod:`memberwise.ledger.aftersales`) and the credit
  restored :data:`RETURN_DAYS` later (still outstanding when that is after now); a member
  holding return-guarantee cards uses one for it when a card of that day is left;
* members holding a monthly-coupons benefit get this month's coupons.

The member's tier and benefits are those they hold now (the demo has no tier history), so a
tier's points multiplier applies to all of their orders. Work is done in transactions of
:data:`BATCH` operations, each operation in a savepoint so one refusal (counted, not raised)
leaves the rest; a re-run skips orders, refunds and completions already in the store.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from memberwise.kit.db import insert_ignore
from memberwise.kit.errors import MemberwiseError
from memberwise.kit.ids import new_id
from memberwise.kit.lake import EventLake
from memberwise.kit.time import as_utc, utcnow
from memberwise.ledger import aftersales, benefits, coupons, orders, points, repository
from memberwise.ledger import service as ledger
from memberwise.ledger.benefits import ExpressRefundIn, ReturnCardIn
from memberwise.ledger.schemas import EntryKind, OrderIn, OrderItem, RefundIn
from memberwise.ledger.tables import order_refunds, points_balances, points_earn_periods
from memberwise.ledger.tables import orders as orders_table
from memberwise.members.tables import members as members_table
from memberwise.membership.service import Entitlements
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, Principal
from memberwise.program.benefits import ExpressRefund, MonthlyCoupons, ReturnCards
from memberwise.program.ledger import day_key, month_key
from memberwise.program.schemas import Program

#: Operations per transaction: large enough that commits cost little, small enough that a
#: crash loses little (a re-run redoes only the unfinished batch).
BATCH = 5_000
#: Days after an express refund that the demo's return arrives (its credit is restored).
RETURN_DAYS = 3
#: ``progress(done, total)`` after each batch.
Progress = Callable[[int, int], None]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_QUERY = """
SELECT type, event_id, member_id, epoch_us(ts), item_id, category_id, brand, merchant_id, price,
       quantity, order_id
FROM ({events})
WHERE type IN ('purchase', 'refund') AND order_id IS NOT NULL AND member_id IS NOT NULL
  AND price IS NOT NULL AND price >= 0 AND ts <= ?
ORDER BY ts, event_id
"""


@dataclass
class LoadResult:
    """What a load did (skipped: already in the store from an earlier run)."""

    orders: int = 0
    orders_skipped: int = 0
    refunds: int = 0
    refunds_skipped: int = 0
    completed: int = 0
    express_refunds: int = 0
    express_restored: int = 0
    return_cards: int = 0
    coupons_issued: int = 0
    #: Refusal code -> how many operations were refused with it.
    refused: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


@dataclass
class _Order:
    order_id: str
    member_id: str
    at: datetime
    merchants: set[str]
    items: list[OrderItem]


@dataclass(order=True)
class _Op:
    at: datetime
    rank: int  # at the same instant: place, then refund, then complete, then restore
    key: str
    kind: str = field(compare=False)
    data: Any = field(compare=False)


def read_purchases(lake: EventLake, now: datetime) -> tuple[dict[str, _Order], list[_Op]]:
    """The lake's orders (purchase events grouped by order id) and refunds, up to ``now``."""
    con = lake.connect()  # (a lake on an object store is registered on it)
    try:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.execute(_QUERY.format(events=lake.events_sql()), [now]).fetchall()
    finally:
        con.close()
    found: dict[str, _Order] = {}
    refunds: list[_Op] = []
    for kind, event_id, member, ts, item, category, brand, merchant, price, qty, order_id in rows:
        at = _EPOCH + timedelta(microseconds=ts)
        quantity = max(int(qty or 1), 1)
        if kind == "refund":
            refunds.append(_Op(at, 1, event_id, "refund", (order_id, member, price * quantity)))
            continue
        order = found.get(order_id)
        if order is None:
            order = found[order_id] = _Order(order_id, member, at, set(), [])
        if merchant:
            order.merchants.add(merchant)
        order.items.append(
            OrderItem(
                item_id=item or event_id,
                category=category,
                brand=brand,
                price=price,
                quantity=quantity,
            )
        )
    return found, refunds


def _existing(conn: Connection, column: Any, ids: list[str]) -> set[str]:
    """Which of ``ids`` are in ``column``'s table (in chunks: one bound list each)."""
    seen: set[str] = set()
    for start in range(0, len(ids), 10_000):
        chunk = ids[start : start + 10_000]
        seen.update(conn.execute(select(column).where(column.in_(chunk))).scalars())
    return seen


def _completed(conn: Connection, ids: list[str]) -> set[str]:
    seen: set[str] = set()
    c = orders_table.c
    for start in range(0, len(ids), 10_000):
        chunk = ids[start : start + 10_000]
        query = select(c.order_id).where(c.order_id.in_(chunk), c.completed_at.is_not(None))
        seen.update(conn.execute(query).scalars())
    return seen


def _held(program: Program, held: Entitlements, kind: type[Any]) -> bool:
    return any(isinstance(program.benefits.get(n), kind) for n in held.benefits)


def _batches(ops: list[_Op], size: int) -> Iterator[list[_Op]]:
    for start in range(0, len(ops), size):
        yield ops[start : start + size]


def load_demo(
    engine: Engine,
    program: Program,
    lake: EventLake,
    *,
    now: datetime | None = None,
    actor: Principal = SYSTEM,
    batch: int = BATCH,
    progress: Progress | None = None,
    bulk: bool = True,
) -> LoadResult:
    """Replay the lake's purchases and refunds up to ``now`` through the ledgers (see the
    module docstring); idempotent: a second run changes nothing and skips the work done.
    ``bulk`` False places every order one by one through ``orders.place`` (the reference the
    bulk path is tested against)."""
    started = time.perf_counter()
    now = as_utc(now or utcnow())
    result = LoadResult()
    found, refund_ops = read_purchases(lake, now)
    pending = timedelta(days=program.points.pending_days)
    with engine.connect() as conn:
        placed = _existing(conn, orders_table.c.order_id, list(found))
        refunded = _existing(conn, order_refunds.c.refund_id, [op.key for op in refund_ops])
        completed = _completed(conn, list(found))
        people = sorted({o.member_id for o in found.values()})
        held = {m: benefits.entitlements(conn, program, m, now) for m in people}
        known = _existing(conn, members_table.c.member_id, people)
    # Placing an order of the demo touches only its own rows and its member's balance and earn
    # caps (no coupons, no points spent), so orders are written in bulk, in time order (see
    # _bulk_place). An order without refunds is completed there too; the refunds, and the
    # completion of refunded orders, then run one by one in time order.
    refunded_orders = {op.data[0] for op in refund_ops}
    plain: list[tuple[_Order, bool]] = []
    ops: list[_Op] = []
    for order in found.values():
        direct = order.order_id not in refunded_orders
        if order.order_id in placed:
            result.orders_skipped += 1
        elif bulk and order.member_id in known:
            plain.append((order, direct))
            if direct:
                continue
        else:
            ops.append(_Op(order.at, 0, order.order_id, "place", order))
        if order.order_id not in completed and order.at + pending <= now:
            ops.append(_Op(order.at + pending, 2, order.order_id, "complete", order))
    for op in refund_ops:
        if op.key in refunded:
            result.refunds_skipped += 1
            continue
        member = op.data[1]
        entitled = held.get(member)
        if entitled is not None and _held(program, entitled, ExpressRefund):
            # Paid at once against the credit: the express refund records the order's refund.
            ops.append(_Op(op.at, 1, op.key, "express", op.data))
            back = op.at + timedelta(days=RETURN_DAYS)
            if back <= now:
                ops.append(_Op(back, 3, op.key, "restore", op.data))
        else:
            ops.append(op)
        if entitled is not None and _held(program, entitled, ReturnCards):
            ops.append(_Op(op.at, 1, op.key, "card", op.data))
    ops.sort()
    plain.sort(key=lambda oc: (oc[0].at, oc[0].order_id))
    for start in range(0, len(plain), batch):
        with engine.begin() as conn:
            placed_now, completed_now = _bulk_place(
                conn, program, plain[start : start + batch], held, now, actor
            )
        result.orders += placed_now
        result.completed += completed_now
        if progress is not None:
            progress(start + len(plain[start : start + batch]), len(plain) + len(ops))
    done = len(plain)
    for chunk in _batches(ops, batch):
        with engine.begin() as conn:
            for op in chunk:
                _apply(conn, program, op, held, result, actor)
        done += len(chunk)
        if progress is not None:
            progress(done, len(plain) + len(ops))
    with engine.begin() as conn:
        result.coupons_issued = _monthly(conn, program, held, now, actor)
    result.seconds = time.perf_counter() - started
    return result


def _apply(
    conn: Connection,
    program: Program,
    op: _Op,
    held: dict[str, Entitlements],
    result: LoadResult,
    actor: Principal,
) -> None:
    """One operation in a savepoint: a refusal rolls back only itself and is counted."""
    savepoint = conn.begin_nested()
    try:
        _do(conn, program, op, held, result, actor)
    except MemberwiseError as exc:
        savepoint.rollback()
        result.refused[exc.code] += 1
        return
    savepoint.commit()


def _do(
    conn: Connection,
    program: Program,
    op: _Op,
    held: dict[str, Entitlements],
    result: LoadResult,
    actor: Principal,
) -> None:
    if op.kind == "place":
        order: _Order = op.data
        body = _order_in(order)
        entitled = held.get(order.member_id)
        tier = entitled.tier if entitled is not None else None
        _, new = orders.place(conn, program, body, tier=tier, at=op.at, actor=actor)
        result.orders += int(new)
    elif op.kind == "complete":
        orders.complete(conn, op.key, at=op.at, actor=actor)
        result.completed += 1
    elif op.kind in ("refund", "express"):
        order_id, member, amount = op.data
        paid = orders.get(conn, order_id)
        left = paid.paid - paid.refunded
        if left <= 0:
            return
        if op.kind == "express":
            # Paid at once against the credit, as the order's refund (the API's express refund);
            # over the credit it is refunded the normal way.
            data = ExpressRefundIn(refund_id=op.key, order_id=order_id, amount=min(amount, left))
            inner = conn.begin_nested()
            try:
                aftersales.express_refund(conn, program, member, data, at=op.at, actor=actor)
            except benefits.ExpressRefundCreditExceeded:
                inner.rollback()
            else:
                inner.commit()
                result.express_refunds += 1
                result.refunds += 1
                return
        ask = RefundIn(refund_id=op.key, amount=min(amount, left), at=op.at)
        _, new = orders.refund(conn, program, order_id, ask, at=op.at, actor=actor)
        result.refunds += int(new)
    elif op.kind == "restore":
        try:
            benefits.restore_express_refund(conn, op.data[1], op.key, at=op.at, actor=actor)
        except benefits.ExpressRefundNotFound:
            return  # its express refund was refused (over the credit): paid the normal way
        result.express_restored += 1
    elif op.kind == "card":
        order_id, member, _ = op.data
        card = ReturnCardIn(use_id=op.key, order_id=order_id)
        aftersales.return_card(conn, program, member, card, at=op.at, actor=actor)
        result.return_cards += 1


def _order_in(order: _Order) -> OrderIn:
    """The order as the platform would place it (one merchant named, or none when several)."""
    merchant = next(iter(order.merchants)) if len(order.merchants) == 1 else None
    return OrderIn(
        order_id=order.order_id,
        member_id=order.member_id,
        merchant_id=merchant,
        items=order.items,
        placed_at=order.at,
    )


def _bulk_place(
    conn: Connection,
    program: Program,
    plain: list[tuple[_Order, bool]],
    held: dict[str, Entitlements],
    now: datetime,
    actor: Principal,
) -> tuple[int, int]:
    """Write what :func:`orders.place` and :func:`orders.complete` would for orders without
    coupons or points -- the order row, the earn entry and its lot, the maturing entry
    when the return window closed before ``now`` (for orders flagged to complete: those
    without refunds), balances and audit rows -- with one
    statement per table and batch instead of a dozen per order (40 k orders: seconds, not
    minutes). ``tests/ledger/test_demo_loader.py`` checks it leaves the store exactly as the
    one-by-one path does. Returns (orders placed, orders completed)."""
    settings = program.points
    zone = program.display_timezone
    window = timedelta(days=settings.pending_days)
    order_rows: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    lots: list[dict[str, Any]] = []
    audits: list[dict[str, Any]] = []
    deltas: dict[str, list[int]] = {}
    completed = 0
    caps = {"d": settings.daily_cap, "m": settings.monthly_cap}
    earned_so_far = (
        _earned_periods(conn, {o.member_id for o, _ in plain}) if any(caps.values()) else {}
    )
    for order, complete in plain:
        body = _order_in(order)
        entitled = held.get(order.member_id)
        tier = entitled.tier if entitled is not None else None
        at = order.at
        goods = sum(i.price * i.quantity for i in body.items)
        earned = orders.earn_for(settings, body.items, goods, tier=tier, at=at, timezone=zone)
        # The earn caps, as points.credit applies them: cut to what is left of the day's and
        # the month's cap, and counted against both.
        granted = earned
        periods = {"d": f"d:{day_key(at, zone)}", "m": f"m:{month_key(at, zone)}"}
        for unit, cap in caps.items():
            if cap is not None and granted:
                granted = min(
                    granted, max(0, cap - earned_so_far.get((order.member_id, periods[unit]), 0))
                )
        if granted:
            for unit, cap in caps.items():
                if cap is not None:
                    key = (order.member_id, periods[unit])
                    earned_so_far[key] = earned_so_far.get(key, 0) + granted
        done_at = at + window if complete and at + window <= now else None
        row: dict[str, Any] = {
            "order_id": order.order_id,
            "member_id": order.member_id,
            "status": "placed" if done_at is None else "completed",
            "merchant_id": body.merchant_id,
            "goods_amount": goods,
            "shipping_fee": 0,
            "coupon_discount": 0,
            "shipping_discount": 0,
            "points_used": 0,
            "points_value": 0,
            "paid": goods,
            "points_earned": granted,
            "refunded": 0,
            "points_reversed": 0,
            "points_restored": 0,
            "tier": tier,
            "items": [i.model_dump(mode="json") for i in body.items],
            "coupon_ids": [],
            "points_available_at": at + window,
            "request_hash": ledger.request_hash(body),
            "placed_at": at,
            "completed_at": done_at,
            "updated_at": done_at or at,
        }
        order_rows.append(row)
        audits.append(
            privacy.audit_row(
                actor,
                "orders.place",
                "order",
                order.order_id,
                member_id=order.member_id,
                details={
                    "paid": goods,
                    "coupons": [],
                    "coupon_discount": 0,
                    "points_used": 0,
                    "points_earned": granted,
                },
            )
        )
        balance = deltas.setdefault(order.member_id, [0, 0])
        lot_id = None
        pending = settings.pending_days > 0
        if earned:
            entry = points.entry_row(
                order.member_id,
                EntryKind.earn_order,
                f"order:{order.order_id}:earn",
                at,
                actor,
                available=0 if pending else granted,
                pending=granted if pending else 0,
                order_id=order.order_id,
            )
            entries.append(entry)
        lot_id = None
        if granted:
            lot_id = new_id()
            matured = not pending or done_at is not None
            lots.append(
                {
                    "lot_id": lot_id,
                    "member_id": order.member_id,
                    "entry_id": entry["entry_id"],
                    "order_id": order.order_id,
                    "points": granted,
                    "remaining": granted,
                    "status": "available" if matured else "pending",
                    "earned_at": at,
                    "available_at": at + window,
                    "expires_at": settings.expires_at(at, zone),
                }
            )
            balance[0 if matured else 1] += granted
        if done_at is None:
            continue
        completed += 1
        moved = 0
        if pending and lot_id is not None:
            moved = granted
            mature = points.entry_row(
                order.member_id,
                EntryKind.mature,
                f"mature:{order.order_id}:{new_id()}",
                done_at,
                actor,
                available=granted,
                pending=-granted,
                order_id=order.order_id,
            )
            entries.append(mature)
            audits.append(
                privacy.audit_row(
                    actor,
                    "points.mature",
                    "points_entry",
                    mature["entry_id"],
                    member_id=order.member_id,
                    details={"points": granted, "lots": [lot_id]},
                )
            )
        audits.append(
            privacy.audit_row(
                actor,
                "orders.complete",
                "order",
                order.order_id,
                member_id=order.member_id,
                details={"points_available": moved},
            )
        )
    if order_rows:
        conn.execute(insert(orders_table), order_rows)
    repository.insert_entries(conn, entries)
    repository.insert_lots(conn, lots)
    changes = [
        {"m": member, "a": available, "p": held_back, "now": now}
        for member, (available, held_back) in sorted(deltas.items())
        if available or held_back
    ]
    if changes:
        # Two statements for all balances: create the missing rows, then add every delta
        # (the same ``balance = balance + :delta`` as repository.change_balance, executemany).
        b = points_balances.c
        conn.execute(
            insert_ignore(conn, points_balances),
            [
                {"member_id": c["m"], "available": 0, "pending": 0, "debt": 0, "updated_at": now}
                for c in changes
            ],
        )
        conn.execute(
            update(points_balances)
            .where(b.member_id == bindparam("m"))
            .values(
                available=b.available + bindparam("a"),
                pending=b.pending + bindparam("p"),
                updated_at=bindparam("now"),
            ),
            changes,
        )
    if earned_so_far:
        _store_periods(conn, earned_so_far)
    privacy.audit_many(conn, audits)
    return len(order_rows), completed


def _earned_periods(conn: Connection, member_ids: set[str]) -> dict[tuple[str, str], int]:
    """Points counted so far against the earn caps, by (member, period), of these members."""
    found: dict[tuple[str, str], int] = {}
    p = points_earn_periods.c
    ids = sorted(member_ids)
    for start in range(0, len(ids), 10_000):
        query = select(p.member_id, p.period, p.earned).where(
            p.member_id.in_(ids[start : start + 10_000])
        )
        found.update({(r.member_id, r.period): int(r.earned) for r in conn.execute(query)})
    return found


def _store_periods(conn: Connection, earned: dict[tuple[str, str], int]) -> None:
    """Write the cap counters as they now stand (creating the missing rows)."""
    rows = [{"m": m, "p": period, "e": n} for (m, period), n in sorted(earned.items())]
    conn.execute(
        insert_ignore(conn, points_earn_periods),
        [{"member_id": r["m"], "period": r["p"], "earned": 0} for r in rows],
    )
    p = points_earn_periods.c
    conn.execute(
        update(points_earn_periods)
        .where(p.member_id == bindparam("m"), p.period == bindparam("p"))
        .values(earned=bindparam("e")),
        rows,
    )


def _monthly(
    conn: Connection,
    program: Program,
    held: dict[str, Entitlements],
    now: datetime,
    actor: Principal,
) -> int:
    """This month's coupons for every member holding a monthly-coupons benefit."""
    issued = 0
    for member, entitled in held.items():
        if _held(program, entitled, MonthlyCoupons):
            issued += benefits.issue_monthly_coupons(
                conn, program, member, list(entitled.benefits), at=now, actor=actor
            )
    return issued


#: How many of the demo's members (the first, by id) get one coupon of each template.
DEMO_COUPON_MEMBERS = 500


def issue_demo_coupons(
    engine: Engine,
    program: Program,
    *,
    members: int = DEMO_COUPON_MEMBERS,
    at: datetime | None = None,
    actor: Principal = SYSTEM,
) -> dict[str, int]:
    """Issue one coupon of every template not sold for points to the first ``members``
    members (by id), through the coupon ledger (``coupons.issue``: tiers, limits and budgets
    apply, so a tier-only template reaches only that tier's members). Idempotent: the issue key
    is ``demo:<template>``, so a re-run issues nothing new. Returns template -> coupons held."""
    at = as_utc(at or utcnow())
    with engine.begin() as conn:
        first = list(
            conn.execute(
                select(members_table.c.member_id).order_by(members_table.c.member_id).limit(members)
            ).scalars()
        )
        held: dict[str, int] = {}
        for name, template in program.coupons.items():
            if template.points_price is not None:
                continue
            out = coupons.issue(
                conn, program, name, first, key=f"demo:{name}", source="demo", at=at, actor=actor
            )
            held[name] = out.issued
    return held


def describe(result: LoadResult) -> str:
    """One line for the console: what the load did."""
    refused = ", ".join(f"{n:,} {code}" for code, n in sorted(result.refused.items()))
    return (
        f"ledgers: {result.orders:,} orders placed ({result.orders_skipped:,} already), "
        f"{result.refunds:,} refunds ({result.refunds_skipped:,} already), "
        f"{result.completed:,} completed, {result.express_refunds:,} express refunds "
        f"({result.express_restored:,} returned), {result.return_cards:,} return cards, "
        f"{result.coupons_issued:,} monthly coupons"
        + (f"; refused: {refused}" if refused else "")
        + f" in {result.seconds:.1f} s"
    )


def load_demo_command() -> None:
    """Replay the lake's demo purchases and refunds through the ledgers (idempotent)."""
    from memberwise.config import get_settings
    from memberwise.runtime import Runtime

    settings = get_settings()
    rt = Runtime.open(settings)
    try:
        print(describe(load_demo(rt.engine, rt.program(), rt.lake)))
    finally:
        rt.close()
