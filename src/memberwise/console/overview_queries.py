"""Read-only aggregates behind the overview page, over the domains' published tables.

No domain service offers these counts yet; they are the console's own queries (DESIGN.md: the
console is the top layer, it reads). Each is one grouped statement, portable SQLite/PostgreSQL.
The per-build ones (tiers and segments over builds, the predictions, the black-card summary) are
kept in memory by :mod:`memberwise.console.overview_builds` under :func:`build_key`.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import Connection, case, distinct, func, select

from memberwise.ledger.tables import coupon_budgets, points_balances, points_lots
from memberwise.membership.tables import (
    invitations,
    member_tiers,
    subscription_invoices,
    subscriptions,
    tier_history,
)
from memberwise.predict.tables import member_predictions
from memberwise.profiles.tables import builds, profile_groups


def members_by_tier(conn: Connection) -> dict[str, int]:
    """Members per current tier."""
    rows = conn.execute(
        select(member_tiers.c.tier, func.count()).group_by(member_tiers.c.tier)
    ).all()
    return {str(t): int(n) for t, n in rows}


def recent_builds(conn: Connection, limit: int = 12) -> list[tuple[str, datetime]]:
    """The newest ``limit`` published builds, oldest first: (build id, as of)."""
    rows = conn.execute(
        select(builds.c.build_id, builds.c.as_of).order_by(builds.c.as_of.desc()).limit(limit)
    ).all()
    return [(str(b), a) for b, a in reversed(rows)]


def segments_by_build(conn: Connection, build_ids: list[str]) -> dict[str, dict[str, int]]:
    """Build id -> segment -> members (each build's published segment sizes)."""
    if not build_ids:
        return {}
    rows = conn.execute(
        select(profile_groups.c.build_id, profile_groups.c.name, profile_groups.c.members).where(
            profile_groups.c.kind == "segment", profile_groups.c.build_id.in_(build_ids)
        )
    ).all()
    out: dict[str, dict[str, int]] = {b: {} for b in build_ids}
    for build_id, name, members in rows:
        out[str(build_id)][str(name)] = int(members)
    return out


def tiers_at(conn: Connection, at: datetime) -> dict[str, int]:
    """Members per tier as they stood at ``at`` (each member's last tier change by then)."""
    ranked = select(
        tier_history.c.to_tier,
        func.row_number()
        .over(partition_by=tier_history.c.member_id, order_by=tier_history.c.at.desc())
        .label("rn"),
    ).where(tier_history.c.at <= at)
    sub = ranked.subquery()
    rows = conn.execute(
        select(sub.c.to_tier, func.count()).where(sub.c.rn == 1).group_by(sub.c.to_tier)
    ).all()
    return {str(t): int(n) for t, n in rows}


def subscriptions_by_plan(conn: Connection) -> list[tuple[str, str, int]]:
    """(plan, status, subscriptions)."""
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


def points_liability(conn: Connection, now: datetime) -> dict[str, int]:
    """Points owed: available and pending balances, and lot points expiring in 30 / 90 days.

    The expiring sums read only the available lots with an expiry up to 90 days ahead (a range
    of ``ix_points_lots_status_expires``), not every lot; lots past their expiry the sweep has
    not reached yet still count, as they are still owed."""
    available, pending = conn.execute(
        select(
            func.coalesce(func.sum(points_balances.c.available), 0),
            func.coalesce(func.sum(points_balances.c.pending), 0),
        )
    ).one()
    in30 = case((points_lots.c.expires_at <= now + timedelta(days=30), points_lots.c.remaining))
    in30_sum, in90_sum = conn.execute(
        select(
            func.coalesce(func.sum(in30), 0), func.coalesce(func.sum(points_lots.c.remaining), 0)
        ).where(
            points_lots.c.status == "available",
            points_lots.c.expires_at.is_not(None),
            points_lots.c.expires_at <= now + timedelta(days=90),
            points_lots.c.remaining > 0,
        )
    ).one()
    return {
        "available": int(available),
        "pending": int(pending),
        "expiring_30d": int(in30_sum),
        "expiring_90d": int(in90_sum),
    }


def coupon_budget_use(conn: Connection) -> list[tuple[str, int, int, int]]:
    """(template, issued, redeemed, money redeemed in fen) per coupon template."""
    rows = conn.execute(
        select(
            coupon_budgets.c.template,
            coupon_budgets.c.issued,
            coupon_budgets.c.redeemed,
            coupon_budgets.c.redeemed_money,
        ).order_by(coupon_budgets.c.template)
    ).all()
    return [(str(t), int(i), int(r), int(m)) for t, i, r, m in rows]


def prediction_values(conn: Connection) -> tuple[list[int], list[float]]:
    """Every scored member's 12-month CLV (fen) and churn risk, for the distributions."""
    rows = conn.execute(
        select(member_predictions.c.clv_12m_fen, member_predictions.c.churn_risk)
    ).all()
    clv = [int(c) for c, _ in rows if c is not None]
    risk = [float(r) for _, r in rows if r is not None]
    return clv, risk


def invitations_by_status(conn: Connection) -> dict[str, int]:
    """Black-card invitations per status (pending, accepted, declined, expired)."""
    rows = conn.execute(
        select(invitations.c.status, func.count()).group_by(invitations.c.status)
    ).all()
    return {str(s): int(n) for s, n in rows}


def latest_black_card(conn: Connection) -> dict[str, int]:
    """The newest build's black-card summary: active members, eligible, quota, taken, slots,
    invited (empty before a build with a black card)."""
    summary = conn.execute(
        select(builds.c.summary).order_by(builds.c.as_of.desc()).limit(1)
    ).scalar_one_or_none()
    if not summary:
        return {}
    found = json.loads(summary).get("tiers", {}).get("invitations") or {}
    return {str(k): int(v) for k, v in found.items() if isinstance(v, int | float)}


def build_key(conn: Connection, limit: int = 12) -> tuple[object, ...]:
    """What the per-build figures depend on, in a few index reads: the newest ``limit`` builds
    (id, as of), the scored members, and the tier-history rows up to the newest build's as of
    with their members.

    A build publishes its builds row, tier history and predictions in one transaction, so a new
    build changes the first part. Between builds, rows up to that as of only go away or change
    hands: an erasure deletes a member's rows (a count drops), an identity merge moves the
    source's rows to the target (the members drop when both had some; otherwise the counts by
    tier are unchanged). Tier changes outside a build are stamped when they happen, after the
    newest as of, and only the live members-by-tier shows them."""
    recent = recent_builds(conn, limit)
    scored = conn.execute(select(func.count()).select_from(member_predictions)).scalar_one()
    history: tuple[int, int] = (0, 0)
    if recent:
        newest = max(a for _, a in recent)
        rows, members = conn.execute(
            select(func.count(), func.count(distinct(tier_history.c.member_id))).where(
                tier_history.c.at <= newest
            )
        ).one()
        history = (int(rows), int(members))
    return (tuple(recent), int(scored), history)
