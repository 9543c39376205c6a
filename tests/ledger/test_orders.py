"""Orders and refunds drive both ledgers: placing (atomic, idempotent), refunds (pro rata, the
shortfall rule, idempotent), completion; and the HTTP API end to end."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, insert, select

from memberwise.kit.db import transaction
from memberwise.ledger import coupons, fast_repository, orders, points
from memberwise.ledger.schemas import RefundIn
from memberwise.ledger.service import (
    CouponAlreadyRedeemed,
    InsufficientPoints,
    MemberUnknown,
    OrderExists,
    OrderRefunded,
    PointsNotAllowed,
    RefundExists,
    RefundTooLarge,
)
from memberwise.membership.tables import member_tiers
from memberwise.privacy.schemas import Role
from memberwise.privacy.tables import audit_log
from memberwise.runtime import Runtime
from tests.ledger.factories import T0, add_members, check_invariants, make_program, order

Auth = Callable[[Role], dict[str, str]]


def _seed(conn: Connection, member_id: str, n: int) -> None:
    points.adjust(conn, make_program(), member_id, n, reason="seed", key=f"seed-{member_id}", at=T0)


def test_replaying_an_order_returns_it_and_a_different_one_is_refused(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1")
    first, created = orders.place(conn, program, order("o1", price=5000), at=T0)
    again, created_again = orders.place(conn, program, order("o1", price=5000), at=T0)
    assert (created, created_again) == (True, False)
    assert first == again
    assert points.balance_of(conn, "m1").pending == 50
    with pytest.raises(OrderExists):
        orders.place(conn, program, order("o1", price=5001), at=T0)
    with pytest.raises(MemberUnknown):
        orders.place(conn, program, order("o2", "ghost"), at=T0)
    check_invariants(conn)


def test_points_pay_up_to_the_share_and_earn_only_on_money(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1")
    _seed(conn, "m1", 6000)
    with pytest.raises(PointsNotAllowed):
        orders.place(conn, program, order("o1", price=10_000, points=5001), at=T0)
    placed, _ = orders.place(conn, program, order("o1", price=10_000, points=5000), at=T0)
    assert (placed.points_value, placed.paid, placed.points_earned) == (5000, 5000, 50)
    with pytest.raises(InsufficientPoints):
        orders.place(conn, program, order("o2", price=10_000, points=1001), at=T0)
    no_points = coupons.issue(conn, program, "no_points", ["m1"], key="np", at=T0).coupons[0]
    with pytest.raises(PointsNotAllowed):
        orders.place(conn, program, order("o3", coupons=[no_points.coupon_id], points=10), at=T0)
    assert points.balance_of(conn, "m1").model_dump() == {
        "member_id": "m1",
        "available": 1000,
        "pending": 50,
        "debt": 0,
    }
    check_invariants(conn)


def test_a_coupon_lost_to_a_concurrent_order_stops_the_writes_before_the_points(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a coupon that another order has used since this one read it (a stale read)
    program = make_program()
    add_members(conn, "m1")
    _seed(conn, "m1", 1000)
    coupon = coupons.issue(conn, program, "ten_off", ["m1"], key="k", at=T0).coupons[0]
    orders.place(conn, program, order("o1", coupons=[coupon.coupon_id]), at=T0)
    before = points.balance_of(conn, "m1")
    read = fast_repository.fast_prefetch

    def stale(*args: Any, **kwargs: Any) -> tuple[bool, bool, dict[str, Any] | None, str | None]:
        exists, known, row, tier = read(*args, **kwargs)
        assert row is not None
        return exists, known, {**row, "status": "issued"}, tier

    monkeypatch.setattr(fast_repository, "fast_prefetch", stale)
    # When an order pays with it and with points, then it is refused at the coupon's guarded
    # write, and the points' write after it was never made
    with pytest.raises(CouponAlreadyRedeemed):
        orders.place(conn, program, order("o2", coupons=[coupon.coupon_id], points=100), at=T0)
    assert points.balance_of(conn, "m1") == before


def test_partial_refunds_take_back_points_pro_rata_and_add_up_to_the_whole(
    conn: Connection,
) -> None:
    program = make_program()
    add_members(conn, "m1")
    _seed(conn, "m1", 3000)
    placed, _ = orders.place(conn, program, order("o1", price=10_001, points=3000), at=T0)
    assert (placed.paid, placed.points_earned) == (7001, 70)
    r1, _ = orders.refund(conn, program, "o1", RefundIn(refund_id="r1", amount=2000), at=T0)
    # 70 x 2000/7001 = 19.997 -> 20 back; 3000 x 2000/7001 = 857.02 -> 857 restored.
    assert (r1.points_reversed, r1.points_restored, r1.order.status) == (
        20,
        857,
        "partially_refunded",
    )
    r2, _ = orders.refund(conn, program, "o1", RefundIn(refund_id="r2", amount=5001), at=T0)
    assert (r2.points_reversed, r2.points_restored, r2.order.status) == (50, 2143, "refunded")
    assert r2.order.refunded == 7001
    assert points.balance_of(conn, "m1").model_dump() == {
        "member_id": "m1",
        "available": 3000,
        "pending": 0,
        "debt": 0,
    }
    with pytest.raises(OrderRefunded):
        orders.refund(conn, program, "o1", RefundIn(refund_id="r3", amount=1), at=T0)
    check_invariants(conn)


def test_refunds_are_idempotent_and_bounded(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1")
    orders.place(conn, program, order("o1", price=10_000), at=T0)
    with pytest.raises(RefundTooLarge):
        orders.refund(conn, program, "o1", RefundIn(refund_id="r1", amount=10_001), at=T0)
    first, made = orders.refund(conn, program, "o1", RefundIn(refund_id="r1", amount=3000), at=T0)
    again, made_again = orders.refund(
        conn, program, "o1", RefundIn(refund_id="r1", amount=3000), at=T0
    )
    assert (made, made_again) == (True, False)
    assert again.points_reversed == first.points_reversed == 30
    assert again.order.refunded == 3000
    with pytest.raises(RefundExists):
        orders.refund(conn, program, "o1", RefundIn(refund_id="r1", amount=3001), at=T0)
    assert points.balance_of(conn, "m1").pending == 70
    check_invariants(conn)


def test_spent_points_are_deducted_from_the_refund_by_default(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1")
    orders.place(conn, program, order("o1", price=10_000), at=T0)
    orders.complete(conn, "o1", at=T0 + timedelta(days=1))
    points.spend(conn, "m1", 90, reason="gift", key="gift", at=T0 + timedelta(days=2))
    out, _ = orders.refund(
        conn, program, "o1", RefundIn(refund_id="r1", full=True), at=T0 + timedelta(days=3)
    )
    assert (out.points_reversed, out.points_shortfall, out.refund_deduction) == (100, 90, 90)
    assert points.balance_of(conn, "m1").model_dump() == {
        "member_id": "m1",
        "available": 0,
        "pending": 0,
        "debt": 0,
    }
    check_invariants(conn)


def test_spent_points_become_debt_repaid_by_the_next_points(conn: Connection) -> None:
    program = make_program(refund_shortfall="debt")
    add_members(conn, "m1")
    orders.place(conn, program, order("o1", price=10_000), at=T0)
    orders.complete(conn, "o1", at=T0 + timedelta(days=1))
    points.spend(conn, "m1", 90, reason="gift", key="gift", at=T0 + timedelta(days=2))
    out, _ = orders.refund(
        conn, program, "o1", RefundIn(refund_id="r1", full=True), at=T0 + timedelta(days=3)
    )
    assert (out.points_shortfall, out.refund_deduction) == (90, 0)
    assert points.balance_of(conn, "m1").debt == 90
    points.adjust(conn, program, "m1", 50, reason="goodwill", key="a1", at=T0 + timedelta(days=4))
    assert (points.balance_of(conn, "m1").available, points.balance_of(conn, "m1").debt) == (0, 40)
    orders.place(conn, program, order("o2", price=10_000), at=T0 + timedelta(days=5))
    assert points.mature_due(conn, at=T0 + timedelta(days=13)) == 100
    assert points.balance_of(conn, "m1").model_dump() == {
        "member_id": "m1",
        "available": 60,
        "pending": 0,
        "debt": 0,
    }
    check_invariants(conn)


def test_a_full_refund_gives_coupons_back_and_every_write_is_audited(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1")
    coupon = coupons.issue(conn, program, "ten_off", ["m1"], key="k", at=T0).coupons[0].coupon_id
    orders.place(conn, program, order("o1", coupons=[coupon]), at=T0)
    out, _ = orders.refund(conn, program, "o1", RefundIn(refund_id="r1", full=True), at=T0)
    assert out.coupons_restored == [coupon]
    placed, _ = orders.place(conn, program, order("o2", coupons=[coupon]), at=T0)
    assert placed.coupon_discount == 1000
    actions = conn.execute(
        select(audit_log.c.action, audit_log.c.subject_id).order_by(
            audit_log.c.ts, audit_log.c.audit_id
        )
    ).all()
    assert [tuple(a) for a in actions] == [
        ("coupons.issue", "ten_off"),
        ("orders.place", "o1"),
        ("points.reverse_refund", actions[2][1]),
        ("orders.refund", "o1"),
        ("orders.place", "o2"),
    ]


# -- the HTTP API --------------------------------------------------------------------------------

PROGRAM_YAML = """
name: api-test
points: {review: 20, pending_days: 7}
coupons:
  ten_off: {kind: amount_off, amount: 1000, valid_days: 30}
  shop: {kind: amount_off, amount: 500, valid_days: 30, points_price: 100}
