"""The paid-membership state machine on the real stores: joining, paying (duplicates, failures,
out of order), renewals, grace, expiry, and each refund policy on cancellation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection

from memberwise.ledger.benefits import ReturnCardIn, use_return_card
from memberwise.membership import subscription_repository, subscriptions
from memberwise.membership.schemas import PaymentIn, PaymentOutcome, SubscriptionStatus
from memberwise.membership.service import entitlements
from memberwise.privacy.schemas import SYSTEM
from memberwise.program.schemas import Program
from memberwise.program.service import parse_program

PROGRAM = """name: paid
tiers: [{name: member}]
plans:
  plus:
    fee: 9900
    period_days: 30
    grace_days: 5
    payment_window_hours: 24
    refund: {policy: REFUND, days: 7, otherwise: none}
    benefits: [returns]
  trial:
    fee: 5000
    period_days: 30
    trial_days: 7
benefits:
  returns: {kind: return_cards, count: 1, period: day}
"""
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
S = SubscriptionStatus


def program(refund: str = "none") -> Program:
    return parse_program(PROGRAM.replace("REFUND", refund))


def pay(
    conn: Connection,
    p: Program,
    sub_id: str,
    payment_id: str,
    amount: int,
    at: datetime,
    outcome: PaymentOutcome = PaymentOutcome.succeeded,
    occurred: datetime | None = None,
    invoice_id: str | None = None,
) -> tuple[int, dict]:  # type: ignore[type-arg]
    body = PaymentIn(
        payment_id=payment_id,
        amount=amount,
        outcome=outcome,
        occurred_at=occurred or at,
        invoice_id=invoice_id,
    )
    return subscriptions.pay(conn, p, sub_id, body, at=at, actor=SYSTEM)


def join(
    conn: Connection, p: Program, plan: str = "plus", at: datetime = T0, key: str | None = None
):  # type: ignore[no-untyped-def]
    return subscriptions.join(conn, p, "m1", plan, at=at, key=key, actor=SYSTEM)


def test_join_pay_renew_and_expire(conn: Connection) -> None:
    p = program()
    sub = join(conn, p)
    assert (sub.status, sub.fee, len(sub.invoices)) == (S.pending, 9900, 1)
    status, body = pay(conn, p, sub.subscription_id, "pay-1", 9900, T0 + timedelta(hours=1))
    assert status == 200 and body["applied"] is True
    active = subscriptions.view(conn, p, sub.subscription_id, at=T0 + DAY)
    assert active.status is S.active
    assert active.period_end == T0 + timedelta(hours=1) + 30 * DAY
    # The period ends: a renewal invoice is due and the subscription is past due.
    due = subscriptions.view(conn, p, sub.subscription_id, at=T0 + 31 * DAY)
    assert due.status is S.past_due
    assert [i.status for i in due.invoices] == ["paid", "open"]
    # Paid late but within grace: active again, the new period follows the old one.
    pay(conn, p, sub.subscription_id, "pay-2", 9900, T0 + 33 * DAY)
    renewed = subscriptions.view(conn, p, sub.subscription_id, at=T0 + 33 * DAY)
    assert renewed.status is S.active
    assert renewed.period_start == active.period_end
    assert renewed.period_end == active.period_end + 30 * DAY
    # Not paid again: past due, then expired when the grace ends.
    end = renewed.period_end
    assert end is not None
    assert subscriptions.view(conn, p, sub.subscription_id, at=end + 4 * DAY).status is S.past_due
    expired = subscriptions.view(conn, p, sub.subscription_id, at=end + 5 * DAY)
    assert expired.status is S.expired
    assert [h["event"] for h in expired.history] == [
        "created",
        "paid",
        "renewal_due",
        "paid",
        "renewal_due",
        "grace_passed",
    ]


def test_a_duplicate_callback_returns_the_first_answer_and_changes_nothing(
    conn: Connection,
) -> None:
    p = program()
    sub = join(conn, p)
    first = pay(conn, p, sub.subscription_id, "pay-1", 9900, T0)
    again = pay(conn, p, sub.subscription_id, "pay-1", 9900, T0 + DAY)
    assert again == first
    assert len(subscription_repository.events_of(conn, sub.subscription_id)) == 2  # created, paid


def test_a_second_payment_for_a_paid_invoice_is_refused_and_the_refusal_replays(
    conn: Connection,
) -> None:
    p = program()
    sub = join(conn, p)
    pay(conn, p, sub.subscription_id, "pay-1", 9900, T0)
    status, body = pay(
        conn, p, sub.subscription_id, "pay-2", 9900, T0, invoice_id=sub.invoices[0].invoice_id
    )
    assert (status, body["code"]) == (409, "invoice_already_paid")
    assert pay(conn, p, sub.subscription_id, "pay-2", 9900, T0) == (status, body)


def test_a_wrong_amount_is_refused(conn: Connection) -> None:
    p = program()
    sub = join(conn, p)
    status, body = pay(conn, p, sub.subscription_id, "pay-1", 990, T0)
    assert (status, body["code"]) == (422, "amount_mismatch")
    assert subscriptions.view(conn, p, sub.subscription_id, at=T0).status is S.pending


def test_a_failure_reported_after_the_success_changes_nothing(conn: Connection) -> None:
    p = program()
    sub = join(conn, p)
    pay(conn, p, sub.subscription_id, "ok", 9900, T0 + timedelta(minutes=5))
    status, body = pay(
        conn,
        p,
        sub.subscription_id,
        "fail",
        9900,
        T0 + timedelta(minutes=6),
        outcome=PaymentOutcome.failed,
        occurred=T0 + timedelta(minutes=1),
    )
    assert status == 200 and body["applied"] is False
    assert subscriptions.view(conn, p, sub.subscription_id, at=T0 + DAY).status is S.active


def test_a_late_callback_for_a_payment_made_in_time_reinstates(conn: Connection) -> None:
    p = program()
    sub = join(conn, p)
    # The window closes after 24 h: expired. The payment happened at hour 23 but its callback
    # arrives at hour 30.
    assert subscriptions.view(conn, p, sub.subscription_id, at=T0 + 2 * DAY).status is S.expired
    status, _ = pay(
        conn,
        p,
        sub.subscription_id,
        "late",
        9900,
        T0 + timedelta(hours=30),
        occurred=T0 + timedelta(hours=23),
    )
    assert status == 200
    back = subscriptions.view(conn, p, sub.subscription_id, at=T0 + timedelta(hours=30))
    assert back.status is S.active
    assert back.period_start == T0 + timedelta(hours=23)


def test_a_payment_made_after_the_lapse_is_refused(conn: Connection) -> None:
    p = program()
    sub = join(conn, p)
    status, body = pay(conn, p, sub.subscription_id, "late", 9900, T0 + 2 * DAY)
    assert (status, body["code"]) == (409, "subscription_not_payable")


def test_a_trial_is_active_at_once_and_rolls_into_the_paid_period(conn: Connection) -> None:
    p = program()
    sub = join(conn, p, plan="trial")
    assert sub.status is S.active and sub.trial_until == T0 + 7 * DAY
    pay(conn, p, sub.subscription_id, "t1", 5000, T0 + 3 * DAY)
    rolled = subscriptions.view(conn, p, sub.subscription_id, at=T0 + 8 * DAY)
    assert (rolled.status, rolled.period_start, rolled.period_end) == (
        S.active,
        T0 + 7 * DAY,
        T0 + 37 * DAY,
    )


def test_joining_twice_is_refused_unless_it_is_a_retry(conn: Connection) -> None:
    p = program()
    first = join(conn, p, key="k1")
    assert join(conn, p, key="k1").subscription_id == first.subscription_id
    with pytest.raises(subscriptions.SubscriptionExists):
        join(conn, p, key="k2")


@pytest.mark.parametrize(
    ("policy", "days_after", "benefit_used", "refund", "ends_now"),
    [
        ("none", 3, False, 0, False),
        ("pro_rata", 12, False, 9900 * 18 // 30, True),
        ("full_within_days", 7, False, 9900, True),
        ("full_within_days", 7, True, 0, False),  # a benefit was used: otherwise = none
        ("full_within_days", 8, False, 0, False),  # too late
    ],
)
def test_cancelling_refunds_by_the_plans_policy(
    conn: Connection, policy: str, days_after: int, benefit_used: bool, refund: int, ends_now: bool
) -> None:
    p = program(policy)
    sub = join(conn, p)
    pay(conn, p, sub.subscription_id, "p", 9900, T0)
    at = T0 + days_after * DAY
    out = subscriptions.cancel(
        conn, p, sub.subscription_id, at=at, reason="", actor=SYSTEM, benefit_used=benefit_used
    )
    assert out.refund == refund
    assert out.subscription.refunded == refund
    assert out.subscription.status is (S.expired if ends_now else S.cancelled)
    if not ends_now:
        assert out.subscription.period_end == T0 + 30 * DAY
        later = subscriptions.view(conn, p, sub.subscription_id, at=T0 + 30 * DAY)
        assert later.status is S.expired


def test_a_benefit_used_since_paying_forfeits_the_full_refund(conn: Connection) -> None:
    p = program("full_within_days")
    sub = join(conn, p)
    pay(conn, p, sub.subscription_id, "p", 9900, T0)
    held = entitlements(conn, p, "m1", T0 + DAY).benefits
    assert held == ("returns",)
    card = ReturnCardIn(use_id="r1", order_id="o1")
    use_return_card(conn, p, "m1", held, card, at=T0 + DAY, actor=SYSTEM)
    out = subscriptions.cancel(
        conn, p, sub.subscription_id, at=T0 + 2 * DAY, reason="", actor=SYSTEM
    )
    assert (out.refund, out.refund_rule) == (0, "no refund under the plan's policy")
