"""The coupon ledger: issuance (idempotent, per-member limit, count budget, tiers), pricing,
redemption exactly once, money budget, stacking, expiry, buying with points."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Connection

from memberwise.ledger import coupons, orders, points
from memberwise.ledger.schemas import OrderItem, RefundIn
from memberwise.ledger.service import (
    BudgetExhausted,
    CouponAlreadyRedeemed,
    CouponExpired,
    CouponNotApplicable,
    CouponNotFound,
    CouponTemplateNotFound,
    InsufficientPoints,
    NotForPoints,
    OrderNotFound,
    PerMemberLimit,
)
from memberwise.program.ledger import CouponTemplate
from tests.ledger.factories import T0, add_members, check_invariants, make_program, order


def _one(conn: Connection, template: str, member_id: str = "m1", key: str = "k") -> str:
    out = coupons.issue(conn, make_program(), template, [member_id], key=key, at=T0)
    assert out.refused == {}, out.refused
    return out.coupons[0].coupon_id


def test_templates_are_validated() -> None:
    with pytest.raises(ValueError, match="min_spend must be above"):
        CouponTemplate.model_validate(
            {"kind": "threshold", "amount": 5000, "min_spend": 3000, "valid_days": 3}
        )
    with pytest.raises(ValueError, match="never expire"):
        CouponTemplate.model_validate({"kind": "amount_off", "amount": 100})
    with pytest.raises(ValueError, match="needs a percent"):
        CouponTemplate.model_validate({"kind": "percent_off", "valid_days": 3})


def test_discounts_per_kind() -> None:
    items = [
        OrderItem(item_id="a", category="food", price=20_000),
        OrderItem(item_id="b", category="toys", price=15_000),
    ]

    def t(**kw: object) -> CouponTemplate:
        return CouponTemplate.model_validate({"valid_days": 1, **kw})

    assert coupons.discount_for(t(kind="amount_off", amount=1000), items, 0) == (1000, 0)
    assert coupons.discount_for(t(kind="threshold", amount=5000, min_spend=30_000), items, 0) == (
        5000,
        0,
    )
    # Only food counts toward the threshold: 200 CNY < 300 CNY.
    assert (
        coupons.discount_for(
            t(kind="threshold", amount=5000, min_spend=30_000, categories=["food"]), items, 0
        )
        is None
    )
    assert coupons.discount_for(t(kind="percent_off", percent=10), items, 0) == (3500, 0)
    assert coupons.discount_for(t(kind="percent_off", percent=10, max_discount=2000), items, 0) == (
        2000,
        0,
    )
    assert coupons.discount_for(t(kind="free_shipping"), items, 800) == (0, 800)
    assert coupons.discount_for(t(kind="free_shipping"), items, 0) is None
    assert coupons.discount_for(t(kind="amount_off", amount=99_999), items, 0) == (35_000, 0)


def test_issue_is_idempotent_by_key_and_respects_the_per_member_limit(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1", "m2")
    first = coupons.issue(conn, program, "single", ["m1", "m2"], key="batch-1", at=T0)
    again = coupons.issue(conn, program, "single", ["m2", "m1"], key="batch-1", at=T0)
    assert first.issued == again.issued == 2
    assert [c.coupon_id for c in first.coupons] == [c.coupon_id for c in again.coupons]
    other = coupons.issue(conn, program, "single", ["m1", "ghost"], key="batch-2", at=T0)
    assert (other.issued, other.refused) == (
        0,
        {"m1": "per_member_limit", "ghost": "member_not_found"},
    )
    with pytest.raises(PerMemberLimit):
        coupons.issue(conn, program, "single", ["m1"], key="batch-3", at=T0, strict=True)
    with pytest.raises(CouponTemplateNotFound):
        coupons.issue(conn, program, "nope", ["m1"], key="x", at=T0)


def test_count_budget_is_never_exceeded(conn: Connection) -> None:
    program = make_program()
    add_members(conn, *[f"m{i}" for i in range(5)])
    out = coupons.issue(conn, program, "big_50_300", [f"m{i}" for i in range(5)], key="b", at=T0)
    assert out.issued == 3
    assert out.refused == {"m3": "budget_exhausted", "m4": "budget_exhausted"}
    with pytest.raises(BudgetExhausted):
        coupons.issue(conn, program, "big_50_300", ["m4"], key="c", at=T0, strict=True)
    [t] = [t for t in coupons.templates(conn, program) if t.name == "big_50_300"]
    assert (t.issued, t.budget_count) == (3, 3)


def test_tier_restricted_template_needs_the_tier(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1", "m2")
    out = coupons.issue(conn, program, "gold_only", ["m1"], key="g", at=T0)
    assert out.refused == {"m1": "coupon_not_applicable"}


def test_a_coupon_is_redeemed_once_and_the_order_is_refused_whole(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1", "m2")
    coupon = _one(conn, "ten_off")
    placed, _ = orders.place(conn, program, order("o1", coupons=[coupon]), at=T0)
    assert (placed.coupon_discount, placed.paid, placed.points_earned) == (1000, 9000, 90)
    with pytest.raises(CouponAlreadyRedeemed):
        orders.place(conn, program, order("o2", coupons=[coupon]), at=T0)
    assert orders.get(conn, "o1").order_id == "o1"
    with pytest.raises(OrderNotFound):  # the refused order left nothing behind
        orders.get(conn, "o2")
    with pytest.raises(CouponNotFound):
        orders.place(conn, program, order("o3", "m2", coupons=[coupon]), at=T0)
    check_invariants(conn)


def test_expired_and_not_applicable_coupons_are_refused(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1")
    coupon = _one(conn, "ten_off")
    with pytest.raises(CouponExpired):
        orders.place(conn, program, order("o1", coupons=[coupon]), at=T0 + timedelta(days=31))
    assert coupons.expire_due(conn, at=T0 + timedelta(days=31)) == 1
    with pytest.raises(CouponExpired):
        orders.place(conn, program, order("o1", coupons=[coupon]), at=T0)
    big = _one(conn, "ship", key="s")
    with pytest.raises(CouponNotApplicable):
        orders.place(conn, program, order("o2", coupons=[big]), at=T0)  # no shipping fee
    placed, _ = orders.place(conn, program, order("o2", coupons=[big], shipping_fee=600), at=T0)
    assert (placed.shipping_discount, placed.paid) == (600, 10_000)


def test_stacking_rules(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1")
    pct = _one(conn, "pct", key="a")
    ship = _one(conn, "ship", key="b")
    ten = _one(conn, "ten_off", key="c")
    with pytest.raises(CouponNotApplicable, match="cannot be combined"):
        orders.place(conn, program, order("o1", coupons=[pct, ten]), at=T0)
    placed, _ = orders.place(
        conn, program, order("o1", coupons=[pct, ship], shipping_fee=500, price=30_000), at=T0
    )
    assert (placed.coupon_discount, placed.shipping_discount, placed.paid) == (2000, 500, 28_000)


def test_money_budget_is_never_exceeded_and_freed_by_a_full_refund(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1", "m2", "m3")
    ids = [_one(conn, "money", m, key="money") for m in ("m1", "m2", "m3")]
    orders.place(conn, program, order("o1", "m1", coupons=[ids[0]]), at=T0)
    orders.place(conn, program, order("o2", "m2", coupons=[ids[1]]), at=T0)
    # A refusal rolls back the whole order, as the API's unit of work does (a savepoint here).
    with pytest.raises(BudgetExhausted), conn.begin_nested():
        orders.place(conn, program, order("o3", "m3", coupons=[ids[2]]), at=T0)
    orders.refund(conn, program, "o1", RefundIn(refund_id="r1", full=True), at=T0)
    placed, created = orders.place(conn, program, order("o3", "m3", coupons=[ids[2]]), at=T0)
    assert placed.coupon_discount == 1000 and created
    [t] = [t for t in coupons.templates(conn, program) if t.name == "money"]
    assert (t.redeemed, t.redeemed_money) == (2, 2000)


def test_coupons_are_bought_with_points_or_refused_whole(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1")
    points.adjust(conn, program, "m1", 500, reason="seed", key="seed", at=T0)
    out = coupons.buy(conn, program, "m1", "shop", key="buy-1", at=T0)
    assert out.coupon is not None and out.coupon.source == "points"
    assert out.change.points == -300 and out.change.balance.available == 200
    with pytest.raises(InsufficientPoints):
        coupons.buy(conn, program, "m1", "shop", key="buy-2", at=T0)
    with pytest.raises(NotForPoints):
        coupons.buy(conn, program, "m1", "ten_off", key="buy-3", at=T0)
    check_invariants(conn)


def test_gold_members_may_use_gold_coupons(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1")
    # Issued while the template had no tier restriction; the program now restricts it.
    open_program = program.model_copy(
        update={"coupons": {**program.coupons, "gold_only": program.coupons["ten_off"]}}
    )
    issued = coupons.issue(conn, open_program, "gold_only", ["m1"], key="x", at=T0)
    coupon = issued.coupons[0].coupon_id
    with pytest.raises(CouponNotApplicable, match="other tiers"):
        orders.place(conn, program, order("o1", coupons=[coupon]), at=T0)
    placed, _ = orders.place(conn, program, order("o1", coupons=[coupon]), tier="gold", at=T0)
    assert placed.coupon_discount == 300


def test_coupon_past_its_end_is_restored_expired(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1")
    coupon = _one(conn, "ten_off")
    orders.place(conn, program, order("o1", coupons=[coupon]), at=T0)
    later = T0 + timedelta(days=40)
    out, _ = orders.refund(conn, program, "o1", RefundIn(refund_id="r1", full=True), at=later)
    assert out.coupons_restored == [coupon]
    [c], _ = coupons.member_coupons(conn, "m1")
    assert c.status == "expired"
    kept = _one(conn, "keep", key="keep")
    orders.place(conn, program, order("o2", coupons=[kept]), at=T0)
    out, _ = orders.refund(conn, program, "o2", RefundIn(refund_id="r2", full=True), at=T0)
    assert out.coupons_restored == []
