"""Paid memberships: the subscription state machine, invoices, payment callbacks, cancellation.

memberwise takes no payments. It issues an invoice per period; the platform's payment system
charges it and calls back (``POST /v1/subscriptions/{id}/payments``) with its own payment id,
which is the idempotency key: a replay returns the first answer and changes nothing.

States: ``pending`` (waiting for the first payment, at most ``payment_window_hours``) →
``active`` (paid, or in a trial) → at the period's end either rolled into the next paid period,
or ``past_due`` (auto-renew: the renewal invoice waits ``grace_days``) → ``active`` when paid or
``expired``; ``cancelled`` keeps benefits to the period's end (or ends at once when money is
refunded), then ``expired``. Time-driven moves happen whenever a subscription is read or written
and in ``memberwise subscriptions advance``, so no state depends on a scheduler having run.

Out-of-order callbacks: a failure reported after a success for the same invoice changes nothing;
a success whose ``occurred_at`` is before the moment the subscription lapsed for want of that
payment reinstates it as if the callback had arrived in time.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping

from memberwise.kit import outbox
from memberwise.kit.errors import Conflict, InvalidRequest, NotFound
from memberwise.kit.ids import new_id
from memberwise.kit.pagination import Page, decode_cursor, encode_cursor
from memberwise.kit.time import as_utc
from memberwise.membership import ledger_facts
from memberwise.membership import repository as tier_repository
from memberwise.membership import subscription_repository as repository
from memberwise.membership.schemas import (
    CancelOut,
    InvoiceOut,
    PaymentIn,
    PaymentOutcome,
    SubscriptionOut,
    SubscriptionStatus,
)
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import Principal
from memberwise.program.membership import Plan, RefundPolicy
from memberwise.program.schemas import Program

S = SubscriptionStatus


class PlanNotFound(NotFound):
    code = "plan_not_found"


class SubscriptionNotFound(NotFound):
    code = "subscription_not_found"


class SubscriptionExists(Conflict):
    code = "subscription_exists"


class NotPayable(Conflict):
    code = "subscription_not_payable"


class InvoiceAlreadyPaid(Conflict):
    code = "invoice_already_paid"


class AmountMismatch(InvalidRequest):
    code = "amount_mismatch"


class InvoiceNotFound(NotFound):
    code = "invoice_not_found"


class NotCancellable(Conflict):
    code = "subscription_not_cancellable"


class PaymentIdReused(Conflict):
    code = "payment_id_reused"


def plan_of(program: Program, name: str) -> Plan:
    plan = program.plans.get(name)
    if plan is None:
        known = ", ".join(program.plans) or "none"
        raise PlanNotFound(f"no plan {name!r} in program {program.name!r} (plans: {known})")
    return plan


def fee_for(conn: Connection, program: Program, plan_name: str, member_id: str) -> int:
    """The member's fee for one period: the price the last build computed for them (their
    score and profile decide it), or the plan's base fee for a member not built yet."""
    plan = plan_of(program, plan_name)
    row = tier_repository.get_tier(conn, member_id)
    fees = json.loads(row["details"] or "{}").get("fees", {}) if row is not None else {}
    fee = fees.get(plan_name)
    return int(fee) if fee is not None else plan.fee


def _event(
    conn: Connection,
    sub_id: str,
    at: datetime,
    event: str,
    before: str | None,
    after: str,
    details: dict[str, Any] | None = None,
) -> None:
    repository.insert_event(
        conn,
        {
            "event_id": new_id(),
            "subscription_id": sub_id,
            "at": at,
            "event": event,
            "from_status": before,
            "to_status": after,
            "details": details,
        },
    )
    if before != after:
        sub = repository.get_subscription(conn, sub_id)
        outbox.emit(
            conn,
            "subscription.updated",
            {
                "subscription_id": sub_id,
                "plan": sub["plan"] if sub is not None else None,
                "event": event,
                "from_status": before,
                "to_status": after,
                "at": at,
            },
            member_id=sub["member_id"] if sub is not None else None,
            at=at,
        )


def _invoice(
    conn: Connection, sub_id: str, seq: int, amount: int, start: datetime, plan: Plan
) -> dict[str, Any]:
    values = {
        "invoice_id": new_id(),
        "subscription_id": sub_id,
        "seq": seq,
        "amount": amount,
        "status": "open",
        "period_start": start,
        "period_end": start + timedelta(days=plan.period_days),
        "due_at": start,
        "paid_at": None,
        "payment_id": None,
    }
    repository.insert_invoice(conn, values)
    return values


