"""rfm_summary: the papers' CDNOW summary reproduced from the raw transactions, and the rules
(distinct days, time in fractions of the unit, repeat-purchase spend, the holdout split)."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pyarrow as pa
import pytest

from memberwise.predict.fitting import InsufficientData
from memberwise.predict.rfm import InvalidTransactions, calibration_and_holdout, rfm_summary
from tests.predict import cdnow


def _table(rows: list[tuple[str, str, float]]) -> pa.Table:
    return pa.table(
        {
            "customer_id": [r[0] for r in rows],
            "date": pa.array([date.fromisoformat(r[1]) for r in rows], pa.date32()),
            "value": [r[2] for r in rows],
        }
    )


def _rows(table: pa.Table) -> dict[str, dict[str, object]]:
    return {r["customer_id"]: r for r in table.to_pylist()}


def test_cdnow_summary_reproduces_the_published_one_exactly() -> None:
    # given the raw CDNOW sample, when summarized in weeks with a 39-week calibration
    ours, theirs = cdnow.summary(), cdnow.published()
    # then every customer has the published x, t_x, T (2 decimals) and zbar
    assert len(ours["customer_id"]) == 2357
    np.testing.assert_array_equal(ours["customer_id"], theirs["ID"])
    np.testing.assert_array_equal(ours["frequency"], theirs["x"])
    np.testing.assert_array_equal(np.round(ours["recency"], 2), theirs["t_x"])
    np.testing.assert_array_equal(np.round(ours["T"], 2), theirs["T"])
    # zbar was rounded half up from exact cents (22.345 -> 22.35); floats hold 22.34499...
    np.testing.assert_array_equal(np.round(ours["monetary_value"] + 1e-9, 2), theirs["zbar"])
    assert int((ours["frequency"] > 0).sum()) == 946


def test_cdnow_holdout_has_the_papers_1882_repeat_purchases_over_39_weeks() -> None:
    ours = cdnow.summary()
    assert int(ours["frequency_holdout"].sum()) == 1882
    assert set(ours["duration_holdout"]) == {39.0}


def test_purchases_on_one_day_count_once_and_their_values_add_up() -> None:
    table = _table(
        [
            ("a", "2024-01-01", 10.0),
            ("a", "2024-01-01", 5.0),  # same day as the first purchase: not a repeat
            ("a", "2024-01-08", 20.0),
            ("a", "2024-01-08", 4.0),  # same day: one repeat purchase worth 24
            ("a", "2024-01-15", 30.0),
            ("b", "2024-01-10", 7.0),
        ]
    )
    rows = _rows(rfm_summary(table, value_col="value", calibration_end="2024-01-29"))
    assert rows["a"] == {
        "customer_id": "a",
        "frequency": 2,
        "recency": 14.0,
        "T": 28.0,
        "monetary_value": 27.0,  # mean of the repeat days 24 and 30, first day left out
    }
    assert rows["b"] == {
        "customer_id": "b",
        "frequency": 0,
        "recency": 0.0,
        "T": 19.0,
        "monetary_value": 0.0,
    }


def test_weeks_are_days_divided_by_seven_and_days_stay_distinct() -> None:
    # two purchases in one week on different days are two purchases (lifetimes' "W" says one)
    table = _table([("a", "2024-01-01", 1.0), ("a", "2024-01-02", 1.0), ("a", "2024-01-04", 1.0)])
    rows = _rows(rfm_summary(table, calibration_end=date(2024, 1, 11), freq="W"))
    assert rows["a"]["frequency"] == 2
    assert rows["a"]["recency"] == pytest.approx(3 / 7)
    assert rows["a"]["T"] == pytest.approx(10 / 7)
    assert "monetary_value" not in rows["a"]


def test_calibration_leaves_out_later_purchases_and_later_customers() -> None:
    table = _table(
        [
            ("a", "2024-01-01", 1.0),
            ("a", "2024-01-05", 2.0),
            ("a", "2024-02-01", 3.0),  # after calibration
            ("b", "2024-02-02", 4.0),  # first seen after calibration: not in the summary
        ]
    )
    summary = rfm_summary(table, value_col="value", calibration_end="2024-01-31")
    assert summary["customer_id"].to_pylist() == ["a"]
    assert summary["frequency"].to_pylist() == [1]
    assert summary["monetary_value"].to_pylist() == [2.0]


def test_the_holdout_split_counts_days_after_calibration_up_to_observation_end() -> None:
    table = _table(
        [
            ("a", "2024-01-01", 1.0),
            ("a", "2024-01-20", 2.0),
            ("a", "2024-02-03", 3.0),
            ("a", "2024-02-03", 3.0),
            ("a", "2024-02-10", 5.0),
            ("a", "2024-03-10", 9.0),  # after observation_end: ignored
            ("b", "2024-01-15", 1.0),
            ("c", "2024-02-05", 1.0),  # new in the holdout: not a calibration customer
        ]
    )
    summary = calibration_and_holdout(
        table, value_col="value", calibration_end="2024-01-31", observation_end="2024-02-29"
    )
    rows = _rows(summary)
    assert sorted(rows) == ["a", "b"]
    assert rows["a"]["frequency"] == 1
    assert rows["a"]["frequency_holdout"] == 2
    assert rows["a"]["monetary_value_holdout"] == 5.5  # days worth 6 and 5
    assert rows["a"]["duration_holdout"] == 29.0
    assert rows["b"]["frequency_holdout"] == 0
    assert rows["b"]["monetary_value_holdout"] == 0.0


def test_timestamps_are_cut_into_days_in_the_given_time_zone() -> None:
    # 2024-01-01 20:00 UTC is 2024-01-02 04:00 in Shanghai: the same day as the next purchase
    table = pa.table(
        {
            "customer_id": ["a", "a"],
            "date": pa.array(
                [datetime(2024, 1, 1, 20), datetime(2024, 1, 2, 9)], pa.timestamp("s", "UTC")
            ),
        }
    )
    utc = rfm_summary(table, calibration_end="2024-01-10")
    shanghai = rfm_summary(table, calibration_end="2024-01-10", timezone="Asia/Shanghai")
    assert utc["frequency"].to_pylist() == [1]
    assert shanghai["frequency"].to_pylist() == [0]


def test_pandas_frames_and_iso_strings_are_accepted() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {"cid": [1, 1, 2], "when": ["2024-01-01", "2024-01-03T10:00:00", "2024-01-02"]}
    )
    summary = rfm_summary(frame, customer_col="cid", datetime_col="when")  # ends on the last day
    assert summary.to_pylist() == [
        {"cid": 1, "frequency": 1, "recency": 2.0, "T": 2.0},
        {"cid": 2, "frequency": 0, "recency": 0.0, "T": 1.0},
    ]


def test_the_summary_matches_lifetimes_on_its_example_transactions() -> None:
    lifetimes_utils = pytest.importorskip("lifetimes.utils")
    pd = pytest.importorskip("pandas")
    raw = pd.read_csv(cdnow.DATASETS / "example_transactions.csv", parse_dates=["date"])
    theirs = lifetimes_utils.summary_data_from_transaction_data(
        raw, "id", "date", observation_period_end="2014-12-31", freq="D"
    )
    ours = rfm_summary(raw, customer_col="id", calibration_end="2014-12-31").to_pandas()
    ours = ours.set_index("id")
    np.testing.assert_array_equal(ours.index.to_numpy(), theirs.index.to_numpy())
    for column in ("frequency", "recency", "T"):
        np.testing.assert_array_equal(ours[column].to_numpy(), theirs[column].to_numpy())


def test_an_empty_calibration_window_is_refused_with_a_code() -> None:
    table = _table([("a", "2024-02-01", 1.0)])
    with pytest.raises(InsufficientData) as refused:
        rfm_summary(table, calibration_end="2024-01-31")
    assert refused.value.code == "insufficient_data"
    assert refused.value.reason == "empty_calibration_window"
    with pytest.raises(InsufficientData):
        rfm_summary(table.slice(0, 0))


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"customer_col": "nope"}, "no column 'nope'"),
        ({"value_col": "nope"}, "no column 'nope'"),
        ({"freq": "M"}, "freq must be"),
        ({"calibration_end": "2024-31-01"}, "calibration_end must be an ISO 8601 date"),
        ({"calibration_end": "2024-01-31", "observation_end": "2024-01-01"}, "must not be before"),
        ({"value_col": "customer_id"}, "must be numeric"),
        ({"datetime_col": "value"}, "must hold dates or timestamps"),
    ],
)
def test_bad_requests_say_what_is_wrong(kwargs: dict[str, str], says: str) -> None:
    table = _table([("a", "2024-01-01", 1.0)])
    with pytest.raises(InvalidTransactions) as refused:
        rfm_summary(table, **kwargs)  # type: ignore[arg-type]
    assert refused.value.code == "invalid_transactions"
    assert says in refused.value.message


def test_null_keys_and_dates_are_refused() -> None:
    table = pa.table(
        {"customer_id": ["a", None], "date": pa.array([date(2024, 1, 1)] * 2, pa.date32())}
    )
    with pytest.raises(InvalidTransactions, match="1 transactions have no customer_id"):
        rfm_summary(table)
    table = pa.table({"customer_id": ["a", "b"], "date": pa.array([date(2024, 1, 1), None])})
    with pytest.raises(InvalidTransactions, match="1 transactions have no date"):
        rfm_summary(table)
