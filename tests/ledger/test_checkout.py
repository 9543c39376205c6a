"""The checkout quote: member prices, the best coupon combination, shipping and points, with
exact values; and the route, which changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from memberwise.ledger import checkout
from memberwise.ledger.checkout import Candidate, CartItem, HeldCoupon, QuoteIn, quote_cart
from memberwise.ledger.tables import benefit_uses, coupons, points_balances
from memberwise.privacy.schemas import Role
from memberwise.program.schemas import Program
from memberwise.program.service import parse_program

AT = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)
LATER = AT + timedelta(days=30)
SOONER = AT + timedelta(days=10)

PROGRAM = """
name: checkout
benefits:
  member_price: {kind: member_price, percent_off: 5, categories: [美妆], brands: [Apple]}
  free_shipping: {kind: free_shipping, min_order: 9900}
coupons:
  ten_off: {kind: amount_off, amount: 1000, valid_days: 30, stackable: true}
  big_50_300: {kind: threshold, amount: 5000, min_spend: 30000, valid_days: 30, stackable: true}
  vip_10pct: {kind: percent_off, percent: 10, max_discount: 3000, valid_days: 30}
  ship: {kind: free_shipping, valid_days: 30, stackable: true}
  beauty_20:
    {kind: amount_off, amount: 2000, categories: [美妆], valid_days: 30, stackable: true,
     with_points: false}
  gold_only: {kind: amount_off, amount: 9000, valid_days: 30, tiers: [gold]}
