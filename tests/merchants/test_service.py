"""The penalty ledger, appeals, actions and keep-away on the real stores (SQLite, PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from memberwise.merchants import repository, service
from memberwise.merchants.tables import merchant_actions, merchant_penalties
from memberwise.privacy.tables import audit_log
from memberwise.program.merchants import MerchantSettings

S = MerchantSettings()
TZ = "Asia/Shanghai"
T0 = datetime(2026, 6, 1, tzinfo=UTC)


def violate(conn: Connection, merchant: str, violation: str, key: str, at: datetime = T0) -> Any:
    return service.record_violation(
        conn, S, merchant, violation, "test", idempotency_key=key, tz=TZ, at=at
    )


def count(conn: Connection, table: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_points_add_up_and_the_threshold_takes_its_action_once(conn: Connection) -> None:
    # Given 6 + 6 points (marketing ban at 12 for 30 days)
    first = violate(conn, "s1", "poor_service", "k1")
    assert (first.points, first.actions) == (6, [])
    second = violate(conn, "s1", "poor_service", "k2", T0 + timedelta(days=1))
    # Then the ban starts then and ends 30 days later
    assert second.points == 12
    assert [(a.kind, a.ends_at) for a in second.actions] == [
        ("marketing_ban", T0 + timedelta(days=31))
    ]
    # And a third violation does not take the same action again
    third = violate(conn, "s1", "complaint_upheld", "k3", T0 + timedelta(days=2))
    assert third.points == 14
    assert count(conn, merchant_actions) == 1
    audited = (
        conn.execute(
            select(audit_log.c.action)
            .where(audit_log.c.subject_id == "s1")
            .order_by(audit_log.c.ts)
        )
        .scalars()
        .all()
    )
    assert sorted(audited) == sorted(["merchant.penalty"] * 3 + ["merchant.marketing_ban"])


def test_a_replayed_key_adds_nothing_and_a_reused_key_is_refused(conn: Connection) -> None:
    first = violate(conn, "s1", "dispute_lost", "same")
    again = violate(conn, "s1", "dispute_lost", "same")
    assert again.entry == first.entry
    assert again.points == 4
    with pytest.raises(service.IdempotencyKeyReused):
        violate(conn, "s1", "fake_orders", "same")
    assert count(conn, merchant_penalties) == 1


def test_an_unknown_violation_is_refused_and_nothing_changes(conn: Connection) -> None:
    with pytest.raises(service.UnknownViolation):
        violate(conn, "s1", "bad_mood", "k")
    assert count(conn, merchant_penalties) == 0


def test_an_upheld_appeal_reverses_the_points_and_lifts_the_action(conn: Connection) -> None:
    entry = violate(conn, "s1", "fake_orders", "k1", datetime.now(UTC) - timedelta(days=1))
    assert [a.kind for a in entry.actions] == ["marketing_ban"]
    appeal = service.appeal(conn, entry.entry.entry_id, "the orders were real")
    with pytest.raises(service.AppealExists):
        service.appeal(conn, entry.entry.entry_id, "again")
    decided = service.decide_appeal(conn, S, appeal.appeal_id, uphold=True, decision="ok", tz=TZ)
    assert decided.status == "upheld"
    ledger = service.ledger(conn, S, "s1", TZ)
    assert ledger.points == 0
    assert [e.points for e in ledger.entries] == [12, -12]
    assert ledger.entries[1].reverses == entry.entry.entry_id
    assert ledger.actions[0].lifted_at is not None
    with pytest.raises(service.AppealClosed):
        service.decide_appeal(conn, S, appeal.appeal_id, uphold=False, decision="no", tz=TZ)
    with pytest.raises(service.NotAppealable):
        service.appeal(conn, ledger.entries[1].entry_id, "reverse the reversal")


def test_a_rejected_appeal_keeps_the_points(conn: Connection) -> None:
    entry = violate(conn, "s1", "dispute_lost", "k1")
    appeal = service.appeal(conn, entry.entry.entry_id, "no")
    service.decide_appeal(conn, S, appeal.appeal_id, uphold=False, decision="upheld", tz=TZ)
    assert service.points(conn, S, "s1", T0 + timedelta(days=1), TZ) == 4


def _scorecard(merchant: str, quality_percentile: float) -> dict[str, Any]:
    return {
        "merchant_id": merchant, "industry": "c01", "ratings": 10, "dsr_described": 4.0,
        "dsr_service": 4.0, "dsr_logistics": 4.0, "dsr_score": 4.0, "dsr_percentile": 50.0,
        "orders": 10, "refunds": 1, "disputes": 0, "complaints": 0, "refund_rate": 0.1,
        "dispute_rate": 0.0, "complaint_rate": 0.0, "handling_hours": None, "quality": 50.0,
        "quality_percentile": quality_percentile, "as_of": T0, "build_id": "b1",
    }  # fmt: skip


def test_members_are_kept_away_from_low_and_penalised_merchants(conn: Connection) -> None:
    # Given a merchant below the 10th percentile, one under a marketing ban and a good one
    repository.replace_scorecards(
        conn, [_scorecard("low", 5.0), _scorecard("banned", 60.0), _scorecard("good", 95.0)]
    )
    repository.replace_items(
        conn,
        [{"merchant_id": m, "item_id": f"{m}-{i}"} for m in ("low", "banned", "good")
         for i in (1, 2)],
    )  # fmt: skip
    violate(conn, "banned", "fake_orders", "k1", datetime.now(UTC) - timedelta(hours=1))
    service.clear_exclusion_cache()
    # Then their items are excluded for every tier ("*" by default)
    assert service.excluded_items(conn, S, "m1", tier=None) == {
        "low-1", "low-2", "banned-1", "banned-2",
    }  # fmt: skip
    # And a program keeping only black-card members away excludes nothing for others
    only_black = MerchantSettings.model_validate({"keep_away": {"tiers": ["black_card"]}})
    service.clear_exclusion_cache()
    assert service.excluded_items(conn, only_black, "m1", tier="gold") == frozenset()
    assert len(service.excluded_items(conn, only_black, "m1", tier="black_card")) == 4
    service.clear_exclusion_cache()


def test_badges_go_to_the_best_merchants_without_points_once_a_month(conn: Connection) -> None:
    repository.replace_scorecards(
        conn, [_scorecard("best", 95.0), _scorecard("penalised", 96.0), _scorecard("mid", 50.0)]
    )
    violate(conn, "penalised", "complaint_upheld", "k1")
    granted = service.grant_badges(conn, S, T0 + timedelta(days=1), TZ)
    assert [a.merchant_id for a in granted] == ["best"]
    assert service.grant_badges(conn, S, T0 + timedelta(days=2), TZ) == []
