"""Every query of paid subscriptions: subscriptions, invoices, payments and their events, the
plans a member holds, and the counts and fee revenue per plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, RowMapping, func, insert, select, update

from memberwise.kit import rawsql
from memberwise.membership.tables import (
    subscription_events,
    subscription_invoices,
    subscription_payments,
    subscriptions,
)


def subscription_states(conn: Connection, member_id: str) -> list[dict[str, Any]]:
    """The plan, status and period end of each of the member's subscriptions not expired (on
    the driver's cursor: every benefits read and checkout asks it)."""
    rows = rawsql.fetchall(
        conn,
        "SELECT plan, status, period_end FROM subscriptions "
        "WHERE member_id = :member_id AND status <> 'expired'",
        {"member_id": member_id},
    )
    return [
        {"plan": plan, "status": status, "period_end": rawsql.instant(end)}
        for plan, status, end in rows
    ]


# --- subscriptions --------------------------------------------------------------------------


def insert_subscription(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(subscriptions).values(**values))


def get_subscription(
    conn: Connection, subscription_id: str, *, for_update: bool = False
) -> RowMapping | None:
    stmt = select(subscriptions).where(subscriptions.c.subscription_id == subscription_id)
    if for_update and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return conn.execute(stmt).mappings().first()


def subscription_by_key(conn: Connection, member_id: str, key: str) -> RowMapping | None:
    stmt = select(subscriptions).where(
        subscriptions.c.member_id == member_id, subscriptions.c.idempotency_key == key
    )
    return conn.execute(stmt).mappings().first()


def subscriptions_of(conn: Connection, member_id: str) -> Sequence[RowMapping]:
    stmt = (
        select(subscriptions)
        .where(subscriptions.c.member_id == member_id)
        .order_by(subscriptions.c.created_at.desc(), subscriptions.c.subscription_id)
    )
    return conn.execute(stmt).mappings().all()


def page_subscriptions(
    conn: Connection,
    *,
    member_id: str | None,
    plan: str | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> list[str]:
    """Subscription ids in id order after ``after``, filtered by member, plan and stored
    status."""
    c = subscriptions.c
    stmt = select(c.subscription_id)
    if member_id is not None:
        stmt = stmt.where(c.member_id == member_id)
    if plan is not None:
        stmt = stmt.where(c.plan == plan)
    if status is not None:
        stmt = stmt.where(c.status == status)
    if after is not None:
        stmt = stmt.where(c.subscription_id > after)
    return list(conn.execute(stmt.order_by(c.subscription_id).limit(limit)).scalars())


def open_subscription_ids(conn: Connection) -> list[str]:
    """Subscriptions that time may still move (pending, active, past_due, cancelled)."""
    stmt = select(subscriptions.c.subscription_id).where(subscriptions.c.status != "expired")
    return list(conn.execute(stmt).scalars())


def save_subscription(
    conn: Connection, subscription_id: str, version: int, values: dict[str, Any]
) -> bool:
    """Compare-and-set on ``version``: False when someone else changed it first."""
    stmt = (
        update(subscriptions)
        .where(
            subscriptions.c.subscription_id == subscription_id, subscriptions.c.version == version
        )
        .values(**values, version=version + 1)
    )
    return (conn.execute(stmt).rowcount or 0) == 1


def subscription_counts(conn: Connection) -> list[tuple[str, str, int]]:
    """(plan, status, subscriptions), ordered by plan and status."""
    rows = conn.execute(
        select(subscriptions.c.plan, subscriptions.c.status, func.count())
        .group_by(subscriptions.c.plan, subscriptions.c.status)
        .order_by(subscriptions.c.plan, subscriptions.c.status)
    ).all()
    return [(str(p), str(s), int(n)) for p, s, n in rows]


def revenue_by_plan(conn: Connection) -> dict[str, tuple[int, int]]:
    """Plan -> (fees paid, fees refunded), in fen: paid invoices and subscriptions' refunds."""
    paid = conn.execute(
        select(subscriptions.c.plan, func.coalesce(func.sum(subscription_invoices.c.amount), 0))
        .select_from(
            subscription_invoices.join(
                subscriptions,
                subscriptions.c.subscription_id == subscription_invoices.c.subscription_id,
            )
        )
        .where(subscription_invoices.c.paid_at.is_not(None))
        .group_by(subscriptions.c.plan)
    ).all()
    refunded = conn.execute(
        select(subscriptions.c.plan, func.coalesce(func.sum(subscriptions.c.refunded), 0)).group_by(
            subscriptions.c.plan
        )
    ).all()
    out = {str(p): (int(a), 0) for p, a in paid}
    for plan, amount in refunded:
        out[str(plan)] = (out.get(str(plan), (0, 0))[0], int(amount))
    return out


def insert_invoice(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(subscription_invoices).values(**values))


def invoices_of(conn: Connection, subscription_id: str) -> Sequence[RowMapping]:
    stmt = (
        select(subscription_invoices)
        .where(subscription_invoices.c.subscription_id == subscription_id)
        .order_by(subscription_invoices.c.seq)
    )
    return conn.execute(stmt).mappings().all()


def update_invoice(conn: Connection, invoice_id: str, values: dict[str, Any]) -> None:
    conn.execute(
        update(subscription_invoices)
        .where(subscription_invoices.c.invoice_id == invoice_id)
        .values(**values)
    )


def get_payment(conn: Connection, payment_id: str) -> RowMapping | None:
    stmt = select(subscription_payments).where(subscription_payments.c.payment_id == payment_id)
    return conn.execute(stmt).mappings().first()


def insert_payment(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(subscription_payments).values(**values))


def insert_event(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(subscription_events).values(**values))


def events_of(conn: Connection, subscription_id: str) -> Sequence[RowMapping]:
    stmt = (
        select(subscription_events)
        .where(subscription_events.c.subscription_id == subscription_id)
        .order_by(subscription_events.c.at, subscription_events.c.event_id)
    )
    return conn.execute(stmt).mappings().all()


def subscriptions_in(conn: Connection, status: str) -> list[tuple[str, str]]:
    """(member, subscription) of subscriptions in ``status``."""
    query = (
        select(subscriptions.c.member_id, subscriptions.c.subscription_id)
        .where(subscriptions.c.status == status)
        .order_by(subscriptions.c.subscription_id)
    )
    return [(m, s) for m, s in conn.execute(query)]


def colliding_subscription_keys(conn: Connection, source: str, target: str) -> list[str]:
    """Source subscriptions whose idempotency key the target used too."""
    theirs = select(subscriptions.c.idempotency_key).where(subscriptions.c.member_id == target)
    query = select(subscriptions.c.subscription_id).where(
        subscriptions.c.member_id == source, subscriptions.c.idempotency_key.in_(theirs)
    )
    return list(conn.execute(query).scalars())


def rename_subscription_keys(conn: Connection, ids: list[str], suffix: str) -> None:
    if ids:
        conn.execute(
            update(subscriptions)
            .where(subscriptions.c.subscription_id.in_(ids))
            .values(idempotency_key=subscriptions.c.idempotency_key + suffix)
        )