def join(
    conn: Connection,
    program: Program,
    member_id: str,
    plan_name: str,
    *,
    at: datetime,
    auto_renew: bool | None = None,
    key: str | None = None,
    actor: Principal,
) -> SubscriptionOut:
    """Start a subscription: ``pending`` with its first invoice (or ``active`` in a trial)."""
    plan = plan_of(program, plan_name)
    if key is not None and (found := repository.subscription_by_key(conn, member_id, key)):
        return view(conn, program, found["subscription_id"], at=at)
    for existing in repository.subscriptions_of(conn, member_id):
        current = advance(conn, program, existing["subscription_id"], at)
        if current["plan"] == plan_name and current["status"] in (S.pending, S.active, S.past_due):
            raise SubscriptionExists(
                f"member {member_id} already has a {current['status']} {plan_name} subscription "
                f"({current['subscription_id']}); cancel it first or pay its invoice",
                details={"subscription_id": current["subscription_id"]},
            )
    fee = fee_for(conn, program, plan_name, member_id)
    sub_id = new_id()
    trial = plan.trial_days > 0
    trial_until = at + timedelta(days=plan.trial_days) if trial else None
    status = S.active if trial else S.pending
    repository.insert_subscription(
        conn,
        {
            "subscription_id": sub_id,
            "member_id": member_id,
            "plan": plan_name,
            "status": status.value,
            "fee": fee,
            "currency": plan.currency,
            "auto_renew": plan.auto_renew if auto_renew is None else auto_renew,
            "trial_until": trial_until,
            "period_start": at if trial else None,
            "period_end": trial_until,
            "created_at": at,
            "updated_at": at,
            "cancelled_at": None,
            "refunded": 0,
            "idempotency_key": key,
            "version": 1,
        },
    )
    _invoice(conn, sub_id, 1, fee, trial_until or at, plan)
    _event(conn, sub_id, at, "created", None, status.value, {"fee": fee, "trial": trial})
    privacy.audit(
        conn,
        actor,
        "subscription.create",
        "subscription",
        sub_id,
        member_id=member_id,
        details={"plan": plan_name, "fee": fee},
    )
    return view(conn, program, sub_id, at=at)


def _load(conn: Connection, sub_id: str) -> RowMapping:
    row = repository.get_subscription(conn, sub_id, for_update=True)
    if row is None:
        raise SubscriptionNotFound(f"no subscription {sub_id}")
    return row


def _save(conn: Connection, row: RowMapping, at: datetime, **values: Any) -> RowMapping:
    if not repository.save_subscription(
        conn, row["subscription_id"], row["version"], {**values, "updated_at": at}
    ):
        raise Conflict(f"subscription {row['subscription_id']} changed meanwhile; retry")
    return _load(conn, row["subscription_id"])


def advance(conn: Connection, program: Program, sub_id: str, at: datetime) -> RowMapping:
    """Apply every move that time has made due by ``at``; the subscription after them."""
    row = _load(conn, sub_id)
    plan = program.plans.get(row["plan"])
    for _ in range(1000):  # each pass moves one period at most; bounded for safety
        status = S(row["status"])
        invoices = repository.invoices_of(conn, sub_id)
        if status is S.pending:
            if plan is None:
                break
            deadline = as_utc(row["created_at"]) + timedelta(hours=plan.payment_window_hours)
            if deadline > at:
                break
            for inv in invoices:
                if inv["status"] == "open":
                    repository.update_invoice(conn, inv["invoice_id"], {"status": "void"})
            _event(conn, sub_id, deadline, "payment_window_passed", status, S.expired)
            row = _save(conn, row, at, status=S.expired.value)
        elif status in (S.active, S.past_due, S.cancelled):
            end = row["period_end"]
            if end is None or (as_utc(end) > at and status is not S.past_due):
                break
            end = as_utc(end)
            following = next((i for i in invoices if as_utc(i["period_start"]) == end), None)
            if (
                following is not None
                and following["status"] == "paid"
                and status is not S.cancelled
            ):
                row = _save(
                    conn,
                    row,
                    at,
                    status=S.active.value,
                    period_start=end,
                    period_end=as_utc(following["period_end"]),
                )
                _event(
                    conn,
                    sub_id,
                    end,
                    "renewed",
                    status,
                    S.active,
                    {"invoice": following["invoice_id"]},
                )
                continue
            if status is S.active and row["auto_renew"] and plan is not None:
                if following is None:
                    _invoice(conn, sub_id, len(invoices) + 1, row["fee"], end, plan)
                _event(conn, sub_id, end, "renewal_due", status, S.past_due)
                row = _save(conn, row, at, status=S.past_due.value)
                continue
            if status is S.past_due and plan is not None:
                lapse = end + timedelta(days=plan.grace_days)
                if lapse > at:
                    break
                for inv in invoices:
                    if inv["status"] == "open":
                        repository.update_invoice(conn, inv["invoice_id"], {"status": "void"})
                _event(conn, sub_id, lapse, "grace_passed", status, S.expired)
                row = _save(conn, row, at, status=S.expired.value)
                continue
            _event(conn, sub_id, end, "period_ended", status, S.expired)
            row = _save(conn, row, at, status=S.expired.value)
        else:
            break
    return row