"""


@pytest.fixture(scope="module")
def program() -> Program:
    return parse_program(PROGRAM)


def cart(shipping: int = 800) -> QuoteIn:
    return QuoteIn(
        member_id="m1",
        shipping_fee=shipping,
        items=[
            CartItem(item_id="A", category="美妆", brand="X", price=19900, quantity=1),
            CartItem(item_id="B", category="数码", brand="Apple", price=49900, quantity=1),
            CartItem(item_id="C", category="食品", brand="Y", price=1999, quantity=3),
        ],
    )


def held(coupon_id: str, template: str, until: datetime = LATER) -> HeldCoupon:
    return HeldCoupon(coupon_id, template, AT - timedelta(days=1), until)


ALL_COUPONS = [
    held("c1", "ten_off"),
    held("c2", "ten_off", SOONER),
    held("c3", "big_50_300"),
    held("c4", "vip_10pct"),
    held("c5", "ship"),
    held("c6", "beauty_20"),
]


def test_member_prices_round_half_up_and_take_category_or_brand(program: Program) -> None:
    q = quote_cart(
        program,
        cart(),
        held=["member_price"],
        tier=None,
        held_coupons=[],
        available_points=0,
        at=AT,
    )
    # A: 19900 - 995 (5 %, by category); B: 49900 - 2495 (by brand); C: no member price.
    assert [(ln.item_id, ln.member_price, ln.total, ln.benefit) for ln in q.lines] == [
        ("A", 18905, 18905, "member_price"),
        ("B", 47405, 47405, "member_price"),
        ("C", 1999, 5997, None),
    ]
    assert (q.goods_total, q.member_price_discount, q.goods_member_total) == (75797, 3490, 72307)
    # No free-shipping benefit held: shipping is charged.
    assert (q.free_shipping, q.shipping_discount, q.payable) == (False, 0, 72307 + 800)


def test_member_price_rounding_of_odd_fen(program: Program) -> None:
    benefit = program.benefits["member_price"]
    # 5 % of 1990 = 99.5 -> 100 (half up); of 1989 = 99.45 -> 99.
    assert benefit.unit_price(1990) == 1890  # type: ignore[union-attr]
    assert benefit.unit_price(1989) == 1890  # type: ignore[union-attr]


def test_best_combination_stacks_and_prefers_the_sooner_expiring_twin(program: Program) -> None:
    q = quote_cart(
        program,
        cart(),
        held=["member_price", "free_shipping"],
        tier=None,
        held_coupons=ALL_COUPONS,
        available_points=100_000,
        at=AT,
    )
    by_id = {c.coupon_id: (c.discount, c.applicable, c.reason) for c in q.coupons}
    assert by_id == {
        "c1": (1000, True, None),
        "c2": (1000, True, None),
        "c3": (5000, True, None),
        "c4": (3000, True, None),  # 10 % of 72307 = 7230, capped at 3000
        "c5": (0, False, "shipping is already free"),
        "c6": (2000, True, None),  # on the 美妆 line only
    }
    # Stackable ten_off + big_50_300 + beauty_20 (8000) beat vip_10pct alone (3000); of the
    # two ten_off coupons the one expiring sooner is used.
    assert q.best_coupons == ["c2", "c3", "c6"]
    assert (q.coupon_discount, q.free_shipping, q.shipping_discount) == (8000, True, 800)
    # beauty_20 refuses points: none usable with this combination.
    assert (q.points.usable, q.points.value, q.payable, q.payable_with_points) == (
        0,
        0,
        64307,
        64307,
    )


def test_points_usable_up_to_the_share_of_what_is_left(program: Program) -> None:
    q = quote_cart(
        program,
        cart(),
        held=["member_price", "free_shipping"],
        tier=None,
        held_coupons=[c for c in ALL_COUPONS if c.coupon_id != "c6"],
        available_points=100_000,
        at=AT,
    )
    assert (q.best_coupons, q.coupon_discount, q.payable) == (["c2", "c3"], 6000, 66307)
    # Half of 66307 fen, at 1 fen a point, rounded down.
    assert (q.points.available, q.points.usable, q.points.value) == (100_000, 33153, 33153)
    assert q.payable_with_points == 33154


def test_points_limited_by_the_balance(program: Program) -> None:
    q = quote_cart(
        program, cart(), held=[], tier=None, held_coupons=[], available_points=1234, at=AT
    )
    assert (q.points.usable, q.points.value, q.payable_with_points) == (1234, 1234, 76597 - 1234)


def test_non_stackable_alone_when_it_beats_the_stack(program: Program) -> None:
    q = quote_cart(
        program,
        cart(),
        held=[],
        tier=None,
        held_coupons=[held("c1", "ten_off"), held("c4", "vip_10pct")],
        available_points=0,
        at=AT,
    )
    assert (q.best_coupons, q.coupon_discount) == (["c4"], 3000)


def test_free_shipping_coupon_pays_shipping_when_the_benefit_does_not(program: Program) -> None:
    q = quote_cart(
        program,
        cart(shipping=1200),
        held=[],
        tier=None,
        held_coupons=[held("c3", "big_50_300"), held("c5", "ship")],
        available_points=0,
        at=AT,
    )
    assert (q.best_coupons, q.coupon_discount, q.shipping_discount) == (["c3", "c5"], 5000, 1200)
    assert q.payable == 75797 - 5000


def test_min_spend_boundary_tier_and_validity_reasons(program: Program) -> None:
    def one_item(price: int) -> QuoteIn:
        return QuoteIn(member_id="m1", items=[CartItem(item_id="Z", price=price, quantity=1)])

    coupons_ = [
        held("c3", "big_50_300"),
        held("g", "gold_only"),
        held("old", "ten_off", AT),  # valid until exactly now: expired
    ]
    below = quote_cart(
        program,
        one_item(29999),
        held=[],
        tier=None,
        held_coupons=coupons_,
        available_points=0,
        at=AT,
    )
    assert [(c.coupon_id, c.applicable, c.reason) for c in below.coupons] == [
        ("c3", False, "needs 30000 fen of eligible goods, the cart has 29999"),
        ("g", False, "for members of tier gold"),
        ("old", False, "expired"),
    ]
    assert below.best_coupons == []
    at_min = quote_cart(
        program,
        one_item(30000),
        held=[],
        tier="gold",
        held_coupons=coupons_,
        available_points=0,
        at=AT,
    )
    # gold_only (9000, alone) beats big_50_300 (5000).
    assert [(c.coupon_id, c.discount) for c in at_min.coupons if c.applicable] == [
        ("c3", 5000),
        ("g", 9000),
    ]
    assert (at_min.best_coupons, at_min.coupon_discount) == (["g"], 9000)


def test_the_search_spends_the_least_face_value_for_the_same_saving() -> None:
    def c(cid: str, discount: int) -> Candidate:
        return Candidate(cid, cid, True, True, False, discount, LATER)

    best = checkout.best_combination([c("a", 6000), c("b", 5000), c("c", 4500)], 10_000, 0)
    # {a, b} and {a, c} both save all 10000; {a, c} spends 10500 of face value, not 11000.
    assert ([x.coupon_id for x in best.coupons], best.goods_discount) == (["a", "c"], 10_000)


def test_cart_validation() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        QuoteIn(
            member_id="m1",
            items=[
                CartItem(item_id="A", price=1, quantity=1),
                CartItem(item_id="A", price=1, quantity=2),
            ],
        )


# -- through the API ---------------------------------------------------------------------------

Auth = Callable[[Role], dict[str, str]]


def test_quote_route_answers_and_changes_nothing(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    member = client.post("/v1/members", json={"member_id": "q1"}, headers=auth(Role.platform))
    assert member.status_code == 201
    body = cart().model_dump(mode="json") | {"member_id": "q1"}

    def counts() -> tuple[int, int, int]:
        with engine.connect() as conn:
            return tuple(  # type: ignore[return-value]
                conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (coupons, points_balances, benefit_uses)
            )

    before = counts()
    response = client.post("/v1/checkout/quote", json=body, headers=auth(Role.platform))
    assert response.status_code == 200, response.text
    answer = response.json()
    # The built-in program grants nothing: list prices, shipping charged, no coupons or points.
    assert (answer["goods_member_total"], answer["payable"], answer["best_coupons"]) == (
        75797,
        76597,
        [],
    )
    assert answer["points"] == {"available": 0, "usable": 0, "value": 0, "point_value": 1}
    assert counts() == before

    unknown = client.post(
        "/v1/checkout/quote", json=body | {"member_id": "nobody"}, headers=auth(Role.platform)
    )
    assert (unknown.status_code, unknown.json()["code"]) == (404, "member_not_found")
    bad = client.post("/v1/checkout/quote", json=body | {"items": []}, headers=auth(Role.platform))
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_request")


def test_member_price_without_categories_or_brands_covers_every_item() -> None:
    program = parse_program("name: x\nbenefits:\n  mp: {kind: member_price, percent_off: 12.5}\n")
    q = quote_cart(
        program, cart(), held=["mp"], tier=None, held_coupons=[], available_points=0, at=AT
    )
    # 12.5 % of 19900 = 2487.5 -> 2488; of 49900 = 6237.5 -> 6238; of 1999 = 249.875 -> 250.
    assert [ln.member_price for ln in q.lines] == [17412, 43662, 1749]
    assert q.member_price_discount == 2488 + 6238 + 250 * 3
