"""The points ledger: earning (multipliers, caps, pending), spending nearest expiry first,
maturation, expiry, awards, adjustments, replays; every state checked against the invariants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, func, select

from memberwise.ledger import orders, points
from memberwise.ledger.schemas import AwardKind, EntryKind, OrderItem
from memberwise.ledger.service import AwardNotConfigured, InsufficientPoints, NothingToAdjust
from memberwise.ledger.tables import points_allocations
from memberwise.privacy.tables import audit_log
from memberwise.program.ledger import PointsSettings
from tests.ledger.factories import T0, add_members, check_invariants, make_program, order


def _give(conn: Connection, member_id: str, n: int, at: datetime, key: str) -> None:
    points.adjust(conn, make_program(), member_id, n, reason="seed", key=key, at=at)


def test_expiry_policy_end_of_next_year_in_display_zone() -> None:
    settings = PointsSettings()
    # 2026-12-31 17:00 UTC is already 2027-01-01 in Shanghai: the points last until end of 2028.
    at = datetime(2026, 12, 31, 17, 0, tzinfo=UTC)
    assert settings.expires_at(at, "Asia/Shanghai") == datetime(2028, 12, 31, 16, 0, tzinfo=UTC)
    assert settings.expires_at(at, "UTC") == datetime(2028, 1, 1, tzinfo=UTC)
    days = PointsSettings(expiry="days", expiry_days=10)
    assert days.expires_at(T0, "UTC") == datetime(2026, 3, 21, tzinfo=UTC)
    assert PointsSettings(expiry="never").expires_at(T0, "UTC") is None


def test_earn_for_applies_tier_category_and_campaign_multipliers() -> None:
    settings = PointsSettings.model_validate(
        {
            "tier_multipliers": {"gold": 1.5},
            "category_bonus": {"beauty": 2},
            "campaigns": [
                {
                    "name": "spring",
                    "start": "2026-03-01",
                    "end": "2026-03-31",
                    "multiplier": 3,
                    "categories": ["food"],
                }
            ],
        }
    )
    items = [
        OrderItem(item_id="a", category="beauty", price=10_000),
        OrderItem(item_id="b", category="food", price=5_000, quantity=2),
        OrderItem(item_id="c", category="toys", price=999),
    ]
    # Paid in full: beauty 100 CNY x2, food 100 CNY x3, toys 9.99 CNY x1 -> 509.99 -> 509 (x1).
    assert orders.earn_for(settings, items, 20_999, tier=None, at=T0, timezone="UTC") == 509
    # Gold multiplies all by 1.5: 764.985 -> 764.
    assert orders.earn_for(settings, items, 20_999, tier="gold", at=T0, timezone="UTC") == 764
    # Half paid in money: each item earns on half its price.
    assert orders.earn_for(settings, items, 10_499, tier=None, at=T0, timezone="UTC") == 254
    after = T0 + timedelta(days=30)
    assert orders.earn_for(settings, items, 20_999, tier=None, at=after, timezone="UTC") == 309


def test_order_points_are_pending_then_available_after_the_return_window(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1")
    placed, created = orders.place(conn, program, order("o1", price=12_345), at=T0)
    assert created and placed.points_earned == 123
    assert points.balance_of(conn, "m1").model_dump() == {
        "member_id": "m1",
        "available": 0,
        "pending": 123,
        "debt": 0,
    }
    assert points.mature_due(conn, at=T0 + timedelta(days=6, hours=23)) == 0
    assert points.mature_due(conn, at=T0 + timedelta(days=7)) == 123
    assert points.balance_of(conn, "m1").available == 123
    assert points.mature_due(conn, at=T0 + timedelta(days=8)) == 0
    check_invariants(conn)


def test_gold_tier_doubles_and_complete_makes_points_available_at_once(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1")
    placed, _ = orders.place(conn, program, order("o1", price=10_000), tier="gold", at=T0)
    assert placed.points_earned == 200
    done = orders.complete(conn, "o1", at=T0 + timedelta(days=1))
    assert done.status == "completed"
    assert points.balance_of(conn, "m1").available == 200
    again = orders.complete(conn, "o1", at=T0 + timedelta(days=2))
    assert again.completed_at == done.completed_at
    assert points.balance_of(conn, "m1").available == 200
    check_invariants(conn)


def test_spend_takes_nearest_expiry_first_and_records_allocations(conn: Connection) -> None:
    program = make_program(expiry="days", expiry_days=100)
    add_members(conn, "m1")
    for i, days in enumerate((50, 0, 20)):
        points.adjust(
            conn, program, "m1", 100, reason="seed", key=f"k{i}", at=T0 + timedelta(days=days)
        )
    entry_id = points.debit(
        conn, "m1", 150, kind=EntryKind.spend_redeem, key="spend", at=T0 + timedelta(days=60)
    )
    lots = points.points_of(conn, "m1").lots
    # The lot earned on day 0 expires first: all of it goes, then 50 of day 20's; day 50 untouched.
    assert [(lot.points, lot.remaining) for lot in lots] == [(100, 50), (100, 100)]
    taken = conn.execute(
        select(func.count(), func.sum(points_allocations.c.points)).where(
            points_allocations.c.entry_id == entry_id
        )
    ).one()
    assert tuple(taken) == (2, 150)
    check_invariants(conn)


def test_spend_beyond_the_balance_is_refused_and_changes_nothing(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1")
    _give(conn, "m1", 100, T0, "seed")
    with pytest.raises(InsufficientPoints) as refused:
        points.spend(conn, "m1", 101, reason="gift", key="g1", at=T0)
    assert refused.value.code == "insufficient_points"
    assert points.balance_of(conn, "m1").available == 100
    # Pending points cannot be spent either.
    orders.place(conn, program, order("o1", price=50_000), at=T0)
    with pytest.raises(InsufficientPoints):
        points.spend(conn, "m1", 150, reason="gift", key="g2", at=T0)
    check_invariants(conn)


def test_expiry_takes_what_is_left_of_lots_past_their_end_fifo(conn: Connection) -> None:
    program = make_program(expiry="days", expiry_days=10)
    add_members(conn, "m1", "m2")
    points.adjust(conn, program, "m1", 100, reason="a", key="a", at=T0)
    points.adjust(conn, program, "m1", 50, reason="b", key="b", at=T0 + timedelta(days=5))
    points.adjust(conn, program, "m2", 70, reason="c", key="c", at=T0)
    points.spend(conn, "m1", 30, reason="gift", key="s", at=T0 + timedelta(days=1))
    # Day 0's lots end at the start of day 11 (UTC here? the program's zone is Shanghai).
    assert points.expire_due(conn, at=T0 + timedelta(days=9)) == 0
    assert points.expire_due(conn, at=T0 + timedelta(days=12)) == 70 + 70
    assert points.balance_of(conn, "m1").available == 50
    assert points.balance_of(conn, "m2").available == 0
    assert points.expire_due(conn, at=T0 + timedelta(days=12)) == 0
    assert points.expire_due(conn, at=T0 + timedelta(days=17)) == 50
    check_invariants(conn)


def test_awards_review_once_per_review_and_check_in_once_per_day(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1")
    first = points.award(conn, program, "m1", AwardKind.review, "r1", at=T0)
    replay = points.award(conn, program, "m1", AwardKind.review, "r1", at=T0 + timedelta(hours=1))
    assert (first.points, replay.points, replay.entry_id) == (20, 20, first.entry_id)
    points.award(conn, program, "m1", AwardKind.check_in, "c1", at=T0)
    # 15:00 UTC is 23:00 in Shanghai, the same day: no second check-in.
    points.award(conn, program, "m1", AwardKind.check_in, "c2", at=T0.replace(hour=15))
    # 16:30 UTC is already the next day in Shanghai.
    points.award(conn, program, "m1", AwardKind.check_in, "c3", at=T0.replace(hour=16, minute=30))
    assert points.balance_of(conn, "m1").available == 20 + 5 + 5
    with pytest.raises(AwardNotConfigured):
        points.award(conn, make_program(review=0), "m1", AwardKind.review, "r2", at=T0)
    check_invariants(conn)


def test_daily_and_monthly_caps_cut_awards(conn: Connection) -> None:
    program = make_program(daily_cap=150, monthly_cap=250)
    add_members(conn, "m1")
    placed, _ = orders.place(conn, program, order("o1", price=10_000), at=T0)
    assert placed.points_earned == 100
    placed, _ = orders.place(conn, program, order("o2", price=10_000), at=T0)
    assert placed.points_earned == 50  # the day's cap
    placed, _ = orders.place(conn, program, order("o3", price=20_000), at=T0 + timedelta(days=1))
    assert placed.points_earned == 100  # the month's cap (250) is reached
    placed, _ = orders.place(conn, program, order("o4", price=20_000), at=T0 + timedelta(days=2))
    assert placed.points_earned == 0
    assert points.balance_of(conn, "m1").pending == 250
    placed, _ = orders.place(
        conn, program, order("o5", price=10_000), at=datetime(2026, 4, 2, tzinfo=UTC)
    )
    assert placed.points_earned == 100
    check_invariants(conn)


def test_adjustments_need_a_reason_are_audited_and_replay_is_a_no_op(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1")
    first = points.adjust(conn, program, "m1", 300, reason="goodwill", key="adj-1", at=T0)
    again = points.adjust(conn, program, "m1", 300, reason="goodwill", key="adj-1", at=T0)
    assert first.entry_id == again.entry_id
    assert points.balance_of(conn, "m1").available == 300
    points.adjust(conn, program, "m1", -120, reason="correction", key="adj-2", at=T0)
    assert points.balance_of(conn, "m1").available == 180
    with pytest.raises(InsufficientPoints):
        points.adjust(conn, program, "m1", -181, reason="too much", key="adj-3", at=T0)
    with pytest.raises(NothingToAdjust):
        points.adjust(conn, program, "m1", 0, reason="nothing", key="adj-4", at=T0)
    reasons = conn.execute(
        select(audit_log.c.action, audit_log.c.reason)
        .where(audit_log.c.member_id == "m1")
        .order_by(audit_log.c.ts, audit_log.c.audit_id)
    ).all()
    assert [tuple(r) for r in reasons] == [
        ("points.adjust", "goodwill"),
        ("points.adjust", "correction"),
    ]
    check_invariants(conn)


def test_history_pages_newest_first(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "m1")
    for i in range(5):
        points.adjust(
            conn, program, "m1", 10 + i, reason="seed", key=f"h{i}", at=T0 + timedelta(minutes=i)
        )
    page = points.points_of(conn, "m1", limit=2)
    assert [e.available_delta for e in page.history.items] == [14, 13]
    page2 = points.points_of(conn, "m1", after=page.history.next_cursor, limit=2)
    assert [e.available_delta for e in page2.history.items] == [12, 11]
    page3 = points.points_of(conn, "m1", after=page2.history.next_cursor, limit=2)
    assert [e.available_delta for e in page3.history.items] == [10]
    assert page3.history.next_cursor is None
    assert page.balance.available == 60
