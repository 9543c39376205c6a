"""Many clients at once, on the real stores (threads, each with its own connection): a coupon is
redeemed exactly once, budgets are never exceeded, points are never overdrawn, and a duplicated
order is placed once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier
from typing import TypeVar

from sqlalchemy import Connection, Engine, func, select

from memberwise.kit.db import transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.ledger import coupons, orders, points
from memberwise.ledger import service as ledger
from memberwise.ledger.tables import coupon_budgets
from memberwise.ledger.tables import coupons as coupons_table
from memberwise.ledger.tables import orders as orders_table
from tests.ledger.factories import T0, add_members, check_invariants, make_program, order

T = TypeVar("T")
WORKERS = 16


def _race(engine: Engine, jobs: list[Callable[[Connection], T]]) -> Counter[str]:
    """Run every job in its own transaction, WORKERS at a time released together; count the
    outcomes ("ok" or the refusal code)."""
    barrier = Barrier(min(WORKERS, len(jobs)))

    def run(i: int) -> str:
        if i < WORKERS:
            barrier.wait()
        try:
            ledger.write(engine, jobs[i])
        except MemberwiseError as exc:
            return exc.code
        return "ok"

    with ThreadPoolExecutor(WORKERS) as pool:
        return Counter(pool.map(run, range(len(jobs))))


def test_200_concurrent_redemptions_of_one_coupon_exactly_one_succeeds(engine: Engine) -> None:
    program = make_program()
    with transaction(engine) as conn:
        add_members(conn, "m1")
        coupon = coupons.issue(conn, program, "ten_off", ["m1"], key="k", at=T0).coupons[0]
    jobs: list[Callable[[Connection], object]] = [
        (lambda c, i=i: orders.place(c, program, order(f"o{i}", coupons=[coupon.coupon_id]), at=T0))
        for i in range(200)
    ]
    outcomes = _race(engine, jobs)
    assert outcomes == Counter({"ok": 1, "coupon_already_redeemed": 199})
    with transaction(engine) as conn:
        assert conn.execute(select(func.count()).select_from(orders_table)).scalar_one() == 1
        status = conn.execute(select(coupons_table.c.status, coupons_table.c.order_id)).one()
        assert status[0] == "redeemed" and status[1].startswith("o")
        check_invariants(conn)


def test_concurrent_redemptions_never_exceed_the_money_budget(engine: Engine) -> None:
    program = make_program()  # "money": 1000 fen off each, 2500 fen budget -> two fit
    members = [f"m{i:02d}" for i in range(40)]
    with transaction(engine) as conn:
        add_members(conn, *members)
        issued = coupons.issue(conn, program, "money", members, key="k", at=T0).coupons
    jobs: list[Callable[[Connection], object]] = [
        (
            lambda c, cp=cp: orders.place(
                c, program, order(f"o-{cp.member_id}", cp.member_id, coupons=[cp.coupon_id]), at=T0
            )
        )
        for cp in issued
    ]
    assert _race(engine, jobs) == Counter({"ok": 2, "budget_exhausted": 38})
    with transaction(engine) as conn:
        row = conn.execute(select(coupon_budgets).where(coupon_budgets.c.template == "money")).one()
        assert (row.redeemed, row.redeemed_money) == (2, 2000)


def test_concurrent_issuance_never_exceeds_the_count_budget(engine: Engine) -> None:
    program = make_program()  # "big_50_300": at most 3 issued
    members = [f"m{i:02d}" for i in range(30)]
    with transaction(engine) as conn:
        add_members(conn, *members)
    jobs: list[Callable[[Connection], object]] = [
        (
            lambda c, m=m: coupons.issue(
                c, program, "big_50_300", [m], key=f"k-{m}", at=T0, strict=True
            )
        )
        for m in members
    ]
    assert _race(engine, jobs) == Counter({"ok": 3, "budget_exhausted": 27})
    with transaction(engine) as conn:
        assert conn.execute(select(func.count()).select_from(coupons_table)).scalar_one() == 3


def test_concurrent_point_spends_never_overdraw(engine: Engine) -> None:
    program = make_program()
    with transaction(engine) as conn:
        add_members(conn, "m1")
        points.adjust(conn, program, "m1", 1000, reason="seed", key="seed", at=T0)
        points.adjust(conn, program, "m1", 15, reason="seed", key="seed2", at=T0)
    jobs: list[Callable[[Connection], object]] = [
        (lambda c, i=i: points.spend(c, "m1", 30, reason="gift", key=f"s{i}", at=T0))
        for i in range(100)
    ]
    # Orders paying with points race with them too.
    jobs += [
        (lambda c, i=i: orders.place(c, program, order(f"p{i}", price=100, points=50), at=T0))
        for i in range(20)
    ]
    outcomes = _race(engine, jobs)
    assert outcomes["ok"] + outcomes["insufficient_points"] == 120
    with transaction(engine) as conn:
        balance = points.balance_of(conn, "m1")
        placed = conn.execute(select(func.count()).select_from(orders_table)).scalar_one()
        spent = 1015 - balance.available
        assert spent == 30 * (outcomes["ok"] - placed) + 50 * placed
        assert 0 <= balance.available < 30
        check_invariants(conn)


def test_a_duplicated_order_is_placed_once(engine: Engine) -> None:
    program = make_program()
    with transaction(engine) as conn:
        add_members(conn, "m1")
    jobs: list[Callable[[Connection], object]] = [
        (lambda c: orders.place(c, program, order("same", price=10_000), at=T0)) for _ in range(30)
    ]
    assert _race(engine, jobs) == Counter({"ok": 30})
    with transaction(engine) as conn:
        assert points.balance_of(conn, "m1").pending == 100
        check_invariants(conn)
