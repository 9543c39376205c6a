"""The business-time window: refused outside it, UTC inside it, never an OverflowError."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from memberwise.kit.time import (
    BusinessWindow,
    business_window,
    check_business_time,
    check_end_time,
    check_scheduled_time,
    configure_window,
    utcnow,
)


@pytest.fixture(autouse=True)
def _default_window() -> Iterator[None]:
    before = business_window()
    configure_window(BusinessWindow())
    yield
    configure_window(before)


def test_a_past_time_in_the_window_comes_back_in_utc() -> None:
    at = datetime(2026, 3, 10, 12, tzinfo=timezone(timedelta(hours=8)))
    assert check_business_time(at) == datetime(2026, 3, 10, 4, tzinfo=UTC)
    assert check_business_time(datetime(2026, 3, 10, 4)) == datetime(2026, 3, 10, 4, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),  # no UTC time
        datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=14))),  # no UTC time either
    ],
)
def test_times_outside_the_window_are_value_errors_not_overflows(value: datetime) -> None:
    for check in (check_business_time, check_end_time, check_scheduled_time):
        with pytest.raises(ValueError, match="time"):
            check(value)


def test_the_future_is_allowed_by_the_clock_skew_only() -> None:
    assert check_business_time(utcnow() + timedelta(minutes=4))
    with pytest.raises(ValueError, match="300 s from now"):
        check_business_time(utcnow() + timedelta(minutes=6))


def test_an_end_time_lies_ahead_within_the_horizon() -> None:
    assert check_end_time(utcnow() + timedelta(days=30))
    with pytest.raises(ValueError, match="time must lie"):
        check_end_time(utcnow() - timedelta(seconds=1))
    with pytest.raises(ValueError, match="time must lie"):
        check_end_time(utcnow() + timedelta(days=3661))


def test_a_scheduled_time_may_be_past_or_ahead() -> None:
    assert check_scheduled_time(datetime(2020, 1, 1, tzinfo=UTC))
    assert check_scheduled_time(utcnow() + timedelta(days=60))


def test_the_window_is_configured() -> None:
    configure_window(
        BusinessWindow(earliest=datetime(2026, 1, 1, tzinfo=UTC), max_future=timedelta(0))
    )
    with pytest.raises(ValueError, match="2026-01-01"):
        check_business_time(datetime(2025, 12, 31, tzinfo=UTC))
    with pytest.raises(ValueError, match="time must lie"):
        check_business_time(utcnow() + timedelta(seconds=5))
