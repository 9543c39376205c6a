"""Benefits: the catalog's validation, and the counters behind express refunds, return cards,
monthly coupons and partner perks -- exact at their limits, idempotent, and exact under
concurrency."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, func, select, update

from memberwise.kit.db import transaction
from memberwise.ledger import benefits
from memberwise.ledger import coupons as ledger_coupons
from memberwise.ledger import service as ledger
from memberwise.ledger.benefits import (
    BenefitNotHeld,
    ExpressRefundCreditExceeded,
    ExpressRefundIn,
    PerkAlreadyClaimed,
    PerkClaimIn,
    ReturnCardIn,
    ReturnCardsUsedUp,
    issue_monthly_coupons,
    member_benefits,
    period_of,
    reserve_express_refund,
    restore_express_refund,
    use_return_card,
)
from memberwise.ledger.tables import benefit_counters, benefit_uses, coupons
from memberwise.membership import grants as membership_grants
from memberwise.membership.schemas import TierGrant
from memberwise.privacy import consent
from memberwise.privacy.consent import ConsentRequired
from memberwise.privacy.crypto import FieldCipher
from memberwise.privacy.schemas import SYSTEM, ConsentIn, ConsentStatus, Role
from memberwise.program.benefits import benefit_problems
from memberwise.program.schemas import Program
from memberwise.program.service import ProgramError, parse_program
from memberwise.runtime import Runtime
from tests.members.factories import create_member

PROGRAM = """
name: benefits
display_timezone: Asia/Shanghai
benefits:
  express_refund: {kind: express_refund, credit_limit: 1000000}
  return_card: {kind: return_cards, count: 1, period: day}
  monthly_coupons: {kind: monthly_coupons, template: ten_off, count: 8}
  video: {kind: partner_perk, partner: Youku, perk: VIP video membership, period: month}
  priority: {kind: priority_service, sla_minutes: 30}
coupons:
  ten_off: {kind: amount_off, amount: 1000, valid_days: 31}
tiers:
  - {name: member}
  - name: vip
    manual: true
    benefits: [express_refund, return_card, monthly_coupons, video, priority]