def _lapsed_at(conn: Connection, program: Program, sub_id: str) -> datetime | None:
    """When an expired subscription lapsed for want of a payment (None: it did not)."""
    for event in reversed(repository.events_of(conn, sub_id)):
        if event["event"] in ("payment_window_passed", "grace_passed"):
            return as_utc(event["at"])
        if event["to_status"] == S.expired:
            return None
    return None


def pay(
    conn: Connection,
    program: Program,
    sub_id: str,
    payment: PaymentIn,
    *,
    at: datetime,
    actor: Principal,
) -> tuple[int, dict[str, Any]]:
    """Apply a payment callback; (HTTP status, body). A replayed payment id returns the first
    answer unchanged; refusals are stored too, so a replay is refused the same way."""
    stored = repository.get_payment(conn, payment.payment_id)
    if stored is not None:
        if stored["subscription_id"] != sub_id:
            raise PaymentIdReused(
                f"payment {payment.payment_id} was reported for subscription "
                f"{stored['subscription_id']}, not {sub_id}"
            )
        return int(stored["response_status"]), dict(stored["response"])
    occurred = as_utc(payment.occurred_at) if payment.occurred_at else at
    row = advance(conn, program, sub_id, at)
    plan = plan_of(program, row["plan"])
    status, body, invoice_id = _apply(conn, program, row, plan, payment, occurred, at)
    repository.insert_payment(
        conn,
        {
            "payment_id": payment.payment_id,
            "subscription_id": sub_id,
            "invoice_id": invoice_id,
            "amount": payment.amount,
            "outcome": payment.outcome.value,
            "occurred_at": occurred,
            "received_at": at,
            "response_status": status,
            "response": body,
        },
    )
    privacy.audit(
        conn,
        actor,
        "subscription.payment",
        "subscription",
        sub_id,
        member_id=row["member_id"],
        details={
            "payment_id": payment.payment_id,
            "amount": payment.amount,
            "outcome": payment.outcome.value,
            "result": body.get("code", "applied"),
        },
    )
    return status, body


def _refusal(error: InvalidRequest | Conflict | NotFound) -> tuple[int, dict[str, Any]]:
    return error.status_code, {"code": error.code, "message": error.message}


