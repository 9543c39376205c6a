"""The domains write to the outbox in the change's own transaction: what a platform's endpoint
will be sent for each kind of change, exactly once, even when the write is retried."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import Connection, select

from memberwise.kit.outbox import outbox
from memberwise.ledger import coupons
from memberwise.membership import subscriptions
from memberwise.membership.schemas import PaymentIn, PaymentOutcome
from memberwise.privacy.schemas import SYSTEM
from tests.ledger.factories import T0, add_members, make_program
from tests.membership.test_subscriptions import program as paid_program


def messages(conn: Connection, event_type: str) -> list[tuple[str | None, dict[str, object]]]:
    rows = conn.execute(
        select(outbox.c.member_id, outbox.c.payload)
        .where(outbox.c.event_type == event_type)
        .order_by(outbox.c.seq)
    )
    return [(m, json.loads(p)) for m, p in rows]


def test_issuing_coupons_announces_each_new_coupon_once(conn: Connection) -> None:
    add_members(conn, "m1", "m2")
    first = coupons.issue(conn, make_program(), "single", ["m1", "m2"], key="k1", at=T0)
    coupons.issue(conn, make_program(), "single", ["m1", "m2"], key="k1", at=T0)  # a retry
    sent = messages(conn, "coupon.issued")
    assert [m for m, _ in sent] == ["m1", "m2"]
    assert [p["coupon_id"] for _, p in sent] == [c.coupon_id for c in first.coupons]
    assert {p["template"] for _, p in sent} == {"single"}


def test_each_subscription_state_change_is_announced(conn: Connection) -> None:
    add_members(conn, "m1")
    p = paid_program()
    sub = subscriptions.join(conn, p, "m1", "plus", at=T0, key=None, actor=SYSTEM)
    body = PaymentIn(
        payment_id="pay-1",
        amount=9900,
        outcome=PaymentOutcome.succeeded,
        occurred_at=T0 + timedelta(hours=1),
        invoice_id=None,
    )
    subscriptions.pay(conn, p, sub.subscription_id, body, at=T0 + timedelta(hours=1), actor=SYSTEM)
    subscriptions.pay(conn, p, sub.subscription_id, body, at=T0 + timedelta(hours=2), actor=SYSTEM)
    sent = messages(conn, "subscription.updated")
    assert [(m, d["from_status"], d["to_status"]) for m, d in sent] == [
        ("m1", None, "pending"),
        ("m1", "pending", "active"),
    ]
    assert {d["subscription_id"] for _, d in sent} == {sub.subscription_id}
