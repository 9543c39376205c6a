"""Penalty points: the yearly reset, the level above which points are kept, thresholds."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from memberwise.merchants.penalties import balance, crossed
from memberwise.program.merchants import ActionKind, MerchantSettings

TZ = "Asia/Shanghai"
SETTINGS = MerchantSettings()  # reset on 1 January (China time), points >= 48 kept


def at(y: int, m: int, d: int, h: int = 12) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


def test_points_reset_on_the_yearly_date() -> None:
    entries = [(at(2025, 3, 1), 12), (at(2025, 12, 31, 10), 6)]
    assert balance(entries, at(2025, 12, 31, 15), SETTINGS, TZ) == 18
    # 31 Dec 16:00 UTC is 1 January 00:00 in Shanghai: the reset
    assert balance(entries, at(2025, 12, 31, 16), SETTINGS, TZ) == 0
    assert balance([*entries, (at(2026, 2, 1), 2)], at(2026, 3, 1), SETTINGS, TZ) == 2


def test_points_at_or_above_the_level_are_kept_across_the_reset() -> None:
    entries = [(at(2025, 3, 1), 48), (at(2026, 2, 1), 2)]
    assert balance(entries, at(2026, 3, 1), SETTINGS, TZ) == 50


def test_a_reversal_counts_in_its_own_year() -> None:
    entries = [(at(2025, 6, 1), 12), (at(2025, 7, 1), -12), (at(2025, 8, 1), 4)]
    assert balance(entries, at(2025, 9, 1), SETTINGS, TZ) == 4


def test_thresholds_crossed_in_order() -> None:
    assert [t.action for t in crossed(30, SETTINGS.thresholds)] == [
        ActionKind.marketing_ban,
        ActionKind.shop_block,
    ]
    assert crossed(11, SETTINGS.thresholds) == []


@given(st.lists(st.tuples(st.integers(0, 364), st.integers(1, 12)), max_size=30))
def test_within_one_points_year_the_balance_is_the_sum_of_entries(
    days: list[tuple[int, int]],
) -> None:
    from datetime import timedelta

    start = datetime(2025, 1, 1, tzinfo=UTC)  # after the 2025 reset (Shanghai midnight)
    entries = [(start + timedelta(days=d), p) for d, p in days]
    assert balance(entries, at(2025, 12, 31, 0), SETTINGS, TZ) == sum(p for _, p in days)