def _apply(
    conn: Connection,
    program: Program,
    row: RowMapping,
    plan: Plan,
    payment: PaymentIn,
    occurred: datetime,
    at: datetime,
) -> tuple[int, dict[str, Any], str | None]:
    sub_id = row["subscription_id"]
    invoices = repository.invoices_of(conn, sub_id)
    if payment.invoice_id is not None:
        invoice = next((i for i in invoices if i["invoice_id"] == payment.invoice_id), None)
        if invoice is None:
            return (
                *_refusal(
                    InvoiceNotFound(f"subscription {sub_id} has no invoice {payment.invoice_id}")
                ),
                None,
            )
    else:
        invoice = next((i for i in invoices if i["status"] == "open"), None) or (
            invoices[-1] if invoices else None
        )
        if invoice is None:
            return (*_refusal(InvoiceNotFound(f"subscription {sub_id} has no invoice")), None)
    invoice_id = invoice["invoice_id"]
    if payment.outcome is PaymentOutcome.failed:
        _event(
            conn,
            sub_id,
            occurred,
            "payment_failed",
            row["status"],
            row["status"],
            {"invoice": invoice_id},
        )
        return (
            200,
            {
                "applied": False,
                "outcome": "failed",
                "subscription": _out(conn, sub_id).model_dump(mode="json"),
            },
            invoice_id,
        )
    if invoice["status"] == "paid":
        return (
            *_refusal(
                InvoiceAlreadyPaid(
                    f"invoice {invoice_id} was paid by payment {invoice['payment_id']}; "
                    "refund this one"
                )
            ),
            invoice_id,
        )
    if payment.amount != invoice["amount"]:
        return (
            *_refusal(
                AmountMismatch(
                    f"invoice {invoice_id} is for {invoice['amount']} fen, "
                    f"the payment was {payment.amount}"
                )
            ),
            invoice_id,
        )
    status = S(row["status"])
    if status is S.expired:
        lapsed = _lapsed_at(conn, program, sub_id)
        if lapsed is None or occurred >= lapsed:
            return (
                *_refusal(
                    NotPayable(
                        f"subscription {sub_id} is expired; the payment came after it lapsed, "
                        "refund it"
                    )
                ),
                invoice_id,
            )
        status = S.pending if invoice["seq"] == 1 and row["period_start"] is None else S.past_due
        _event(
            conn, sub_id, at, "reinstated", S.expired, status, {"payment_id": payment.payment_id}
        )
        row = _save(conn, row, at, status=status.value)
    if status is S.cancelled:
        return (
            *_refusal(NotPayable(f"subscription {sub_id} is cancelled; refund the payment")),
            invoice_id,
        )
    values: dict[str, Any] = {
        "status": "paid",
        "paid_at": occurred,
        "payment_id": payment.payment_id,
    }
    if status is S.pending:
        start, end = occurred, occurred + timedelta(days=plan.period_days)
        values |= {"period_start": start, "period_end": end}
        repository.update_invoice(conn, invoice_id, values)
        row = _save(conn, row, at, status=S.active.value, period_start=start, period_end=end)
        _event(conn, sub_id, occurred, "paid", S.pending, S.active, {"invoice": invoice_id})
    elif status is S.past_due:
        repository.update_invoice(conn, invoice_id, values)
        row = _save(
            conn,
            row,
            at,
            status=S.active.value,
            period_start=as_utc(invoice["period_start"]),
            period_end=as_utc(invoice["period_end"]),
        )
        _event(conn, sub_id, occurred, "paid", S.past_due, S.active, {"invoice": invoice_id})
    else:  # active: paid ahead (a trial, or an early renewal); rolled over at the period's end
        repository.update_invoice(conn, invoice_id, values)
        _event(conn, sub_id, occurred, "paid_ahead", status, status, {"invoice": invoice_id})
    advance(conn, program, sub_id, at)
    return (
        200,
        {
            "applied": True,
            "outcome": "succeeded",
            "subscription": _out(conn, sub_id).model_dump(mode="json"),
        },
        invoice_id,
    )


def cancel(
    conn: Connection,
    program: Program,
    sub_id: str,
    *,
    at: datetime,
    reason: str,
    actor: Principal,
    benefit_used: bool | None = None,
) -> CancelOut:
    """Cancel: no renewal, and a refund by the plan's policy (benefits end at once when money
    is refunded, else at the period's end). ``benefit_used``: whether the member used one of the
    plan's benefits since paying (the full-refund policy requires they did not); by default the
    ledger's record of benefit uses answers."""
    row = advance(conn, program, sub_id, at)
    plan = plan_of(program, row["plan"])
    status = S(row["status"])
    if status in (S.cancelled, S.expired):
        raise NotCancellable(f"subscription {sub_id} is already {status.value}")
    invoices = repository.invoices_of(conn, sub_id)
    for inv in invoices:
        if inv["status"] == "open":
            repository.update_invoice(conn, inv["invoice_id"], {"status": "void"})
    paid = next(
        (
            i
            for i in reversed(invoices)
            if i["status"] == "paid" and as_utc(i["period_start"]) <= at < as_utc(i["period_end"])
        ),
        None,
    )
    if benefit_used is None:
        benefit_used = paid is not None and _benefit_used(conn, row["member_id"], plan, paid)
    refund, rule = refund_for(plan, paid, at, benefit_used=benefit_used)
    end = at if (refund > 0 or status is S.pending or paid is None) else as_utc(row["period_end"])
    row = _save(
        conn,
        row,
        at,
        status=S.cancelled.value,
        auto_renew=False,
        cancelled_at=at,
        refunded=row["refunded"] + refund,
        period_end=end,
    )
    _event(
        conn,
        sub_id,
        at,
        "cancelled",
        status,
        S.cancelled,
        {"refund": refund, "rule": rule, "reason": reason},
    )
    privacy.audit(
        conn,
        actor,
        "subscription.cancel",
        "subscription",
        sub_id,
        member_id=row["member_id"],
        reason=reason or None,
        details={"refund": refund, "rule": rule},
    )
    advance(conn, program, sub_id, at)
    return CancelOut(subscription=_out(conn, sub_id), refund=refund, refund_rule=rule)


