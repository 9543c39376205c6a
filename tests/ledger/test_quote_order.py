"""The checkout quote and the order agree: the order placed right after a quote, with the
quote's member prices, best coupons and usable points, charges exactly what the quote said
(free shipping included), on both stores."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memberwise.kit.db import transaction
from memberwise.ledger import coupons, points
from memberwise.membership import grants as membership_grants
from memberwise.membership.schemas import TierGrant
from memberwise.privacy.crypto import FieldCipher
from memberwise.privacy.schemas import SYSTEM, Role
from memberwise.program.schemas import Program
from memberwise.program.service import parse_program
from memberwise.runtime import Runtime
from tests.members.factories import create_member

PROGRAM = """
name: quote_order
benefits:
  member_price: {kind: member_price, percent_off: 5, categories: [beauty]}
  free_shipping: {kind: free_shipping, min_order: 9900}
points: {point_value: 1, max_payment_share: 0.5}
coupons:
  ten_off: {kind: amount_off, amount: 1000, valid_days: 30, stackable: true}
  fifty_off_300: {kind: threshold, amount: 5000, min_spend: 30000, valid_days: 30, stackable: true}
  pct_10: {kind: percent_off, percent: 10, max_discount: 3000, valid_days: 30}
  ship: {kind: free_shipping, valid_days: 30, stackable: true}
  beauty_20:
    {kind: amount_off, amount: 2000, categories: [beauty], valid_days: 30, stackable: true,
     with_points: false}
tiers:
  - {name: member}
  - {name: vip, manual: true, benefits: [member_price, free_shipping]}
"""
TEMPLATES = ["ten_off", "fifty_off_300", "pct_10", "ship", "beauty_20"]
Auth = Callable[[Role], dict[str, str]]

items = st.lists(
    st.tuples(
        st.sampled_from(["beauty", "food", "tech"]),
        st.integers(min_value=1, max_value=60_000),
        st.integers(min_value=1, max_value=4),
    ),
    min_size=1,
    max_size=5,
)
cases = st.fixed_dictionaries(
    {
        "items": items,
        "shipping_fee": st.sampled_from([0, 600, 800, 1500]),
        "vip": st.booleans(),
        "coupons": st.lists(st.sampled_from(TEMPLATES), max_size=6),
        "points": st.sampled_from([0, 1, 500, 100_000]),
        "pay_with_points": st.booleans(),
    }
)


_EXAMPLES = itertools.count()


@pytest.fixture
def program() -> Program:
    return parse_program(PROGRAM)


@pytest.fixture
def api(client: TestClient, runtime: Runtime, tmp_path: Path) -> TestClient:
    path = tmp_path / "program.yaml"
    path.write_text(PROGRAM)
    runtime.settings.program_file = path
    return client


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases)
def test_the_order_after_a_quote_charges_the_quotes_payable(
    case: dict[str, object],
    api: TestClient,
    runtime: Runtime,
    program: Program,
    auth: Auth,
) -> None:
    n = next(_EXAMPLES)  # the store lives across examples: fresh ids each time
    member = f"qo{n}"
    with transaction(runtime.engine) as conn:
        create_member(conn, FieldCipher(bytes(range(32))), member)
        if case["vip"]:
            membership_grants.grant(
                conn, program, member, TierGrant(tier="vip", reason="t"), actor=SYSTEM
            )
        for i, template in enumerate(case["coupons"]):  # type: ignore[arg-type]
            coupons.issue(conn, program, template, [member], key=f"{member}:{i}")
        if case["points"]:
            points.adjust(conn, program, member, case["points"], reason="test", key=member)  # type: ignore[arg-type]
    cart = {
        "member_id": member,
        "shipping_fee": case["shipping_fee"],
        "items": [
            {"item_id": f"i{k}", "category": category, "price": price, "quantity": quantity}
            for k, (category, price, quantity) in enumerate(case["items"])  # type: ignore[arg-type]
        ],
    }
    platform = auth(Role.platform)
    quote = api.post("/v1/checkout/quote", json=cart, headers=platform)
    assert quote.status_code == 200, quote.text
    q = quote.json()
    used = q["points"]["usable"] if case["pay_with_points"] else 0
    order = {
        "order_id": f"o{n}",
        "member_id": member,
        "shipping_fee": case["shipping_fee"],
        "items": [
            {**item, "price": line["member_price"]}
            for item, line in zip(cart["items"], q["lines"], strict=True)  # type: ignore[call-overload]
        ],
        "coupon_ids": q["best_coupons"],
        "points": used,
    }
    placed = api.post("/v1/orders", json=order, headers=platform)

    assert placed.status_code == 201, placed.text
    o = placed.json()
    assert o["paid"] == (q["payable_with_points"] if used else q["payable"])
    assert (o["coupon_discount"], o["shipping_discount"]) == (
        q["coupon_discount"],
        q["shipping_discount"],
    )
    assert o["goods_amount"] == q["goods_member_total"]


def test_free_shipping_of_the_quote_is_given_by_the_order(
    api: TestClient, runtime: Runtime, program: Program, auth: Auth
) -> None:
    """The case of the issue: the quote said free_shipping, the order charged 800."""
    with transaction(runtime.engine) as conn:
        create_member(conn, FieldCipher(bytes(range(32))), "fs1")
        membership_grants.grant(
            conn, program, "fs1", TierGrant(tier="vip", reason="t"), actor=SYSTEM
        )
        coupons.issue(conn, program, "ship", ["fs1"], key="fs1")
    platform = auth(Role.platform)
    cart = {
        "member_id": "fs1",
        "shipping_fee": 800,
        "items": [{"item_id": "a", "category": "food", "price": 12000, "quantity": 1}],
    }
    q = api.post("/v1/checkout/quote", json=cart, headers=platform).json()
    assert (q["free_shipping"], q["shipping_discount"], q["payable"]) == (True, 800, 12000)
    order = {**cart, "order_id": "fso1"}
    del order["member_id"]
    placed = api.post("/v1/orders", json={**order, "member_id": "fs1"}, headers=platform).json()
    assert (placed["shipping_fee"], placed["shipping_discount"], placed["paid"]) == (
        800,
        800,
        12000,
    )
    # The free-shipping coupon has nothing left to pay: the order says so, as the quote did.
    ship = next(c for c in q["coupons"] if c["template"] == "ship")
    assert (ship["applicable"], ship["reason"]) == (False, "shipping is already free")
    refused = api.post(
        "/v1/orders",
        json={**order, "order_id": "fso2", "member_id": "fs1", "coupon_ids": [ship["coupon_id"]]},
        headers=platform,
    )
    assert (refused.status_code, refused.json()["code"]) == (422, "coupon_not_applicable")