"""
HELD = ["express_refund", "return_card", "monthly_coupons", "video", "priority"]
AT = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def program() -> Program:
    return parse_program(PROGRAM)


# -- the catalog ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("benefit", "message"),
    [
        (
            "{kind: free_shiping}",
            "benefits.b.kind: unknown benefit kind 'free_shiping' -- did you mean 'free_shipping'?",
        ),
        (
            "{kind: express_refund, credit_limt: 5}",
            "benefits.b.credit_limt: unknown key 'credit_limt' for a express_refund benefit",
        ),
        ("{kind: express_refund}", "benefits.b.credit_limit: 'credit_limit' is required"),
        ("{credit_limit: 5}", "benefits.b.kind: 'kind' is required"),
        (
            "{kind: member_price, percent_off: 100, brands: [x]}",
            "benefits.b.percent_off: Input should be less than 100 (found 100)",
        ),
        (
            "{kind: return_cards, count: 0}",
            "benefits.b.count: Input should be greater than or equal to 1 (found 0)",
        ),
        ("free", "benefits.b: a benefit is a mapping with a kind, not 'free'"),
    ],
)
def test_catalog_refuses_with_a_path_and_a_fix(benefit: str, message: str) -> None:
    with pytest.raises(ProgramError) as caught:
        parse_program(f"name: x\nbenefits:\n  b: {benefit}\n")
    assert message in caught.value.message


def test_catalog_kinds_and_their_numbers(program: Program) -> None:
    refund = program.benefits["express_refund"]
    assert (refund.kind, refund.credit_limit) == ("express_refund", 1_000_000)  # type: ignore[union-attr]
    assert program.benefits["priority"].model_dump(exclude={"description"}) == {
        "kind": "priority_service",
        "sla_minutes": 30,
    }


def test_benefit_problems_cross_check_coupon_templates(program: Program) -> None:
    assert benefit_problems(program) == []
    broken = program.model_copy(update={"coupons": {"ten_of": program.coupons["ten_off"]}})
    assert benefit_problems(broken) == [
        {
            "at": ["benefits", "monthly_coupons", "template"],
            "message": "coupon template 'ten_off' does not exist",
            "fix": "did you mean 'ten_of'? name one of the program's coupons (the templates: "
            "ten_of)",
        }
    ]


def test_periods_in_the_display_time_zone() -> None:
    # 2026-11-24 15:59:59 UTC is 23:59:59 in Shanghai; a second later is the next day there.
    before = period_of(datetime(2026, 11, 24, 15, 59, 59, tzinfo=UTC), "day", "Asia/Shanghai")
    after = period_of(datetime(2026, 11, 24, 16, 0, 0, tzinfo=UTC), "day", "Asia/Shanghai")
    assert (before.label, before.ends_at) == ("2026-11-24", datetime(2026, 11, 24, 16, tzinfo=UTC))
    assert (after.label, after.ends_at) == ("2026-11-25", datetime(2026, 11, 25, 16, tzinfo=UTC))
    december = period_of(datetime(2026, 12, 31, 16, 0, tzinfo=UTC), "month", "Asia/Shanghai")
    assert (december.label, december.ends_at) == ("2027-01", datetime(2027, 1, 31, 16, tzinfo=UTC))
    assert period_of(AT, "year", "Asia/Shanghai").label == "2026"


# -- counters --------------------------------------------------------------------------------------


def _counter(conn: Connection, counter: str, period: str = "", member: str = "m1") -> int:
    value = conn.execute(
        select(benefit_counters.c.used).where(
            benefit_counters.c.member_id == member,
            benefit_counters.c.counter == counter,
            benefit_counters.c.period == period,
        )
    ).scalar()
    return int(value or 0)


def _rows(engine: Engine) -> tuple[int, int]:
    """Uses recorded and the sum of every counter."""
    with engine.connect() as conn:
        used = conn.execute(select(func.coalesce(func.sum(benefit_counters.c.used), 0))).scalar()
        return _uses(conn), int(used or 0)


def _uses(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(benefit_uses)).scalar_one())


def _refund(
    conn: Connection, program: Program, refund_id: str, amount: int, held: list[str] = HELD
) -> benefits.BenefitUse:
    return reserve_express_refund(
        conn,
        program,
        "m1",
        held,
        ExpressRefundIn(refund_id=refund_id, order_id="o-" + refund_id, amount=amount),
        at=AT,
        actor=SYSTEM,
    )


def test_express_refund_credit_up_to_the_limit_and_restored(
    conn: Connection, program: Program
) -> None:
    assert _refund(conn, program, "r1", 600_000).remaining == 400_000
    # Exactly at the limit is allowed.
    second = _refund(conn, program, "r2", 400_000)
    assert (second.status, second.amount, second.remaining) == ("open", 400_000, 0)
    # One fen more is refused, and nothing changes.
    uses = _uses(conn)
    with pytest.raises(ExpressRefundCreditExceeded) as refused:
        _refund(conn, program, "r3", 1)
    assert refused.value.details == {"limit": 1_000_000, "outstanding": 1_000_000, "remaining": 0}
    assert (_counter(conn, "express_refund"), _uses(conn)) == (1_000_000, uses)
    # A replay answers the first use and changes nothing; another amount under the key is refused.
    replay = _refund(conn, program, "r1", 600_000)
    assert (replay.use_id, replay.amount, replay.status) == ("express_refund:r1", 600_000, "open")
    with pytest.raises(ledger.IdempotencyKeyReused):
        _refund(conn, program, "r1", 500_000)
    assert _counter(conn, "express_refund") == 1_000_000
    # The first return arrives: its credit is back (twice restores once).
    restored = restore_express_refund(conn, "m1", "r1", at=AT, actor=SYSTEM)
    assert (restored.status, restored.settled_at) == ("restored", AT)
    restore_express_refund(conn, "m1", "r1", at=AT + timedelta(hours=1), actor=SYSTEM)
    assert _counter(conn, "express_refund") == 400_000
    assert _refund(conn, program, "r3", 600_000).remaining == 0
    with pytest.raises(benefits.ExpressRefundNotFound):
        restore_express_refund(conn, "m2", "r2", at=AT, actor=SYSTEM)


def test_express_refund_needs_the_benefit(conn: Connection, program: Program) -> None:
    with pytest.raises(BenefitNotHeld):
        _refund(conn, program, "r1", 100, held=["priority"])
    assert _uses(conn) == 0


def _card(conn: Connection, program: Program, use_id: str, at: datetime) -> benefits.BenefitUse:
    return use_return_card(
        conn, program, "m1", HELD, ReturnCardIn(use_id=use_id, order_id="o1"), at=at, actor=SYSTEM
    )


def test_one_return_card_a_day_turning_at_midnight_in_shanghai(
    conn: Connection, program: Program
) -> None:
    last_second = datetime(2026, 11, 24, 15, 59, 59, tzinfo=UTC)  # 23:59:59 in Shanghai
    first = _card(conn, program, "u1", last_second)
    assert (first.period, first.remaining) == ("2026-11-24", 0)
    with pytest.raises(ReturnCardsUsedUp) as refused:
        _card(conn, program, "u2", last_second + timedelta(milliseconds=999))
    assert refused.value.details["resets_at"] == "2026-11-24T16:00:00+00:00"
    status = member_benefits(conn, program, "m1", HELD, last_second)
    card = next(b for b in status.benefits if b.name == "return_card")
    assert (card.limit, card.used, card.remaining, card.period) == (1, 1, 0, "2026-11-24")
    assert card.resets_at == datetime(2026, 11, 24, 16, tzinfo=UTC)
    # Midnight in Shanghai: a new card.
    midnight = datetime(2026, 11, 24, 16, 0, 0, tzinfo=UTC)
    assert _card(conn, program, "u2", midnight).period == "2026-11-25"
    assert (
        _counter(conn, "return_cards", "2026-11-24"),
        _counter(conn, "return_cards", "2026-11-25"),
    ) == (1, 1)


def test_partner_perk_once_a_month(conn: Connection, program: Program) -> None:
    grant_sharing(conn, program, "m1")

    def claim(claim_id: str, at: datetime) -> benefits.BenefitUse:
        return benefits.claim_partner_perk(
            conn,
            program,
            "m1",
            HELD,
            PerkClaimIn(benefit="video", claim_id=claim_id),
            at=at,
            actor=SYSTEM,
        )

    assert claim("k1", AT).period == "2026-11"
    assert claim("k1", AT).use_id == "partner_perk:k1"  # a replay
    with pytest.raises(PerkAlreadyClaimed):
        claim("k2", AT + timedelta(days=1))
    # 2026-11-30 16:00 UTC is 2026-12-01 00:00 in Shanghai.
    assert claim("k2", datetime(2026, 11, 30, 16, tzinfo=UTC)).period == "2026-12"
    with pytest.raises(BenefitNotHeld):
        benefits.claim_partner_perk(
            conn,
            program,
            "m1",
            HELD,
            PerkClaimIn(benefit="priority", claim_id="k3"),
            at=AT,
            actor=SYSTEM,
        )


def test_monthly_coupons_issued_once_per_member_and_month(
    conn: Connection, program: Program
) -> None:
    calls: list[tuple[str, str, int, str]] = []

    def issue(
        c: Connection,
        p: Program,
        template: str,
        member: str,
        count: int,
        key: str,
        at: datetime,
        actor: Any,
    ) -> int:
        calls.append((template, member, count, key))
        return count

    def run(at: datetime, held: list[str] = HELD) -> int:
        return issue_monthly_coupons(conn, program, "m1", held, at=at, actor=SYSTEM, issue=issue)

    assert run(AT) == 8
    assert run(AT + timedelta(days=3)) == 0
    # 2026-11-30 16:00 UTC is December in Shanghai: December's coupons.
    assert run(datetime(2026, 11, 30, 16, tzinfo=UTC)) == 8
    assert calls == [
        ("ten_off", "m1", 8, "benefit:monthly_coupons:2026-11"),
        ("ten_off", "m1", 8, "benefit:monthly_coupons:2026-12"),
    ]
    assert run(AT, held=["priority"]) == 0


def test_monthly_coupons_through_the_coupon_ledger(conn: Connection, program: Program) -> None:
    """The real issuer: 8 coupons in the ledger, once; the status counts the unused ones."""
    create_member(conn, FieldCipher(bytes(range(32))), "m1")
    assert issue_monthly_coupons(conn, program, "m1", HELD, at=AT, actor=SYSTEM) == 8
    assert issue_monthly_coupons(conn, program, "m1", HELD, at=AT, actor=SYSTEM) == 0
    rows = conn.execute(select(coupons.c.template, coupons.c.issue_key, coupons.c.source)).all()
    assert sorted(rows) == sorted(
        ("ten_off", f"benefit:monthly_coupons:2026-11:{i}", "benefit") for i in range(8)
    )
    monthly = next(
        b
        for b in member_benefits(conn, program, "m1", HELD, AT).benefits
        if b.name == "monthly_coupons"
    )
    assert (monthly.limit, monthly.used, monthly.remaining) == (8, 0, 8)
    conn.execute(
        update(coupons)
        .where(coupons.c.issue_key == "benefit:monthly_coupons:2026-11:0")
        .values(status="redeemed")
    )
    monthly = next(
        b
        for b in member_benefits(conn, program, "m1", HELD, AT).benefits
        if b.name == "monthly_coupons"
    )
    assert (monthly.limit, monthly.used, monthly.remaining) == (8, 1, 7)


def test_status_of_every_benefit(conn: Connection, program: Program) -> None:
    _refund(conn, program, "r1", 250_000)
    status = member_benefits(conn, program, "m1", HELD, AT)
    assert [(b.name, b.kind, b.limit, b.used, b.remaining, b.period) for b in status.benefits] == [
        ("express_refund", "express_refund", 1_000_000, 250_000, 750_000, None),
        ("return_card", "return_cards", 1, 0, 1, "2026-11-24"),
        ("monthly_coupons", "monthly_coupons", 8, 0, 8, "2026-11"),
        ("video", "partner_perk", 1, 0, 1, "2026-11"),
        ("priority", "priority_service", None, None, None, None),
    ]
    assert status.benefits[4].terms == {"sla_minutes": 30}


def grant_sharing(conn: Connection, program: Program, member_id: str) -> None:
    """The member agrees to sharing with partners (a perk claim tells the partner who they are)."""
    consent.record(
        conn,
        program.privacy,
        member_id,
        ConsentIn(
            purpose="partner_sharing", status=ConsentStatus.granted, channel="app", request_id="g1"
        ),
        actor=SYSTEM,
    )


def test_a_partner_perk_is_refused_without_sharing_consent_and_nothing_is_recorded(
    conn: Connection, program: Program
) -> None:
    claim = PerkClaimIn(benefit="video", claim_id="k1")
    with pytest.raises(ConsentRequired):
        benefits.claim_partner_perk(conn, program, "m1", HELD, claim, at=AT, actor=SYSTEM)
    assert _counter(conn, "partner_perk:video", "2026-11") == 0
    grant_sharing(conn, program, "m1")
    assert (
        benefits.claim_partner_perk(conn, program, "m1", HELD, claim, at=AT, actor=SYSTEM).period
        == "2026-11"
    )
    consent.record(
        conn,
        program.privacy,
        "m1",
        ConsentIn(
            purpose="partner_sharing", status=ConsentStatus.revoked, channel="app", request_id="r1"
        ),
        actor=SYSTEM,
    )
    later = PerkClaimIn(benefit="video", claim_id="k2")
    with pytest.raises(ConsentRequired):
        benefits.claim_partner_perk(
            conn, program, "m1", HELD, later, at=datetime(2026, 12, 5, tzinfo=UTC), actor=SYSTEM
        )


# -- concurrency -----------------------------------------------------------------------------------


def test_concurrent_express_refunds_never_pass_the_credit(engine: Engine, program: Program) -> None:
    """20 concurrent refunds of 100,000 fen against 1,000,000 of credit: exactly 10 are paid."""

    def one(i: int) -> str:
        try:
            ledger.write(
                engine,
                lambda conn: reserve_express_refund(
                    conn,
                    program,
                    "m1",
                    HELD,
                    ExpressRefundIn(refund_id=f"r{i}", order_id=f"o{i}", amount=100_000),
                    at=AT,
                    actor=SYSTEM,
                ),
            )
        except ExpressRefundCreditExceeded:
            return "refused"
        return "paid"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(one, range(20)))
    assert outcomes.count("paid") == 10
    with transaction(engine) as conn:
        assert _counter(conn, "express_refund") == 1_000_000
        assert _uses(conn) == 10


# -- through the API -------------------------------------------------------------------------------

Auth = Callable[[Role], dict[str, str]]


@pytest.fixture
def api(client: TestClient, runtime: Runtime, program: Program, tmp_path: Path) -> TestClient:
    """The API serving the program above, with member a1 granted the vip tier (HELD)."""
    path = tmp_path / "program.yaml"
    path.write_text(PROGRAM)
    runtime.settings.program_file = path
    with transaction(runtime.engine) as conn:
        create_member(conn, FieldCipher(bytes(range(32))), "a1")
        grant = TierGrant(tier="vip", reason="test")
        membership_grants.grant(conn, program, "a1", grant, actor=SYSTEM)
    return client


def place(client: TestClient, auth: Auth, order_id: str, price: int, **more: Any) -> None:
    body = {"order_id": order_id, "member_id": "a1", "items": [{"item_id": "i", "price": price}]}
    placed = client.post("/v1/orders", json=body | more, headers=auth(Role.platform))
    assert placed.status_code == 201, placed.text


def test_routes_use_and_show_benefits(api: TestClient, auth: Auth) -> None:
    client = api
    platform = auth(Role.platform)
    place(client, auth, "o1", 400_000)
    place(client, auth, "o2", 800_000)
    refund = {"refund_id": "rf1", "order_id": "o1", "amount": 300_000}
    url = "/v1/members/a1/benefits"
    first = client.post(f"{url}/express-refunds", json=refund, headers=platform)
    assert (first.status_code, first.json()["remaining"]) == (200, 700_000)
    replay = client.post(f"{url}/express-refunds", json=refund, headers=platform)
    assert replay.json()["use_id"] == "express_refund:rf1"
    too_much = client.post(
        f"{url}/express-refunds",
        json=refund | {"refund_id": "rf2", "order_id": "o2", "amount": 700_001},
        headers=platform,
    )
    assert (too_much.status_code, too_much.json()["code"]) == (
        409,
        "express_refund_credit_exceeded",
    )
    card = client.post(
        f"{url}/return-cards", json={"use_id": "c1", "order_id": "o1"}, headers=platform
    )
    assert card.status_code == 200, card.text
    shown = client.get(url, headers=auth(Role.service)).json()
    remaining = {b["name"]: b["remaining"] for b in shown["benefits"]}
    assert remaining["express_refund"] == 700_000 and remaining["return_card"] == 0
    back = client.post(f"{url}/express-refunds/rf1/restore", headers=auth(Role.service))
    assert back.json()["status"] == "restored"
    shown = client.get(url, headers=auth(Role.analyst)).json()
    assert {b["name"]: b["remaining"] for b in shown["benefits"]}["express_refund"] == 1_000_000
    missing = client.get("/v1/members/nobody/benefits", headers=platform)
    assert (missing.status_code, missing.json()["code"]) == (404, "member_not_found")


def test_an_express_refund_is_its_orders_refund_and_points_and_coupons_follow(
    api: TestClient, auth: Auth, runtime: Runtime, program: Program
) -> None:
    """Given an order paid 300 CNY with a coupon, earning 290 points; when it is express-
    refunded in two parts, then the order is refunded, its points taken back pro rata and, on
    the last part, its coupon given back; the credit is taken and restored as before."""
    platform = auth(Role.platform)
    with transaction(runtime.engine) as conn:
        issued = ledger_coupons.issue(conn, program, "ten_off", ["a1"], key="k")
    coupon = issued.coupons[0].coupon_id
    place(api, auth, "o1", 30_000, coupon_ids=[coupon])
    url = "/v1/members/a1/benefits/express-refunds"

    part = api.post(
        url, json={"refund_id": "r1", "order_id": "o1", "amount": 14_500}, headers=platform
    )
    assert part.status_code == 200, part.text
    body = part.json()
    assert (body["amount"], body["reference"], body["remaining"]) == (14_500, "o1", 985_500)
    assert body["refund"]["refund_id"] == "r1" and body["refund"]["points_reversed"] == 145
    assert (body["refund"]["order"]["status"], body["refund"]["order"]["refunded"]) == (
        "partially_refunded",
        14_500,
    )
    rest = api.post(
        url, json={"refund_id": "r2", "order_id": "o1", "amount": 14_500}, headers=platform
    )
    assert rest.json()["refund"]["coupons_restored"] == [coupon]
    order = api.get("/v1/orders/o1", headers=platform).json()
    assert (order["status"], order["refunded"], order["points_reversed"]) == (
        "refunded",
        29_000,
        290,
    )
    points = api.get("/v1/members/a1/points", headers=platform).json()["balance"]
    assert (points["available"], points["pending"]) == (0, 0)
    # A replay answers the same and changes nothing; the refund route sees the same refund.
    again = api.post(
        url, json={"refund_id": "r1", "order_id": "o1", "amount": 14_500}, headers=platform
    )
    # (a replay does not recount what remains)
    assert again.json() == body | {"refund": again.json()["refund"], "remaining": None}
    assert again.json()["refund"]["amount"] == 14_500
    other = api.post(url, json={"refund_id": "r1", "order_id": "o1", "amount": 1}, headers=platform)
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_key_reused")


def test_express_refunds_and_return_cards_need_a_real_order_of_the_member(
    api: TestClient, auth: Auth, runtime: Runtime, engine: Engine
) -> None:
    platform = auth(Role.platform)
    with transaction(runtime.engine) as conn:
        create_member(conn, FieldCipher(bytes(range(32))), "b1")
    other = {"order_id": "ob", "member_id": "b1", "items": [{"item_id": "i", "price": 5_000}]}
    assert api.post("/v1/orders", json=other, headers=platform).status_code == 201
    place(api, auth, "o1", 5_000)
    url = "/v1/members/a1/benefits"
    before = _rows(engine)

    for order_id in ("no-such-order", "ob"):
        refund = {"refund_id": f"r-{order_id}", "order_id": order_id, "amount": 100}
        missing = api.post(f"{url}/express-refunds", json=refund, headers=platform)
        assert (missing.status_code, missing.json()["code"]) == (404, "order_not_found")
        card = {"use_id": f"c-{order_id}", "order_id": order_id}
        missing = api.post(f"{url}/return-cards", json=card, headers=platform)
        assert (missing.status_code, missing.json()["code"]) == (404, "order_not_found")
    too_much = {"refund_id": "big", "order_id": "o1", "amount": 5_001}
    refused = api.post(f"{url}/express-refunds", json=too_much, headers=platform)
    assert (refused.status_code, refused.json()["code"]) == (422, "refund_exceeds_order")
    no_order = api.post(f"{url}/return-cards", json={"use_id": "c"}, headers=platform)
    assert (no_order.status_code, no_order.json()["code"]) == (422, "invalid_request")
    assert _rows(engine) == before  # nothing taken by a refusal
    order = api.get("/v1/orders/o1", headers=platform).json()
    assert order["refunded"] == 0


def test_an_express_refund_links_to_a_refund_the_platform_already_made(
    api: TestClient, auth: Auth, engine: Engine
) -> None:
    platform = auth(Role.platform)
    place(api, auth, "o1", 10_000)
    made = api.post(
        "/v1/orders/o1/refunds", json={"refund_id": "r1", "amount": 4_000}, headers=platform
    )
    assert made.status_code == 201
    url = "/v1/members/a1/benefits/express-refunds"
    linked = api.post(
        url, json={"refund_id": "r1", "order_id": "o1", "amount": 4_000}, headers=platform
    )
    assert linked.status_code == 200, linked.text
    assert linked.json()["refund"]["order"]["refunded"] == 4_000  # refunded once, not twice
    differs = api.post(
        url, json={"refund_id": "r1", "order_id": "o1", "amount": 3_000}, headers=platform
    )
    assert (differs.status_code, differs.json()["code"]) == (409, "idempotency_key_reused")
    api.post("/v1/orders/o1/refunds", json={"refund_id": "r2", "amount": 2_000}, headers=platform)
    before = _rows(engine)
    unlike = api.post(
        url, json={"refund_id": "r2", "order_id": "o1", "amount": 3_000}, headers=platform
    )
    assert (unlike.status_code, unlike.json()["code"]) == (409, "refund_exists")
    assert _rows(engine) == before