"""


@pytest.fixture
def api(client: TestClient, runtime: Runtime, tmp_path: Path) -> TestClient:
    path = tmp_path / "program.yaml"
    path.write_text(PROGRAM_YAML)
    runtime.settings.program_file = path
    with transaction(runtime.engine) as conn:
        add_members(conn, "m1", "m2")
    return client


def test_api_orders_refunds_complete_and_points(api: TestClient, auth: Auth) -> None:
    platform = auth(Role.platform)
    body = {"order_id": "o1", "member_id": "m1", "items": [{"item_id": "i", "price": 12_000}]}
    first = api.post("/v1/orders", json=body, headers=platform)
    assert first.status_code == 201, first.text
    assert first.json()["points_earned"] == 120
    replay = api.post("/v1/orders", json=body, headers=platform)
    assert (replay.status_code, replay.json()) == (200, first.json())
    clash = api.post("/v1/orders", json={**body, "shipping_fee": 5}, headers=platform)
    assert (clash.status_code, clash.json()["code"]) == (409, "order_exists")
    points_page = api.get("/v1/members/m1/points", headers=auth(Role.service)).json()
    assert points_page["balance"] == {"member_id": "m1", "available": 0, "pending": 120, "debt": 0}
    assert [lot["status"] for lot in points_page["lots"]] == ["pending"]
    done = api.post("/v1/orders/o1/complete", headers=platform)
    assert (done.status_code, done.json()["status"]) == (200, "completed")
    refund = api.post(
        "/v1/orders/o1/refunds", json={"refund_id": "r1", "amount": 6000}, headers=platform
    )
    assert (refund.status_code, refund.json()["points_reversed"]) == (201, 60)
    again = api.post(
        "/v1/orders/o1/refunds", json={"refund_id": "r1", "amount": 6000}, headers=platform
    )
    assert again.status_code == 200 and again.json()["order"]["refunded"] == 6000
    too_much = api.post(
        "/v1/orders/o1/refunds", json={"refund_id": "r2", "amount": 6001}, headers=platform
    )
    assert (too_much.status_code, too_much.json()["code"]) == (422, "refund_exceeds_order")
    missing = api.post("/v1/orders/nope/complete", headers=platform)
    assert (missing.status_code, missing.json()["code"]) == (404, "order_not_found")
    bad = api.post("/v1/orders", json={**body, "order_id": "o2", "points": 10**6}, headers=platform)
    assert (bad.status_code, bad.json()["code"]) == (422, "points_not_allowed")
    got = api.get("/v1/orders/o1", headers=auth(Role.analyst)).json()
    assert (got["refunded"], got["points_reversed"]) == (6000, 60)
    assert (
        api.get("/v1/members/ghost/points", headers=platform).json()["code"] == "member_not_found"
    )


def test_api_adjustments_and_redemptions_answer_replays_with_the_first_answer(
    api: TestClient, auth: Auth
) -> None:
    staff = {**auth(Role.service), "Idempotency-Key": "adj-1"}
    body = {"points": 250, "reason": "late delivery"}
    first = api.post("/v1/members/m1/points/adjustments", json=body, headers=staff)
    assert first.status_code == 200, first.text
    again = api.post("/v1/members/m1/points/adjustments", json=body, headers=staff)
    assert again.json() == first.json()
    assert first.json()["balance"]["available"] == 250
    reused = api.post(
        "/v1/members/m1/points/adjustments", json={**body, "points": 1}, headers=staff
    )
    assert (reused.status_code, reused.json()["code"]) == (409, "idempotency_key_reused")
    no_key = api.post("/v1/members/m1/points/adjustments", json=body, headers=auth(Role.service))
    assert (no_key.status_code, no_key.json()["code"]) == (422, "invalid_request")
    platform = {**auth(Role.platform), "Idempotency-Key": "buy-1"}
    bought = api.post(
        "/v1/members/m1/points/redemptions", json={"coupon_template": "shop"}, headers=platform
    )
    assert bought.status_code == 200, bought.text
    assert bought.json()["change"]["balance"]["available"] == 150
    assert bought.json()["coupon"]["template"] == "shop"
    replay = api.post(
        "/v1/members/m1/points/redemptions", json={"coupon_template": "shop"}, headers=platform
    )
    assert replay.json() == bought.json()
    broke = api.post(
        "/v1/members/m1/points/redemptions",
        json={"points": 151, "reason": "mug"},
        headers={**auth(Role.platform), "Idempotency-Key": "gift-1"},
    )
    assert (broke.status_code, broke.json()["code"]) == (409, "insufficient_points")
    award = api.post(
        "/v1/members/m1/points/awards",
        json={"kind": "review", "source_id": "rev-9"},
        headers=auth(Role.platform),
    )
    assert award.json()["points"] == 20 and award.json()["balance"]["available"] == 170
    coupons_page = api.get("/v1/members/m1/coupons", headers=auth(Role.operator)).json()
    assert [c["template"] for c in coupons_page["items"]] == ["shop"]


def test_api_issuance_and_templates(api: TestClient, auth: Auth) -> None:
    operator = {**auth(Role.operator), "Idempotency-Key": "camp-1"}
    body = {"template": "ten_off", "member_ids": ["m1", "m2", "ghost"]}
    first = api.post("/v1/coupons/issuances", json=body, headers=operator)
    assert first.status_code == 200, first.text
    assert (first.json()["issued"], first.json()["refused"]) == (2, {"ghost": "member_not_found"})
    assert api.post("/v1/coupons/issuances", json=body, headers=operator).json() == first.json()
    unknown = api.post(
        "/v1/coupons/issuances",
        json={"template": "nope", "member_ids": ["m1"]},
        headers={**auth(Role.operator), "Idempotency-Key": "camp-2"},
    )
    assert (unknown.status_code, unknown.json()["code"]) == (404, "coupon_template_not_found")
    listed = api.get("/v1/coupons/templates", headers=auth(Role.analyst)).json()
    assert [(t["name"], t["issued"]) for t in listed] == [("ten_off", 2), ("shop", 0)]
    coupon = first.json()["coupons"][0]
    order_body = {
        "order_id": "o9",
        "member_id": coupon["member_id"],
        "items": [{"item_id": "i", "price": 3000}],
        "coupon_ids": [coupon["coupon_id"]],
    }
    placed = api.post("/v1/orders", json=order_body, headers=auth(Role.platform))
    assert placed.json()["paid"] == 2000
    twice = api.post(
        "/v1/orders", json={**order_body, "order_id": "o10"}, headers=auth(Role.platform)
    )
    assert (twice.status_code, twice.json()["code"]) == (409, "coupon_already_redeemed")


def test_points_paying_an_order_come_from_the_nearest_expiring_lots(conn: Connection) -> None:
    program = make_program(expiry="days", expiry_days=100)
    add_members(conn, "m1")
    for i, days in enumerate((30, 0, 10)):
        points.adjust(
            conn, program, "m1", 100, reason="seed", key=f"k{i}", at=T0 + timedelta(days=days)
        )
    orders.place(conn, program, order("o1", price=1000, points=150), at=T0 + timedelta(days=40))
    lots = points.points_of(conn, "m1").lots
    assert [(lot.points, lot.remaining, lot.status) for lot in lots] == [
        (100, 50, "available"),  # day 10's, after day 0's was used up
        (100, 100, "available"),  # day 30's
        (8, 8, "pending"),  # the order's: (1000 - 150) fen earn 8 points
    ]
    orders.place(conn, program, order("o2", price=1000, points=40), at=T0 + timedelta(days=41))
    assert [lot.remaining for lot in points.points_of(conn, "m1").lots][:2] == [10, 100]
    check_invariants(conn)


def test_a_points_multiplier_benefit_multiplies_what_an_order_earns() -> None:
    from decimal import Decimal

    from memberwise.ledger.orders import earn_for
    from memberwise.ledger.schemas import OrderItem
    from memberwise.program.ledger import PointsSettings

    items = [OrderItem(item_id="i1", price=12_345, quantity=1)]
    at = datetime(2026, 6, 1, tzinfo=UTC)
    plain = earn_for(PointsSettings(), items, 12_345, tier=None, at=at, timezone="Asia/Shanghai")
    doubled = earn_for(
        PointsSettings(),
        items,
        12_345,
        tier=None,
        at=at,
        timezone="Asia/Shanghai",
        bonus=Decimal(2),
    )
    assert (plain, doubled) == (123, 246)


def test_an_order_asks_the_members_tier_in_its_first_read(conn: Connection) -> None:
    program = make_program()  # gold earns twice the points
    add_members(conn, "m1", "m2")
    conn.execute(
        insert(member_tiers).values(
            member_id="m1",
            tier="gold",
            source="manual",
            since=T0,
            until=None,
            score=0,
            details="{}",
            updated_at=T0,
        )
    )
    gold, _ = orders.place(conn, program, order("o1", "m1"), lookup_tier=True, at=T0)
    plain, _ = orders.place(conn, program, order("o2", "m2"), lookup_tier=True, at=T0)
    told, _ = orders.place(conn, program, order("o3", "m2"), tier="gold", at=T0)
    assert (gold.points_earned, plain.points_earned, told.points_earned) == (200, 100, 200)


def test_api_a_members_orders_newest_first_with_refunds_and_pages(
    api: TestClient, auth: Auth
) -> None:
    platform = auth(Role.platform)
    for n, day in ((1, 1), (2, 3), (3, 3), (4, 5)):
        body = {
            "order_id": f"o{n}",
            "member_id": "m1",
            "items": [{"item_id": "i", "price": 1_000 * n}],
            "placed_at": f"2026-11-0{day}T10:00:00Z",
        }
        assert api.post("/v1/orders", json=body, headers=platform).status_code == 201
    other = {"order_id": "x", "member_id": "m2", "items": [{"item_id": "i", "price": 5}]}
    assert api.post("/v1/orders", json=other, headers=platform).status_code == 201
    for refund_id, amount in (("r1", 500), ("r2", 1_000)):
        refund = {"refund_id": refund_id, "amount": amount, "at": "2026-11-06T00:00:00Z"}
        api.post("/v1/orders/o2/refunds", json=refund, headers=platform)

    first = api.get("/v1/members/m1/orders?limit=3", headers=auth(Role.service)).json()
    # o2 and o3 share a time: the larger id first, so the order of a page never changes.
    assert [o["order_id"] for o in first["items"]] == ["o4", "o3", "o2"]
    o2 = first["items"][2]
    assert (o2["status"], o2["refunded"]) == ("partially_refunded", 1_500)
    assert [(r["refund_id"], r["amount"], r["points_reversed"]) for r in o2["refunds"]] == [
        ("r1", 500, 5),
        ("r2", 1_000, 10),
    ]
    assert first["items"][0]["refunds"] == []
    rest = api.get(f"/v1/members/m1/orders?limit=3&after={first['next_cursor']}", headers=platform)
    assert ([o["order_id"] for o in rest.json()["items"]], rest.json()["next_cursor"]) == (
        ["o1"],
        None,
    )
    missing = api.get("/v1/members/nobody/orders", headers=platform)
    assert (missing.status_code, missing.json()["code"]) == (404, "member_not_found")
    bad = api.get("/v1/members/m1/orders?after=bm90LWEta2V5", headers=platform)
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_cursor")
