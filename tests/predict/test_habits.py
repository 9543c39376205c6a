"""Habits: next purchase dates from hand-counted purchase days, best times from profiles."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa

from memberwise.predict.habits import best_times, next_purchase, purchase_days

SHANGHAI = "Asia/Shanghai"


def _purchases(rows: list[tuple[str, datetime]]) -> pa.Table:
    return pa.table(
        {
            "member_id": pa.array([m for m, _ in rows], pa.string()),
            "ts": pa.array([t for _, t in rows], pa.timestamp("us", tz="UTC")),
        }
    )


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


PURCHASES = _purchases(
    [
        # a: Jan 1 (twice, one day), Jan 5, Jan 15 -> gaps 4, 10 -> median 7 -> Jan 22
        ("a", _utc(2024, 1, 1, 2)),
        ("a", _utc(2024, 1, 1, 12)),
        ("a", _utc(2024, 1, 5, 3)),
        ("a", _utc(2024, 1, 15, 3)),
        # b: a single purchase day -> no interval, no date
        ("b", _utc(2024, 1, 3, 3)),
        # c: 17:00 UTC on Jan 1 is 01:00 on Jan 2 in Shanghai; days Jan 2, 3, 5, 11
        # -> gaps 1, 2, 6 -> median 2 -> Jan 13
        ("c", _utc(2024, 1, 1, 17)),
        ("c", _utc(2024, 1, 3, 1)),
        ("c", _utc(2024, 1, 5, 1)),
        ("c", _utc(2024, 1, 11, 1)),
        # d: days Jan 1 and Jan 4 -> one gap of 3 -> Jan 7
        ("d", _utc(2024, 1, 4, 1)),
        ("d", _utc(2024, 1, 1, 1)),
    ]
)


def test_purchase_days_are_distinct_days_in_the_program_time_zone() -> None:
    days = purchase_days(PURCHASES, timezone=SHANGHAI).to_pylist()
    as_dates = [
        (r["member_id"], date.fromordinal(date(1970, 1, 1).toordinal() + r["day"])) for r in days
    ]

    assert as_dates[:3] == [
        ("a", date(2024, 1, 1)),
        ("a", date(2024, 1, 5)),
        ("a", date(2024, 1, 15)),
    ]
    assert ("c", date(2024, 1, 2)) in as_dates and ("c", date(2024, 1, 1)) not in as_dates
    assert len(as_dates) == 3 + 1 + 4 + 2


def test_next_purchase_is_the_last_day_plus_the_median_interval() -> None:
    rows = {r["member_id"]: r for r in next_purchase(PURCHASES, timezone=SHANGHAI).to_pylist()}

    assert rows["a"] == {
        "member_id": "a",
        "purchase_days": 3,
        "purchase_interval_days": 7.0,
        "next_purchase_date": date(2024, 1, 22),
    }
    assert rows["b"]["purchase_days"] == 1
    assert rows["b"]["purchase_interval_days"] is None and rows["b"]["next_purchase_date"] is None
    assert (rows["c"]["purchase_interval_days"], rows["c"]["next_purchase_date"]) == (
        2.0,
        date(2024, 1, 13),
    )
    assert (rows["d"]["purchase_interval_days"], rows["d"]["next_purchase_date"]) == (
        3.0,
        date(2024, 1, 7),
    )


def test_in_utc_the_same_purchases_fall_on_other_days() -> None:
    rows = {r["member_id"]: r for r in next_purchase(PURCHASES, timezone="UTC").to_pylist()}

    # c in UTC: Jan 1, 3, 5, 11 -> gaps 2, 2, 6 -> median 2 -> Jan 13 (same date, other days)
    assert rows["c"]["purchase_days"] == 4 and rows["c"]["purchase_interval_days"] == 2.0
    # a's two Jan 1 purchases stay one day in UTC as well
    assert rows["a"]["purchase_days"] == 3


def test_no_purchases_give_an_empty_table() -> None:
    table = next_purchase(_purchases([]), timezone=SHANGHAI)
    assert table.num_rows == 0 and "next_purchase_date" in table.column_names


def test_best_times_are_the_peaks_and_the_population_habit_without_one() -> None:
    profiles = pa.table(
        {
            "member_id": ["a", "b", "c", "d"],
            "peak_hour": pa.array([21, None, 9, 21], pa.int32()),
            "peak_weekday": pa.array([6, None, 1, 1], pa.int32()),
        }
    )

    rows = best_times(profiles).to_pylist()

    assert rows == [
        {"member_id": "a", "best_hour": 21, "best_weekday": 6},
        {"member_id": "b", "best_hour": 21, "best_weekday": 1},
        {"member_id": "c", "best_hour": 9, "best_weekday": 1},
        {"member_id": "d", "best_hour": 21, "best_weekday": 1},
    ]


def test_best_times_ties_go_to_the_earliest_and_nobody_gets_midnight_monday() -> None:
    tied = pa.table(
        {
            "member_id": ["a", "b", "c"],
            "peak_hour": pa.array([22, 8, None], pa.int32()),
            "peak_weekday": pa.array([None, None, None], pa.int32()),
        }
    )

    rows = best_times(tied).to_pylist()

    assert rows[2] == {"member_id": "c", "best_hour": 8, "best_weekday": 1}