def _benefit_used(conn: Connection, member_id: str, plan: Plan, paid: RowMapping) -> bool:
    """Whether the member used one of the plan's benefits since paying (the ledger records
    each use; it registers the answer, see :mod:`memberwise.membership.ledger_facts`)."""
    return ledger_facts.ledger().used_since(conn, member_id, plan.benefits, as_utc(paid["paid_at"]))


def refund_for(
    plan: Plan, paid: RowMapping | dict[str, Any] | None, at: datetime, *, benefit_used: bool
) -> tuple[int, str]:
    """(refund in fen, the rule applied) for cancelling at ``at`` a period paid by ``paid``."""
    if paid is None:
        return 0, "nothing paid for the current period"
    amount = int(paid["amount"])
    start, end = as_utc(paid["period_start"]), as_utc(paid["period_end"])
    policy = plan.refund.policy
    if policy is RefundPolicy.full_within_days:
        paid_at = as_utc(paid["paid_at"])
        if at - paid_at <= timedelta(days=plan.refund.days) and not benefit_used:
            return amount, f"full refund: cancelled within {plan.refund.days} days, no benefit used"
        policy = plan.refund.otherwise
    if policy is RefundPolicy.pro_rata:
        remaining = max(timedelta(0), end - at)
        share = remaining / (end - start)
        return int(
            amount * remaining // (end - start)
        ), f"pro rata: {share:.4f} of the period unused"
    return 0, "no refund under the plan's policy"


def _out(conn: Connection, sub_id: str) -> SubscriptionOut:
    row = repository.get_subscription(conn, sub_id)
    assert row is not None
    invoices = [InvoiceOut.model_validate(dict(i)) for i in repository.invoices_of(conn, sub_id)]
    history = [
        {
            "at": e["at"],
            "event": e["event"],
            "from": e["from_status"],
            "to": e["to_status"],
            "details": e["details"],
        }
        for e in repository.events_of(conn, sub_id)
    ]
    return SubscriptionOut.model_validate({**dict(row), "invoices": invoices, "history": history})


def view(conn: Connection, program: Program, sub_id: str, *, at: datetime) -> SubscriptionOut:
    advance(conn, program, sub_id, at)
    return _out(conn, sub_id)


def listing(
    conn: Connection,
    program: Program,
    *,
    member_id: str | None = None,
    plan: str | None = None,
    status: SubscriptionStatus | None = None,
    after: str | None = None,
    limit: int,
    at: datetime,
) -> Page[SubscriptionOut]:
    """A page of subscriptions in id order, filtered by member, plan and status; each listed
    one is first brought up to date with time's moves (as :func:`view` does), so a status
    filter matches the status as of the last move. Raises InvalidCursor."""
    ids = repository.page_subscriptions(
        conn,
        member_id=member_id,
        plan=plan,
        status=status.value if status is not None else None,
        after=decode_cursor(after),
        limit=limit + 1,
    )
    items = [view(conn, program, sub_id, at=at) for sub_id in ids[:limit]]
    return Page[SubscriptionOut](
        items=items, next_cursor=encode_cursor(ids[limit - 1]) if len(ids) > limit else None
    )


def of_member(
    conn: Connection, program: Program, member_id: str, *, at: datetime
) -> list[SubscriptionOut]:
    return [
        view(conn, program, r["subscription_id"], at=at)
        for r in repository.subscriptions_of(conn, member_id)
    ]


def advance_all(conn: Connection, program: Program, *, at: datetime) -> dict[str, int]:
    """Apply time's moves to every subscription that can still move; counts by new status."""
    counts: dict[str, int] = {}
    for sub_id in repository.open_subscription_ids(conn):
        status = advance(conn, program, sub_id, at)["status"]
        counts[status] = counts.get(status, 0) + 1
    return counts


def grants(row: RowMapping | dict[str, Any], plan: Plan, at: datetime) -> bool:
    """Whether a stored subscription (plan, status, period_end) grants its plan at ``at``,
    applying in thought the moves time has made due: an active or past-due one grants until
    its period end plus the renewal grace (auto-renew), a cancelled one until its period end;
    a pending or expired one never."""
    status, end = row["status"], row["period_end"]
    if status in (S.pending, S.expired) or end is None:
        return False
    end = as_utc(end)
    if status == S.cancelled:
        return at < end
    return at < end + timedelta(days=plan.grace_days)
