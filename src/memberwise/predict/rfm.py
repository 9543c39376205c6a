"""The RFM summary CLV models consume: purchase transactions in, one row per customer out.

``frequency`` is the number of *repeat* purchase days (a customer's first day of purchase is
not counted, and several purchases on one day count once), ``recency`` the time from the
first to the last purchase day, ``T`` the time from the first purchase day to the end of the
calibration window, both in days (``freq="D"``) or in weeks as fractions (``freq="W"``:
days / 7), and ``monetary_value`` the mean value of the repeat purchase days (the value of
a day is the sum of its purchases; 0 without repeat purchases). This is how Fader, Hardie
and Lee summarized the CDNOW data and how `lifetimes`' ``summary_data_from_transaction_data``
does it (except that `lifetimes` with ``freq="W"`` counts distinct weeks; we always count
distinct days and only measure time in weeks).

Pure functions: tables in, a :class:`pyarrow.Table` out, no I/O.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from memberwise.kit.errors import InvalidRequest
from memberwise.predict.fitting import InsufficientData

Freq = Literal["D", "W"]
_DAYS_PER_UNIT: dict[str, float] = {"D": 1.0, "W": 7.0}


class InvalidTransactions(InvalidRequest):
    """The transactions cannot be summarized: a missing column, an unreadable date, a null."""

    code = "invalid_transactions"


def rfm_summary(
    transactions: Any,
    *,
    customer_col: str = "customer_id",
    datetime_col: str = "date",
    value_col: str | None = None,
    calibration_end: date | datetime | str | None = None,
    observation_end: date | datetime | str | None = None,
    freq: Freq = "D",
    timezone: str | None = None,
) -> pa.Table:
    """Summarize purchase transactions per customer for the CLV models.

    Parameters
    ----------
    transactions : pyarrow.Table or pandas.DataFrame
        One row per purchase: a customer column (any type), a date/timestamp column (or ISO
        8601 strings) and optionally a value column.
    customer_col, datetime_col, value_col : str
        Column names. Without ``value_col`` there is no ``monetary_value`` column.
    calibration_end : date, datetime or ISO string, optional
        The last day of the calibration window (inclusive); default the last purchase day.
        Purchases after it are left out of ``frequency``, ``recency`` and
        ``monetary_value``; customers whose first purchase is after it are left out.
    observation_end : date, datetime or ISO string, optional
        The last day of a holdout window after ``calibration_end``. When given, the output
        gains ``frequency_holdout`` (purchase days in the holdout), ``duration_holdout``
        (its length in ``freq`` units) and, with a value column,
        ``monetary_value_holdout`` (mean value of those days) — the split
        :func:`calibration_and_holdout` describes.
    freq : {"D", "W"}
        Time unit of ``recency``, ``T`` and ``duration_holdout``: days, or weeks as days / 7.
    timezone : str, optional
        IANA zone whose midnight separates days (e.g. the program's ``Asia/Shanghai``);
        naive timestamps are then taken to be UTC (our storage convention). Without it,
        days are UTC days for zone-aware timestamps and wall-clock days for naive ones.

    Returns
    -------
    pyarrow.Table
        One row per customer, sorted by customer: ``customer_col``, ``frequency`` (int64),
        ``recency``, ``T``, ``monetary_value`` (float64) and the holdout columns.

    Raises
    ------
    InvalidTransactions
        A column is missing, a date is unreadable, a key, date or value is null, or the
        window ends are out of order.
    InsufficientData
        No purchase falls on or before ``calibration_end`` (an empty calibration window).
    """
    if freq not in _DAYS_PER_UNIT:
        raise InvalidTransactions(f"freq must be 'D' (days) or 'W' (weeks), not {freq!r}.")
    unit = _DAYS_PER_UNIT[freq]
    table = _as_table(transactions)
    for column in (customer_col, datetime_col, value_col):
        if column is not None and column not in table.column_names:
            raise InvalidTransactions(
                f"The transactions have no column {column!r} "
                f"(columns: {', '.join(table.column_names)})."
            )
    customers = _combine(table[customer_col])
    if customers.null_count:
        raise InvalidTransactions(f"{customers.null_count:,} transactions have no {customer_col}.")
    days = _days(table[datetime_col], datetime_col, timezone)
    values = _values(table[value_col], value_col) if value_col else np.zeros(len(days))
    if len(days) == 0:
        raise InsufficientData(
            "There are no transactions to summarize.", reason="empty_calibration_window"
        )

    cal = int(days.max()) if calibration_end is None else _day(calibration_end, "calibration_end")
    obs = None if observation_end is None else _day(observation_end, "observation_end")
    if obs is not None and obs < cal:
        raise InvalidTransactions("observation_end must not be before calibration_end.")
    last = cal if obs is None else obs

    encoded = pc.dictionary_encode(customers)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    keys = encoded.dictionary
    keep = days <= last
    codes, days, values = codes[keep], days[keep], values[keep]

    # One row per (customer, day), sorted by customer then day, with the day's total value.
    first_day = int(days.min()) if len(days) else 0
    span = int(days.max()) - first_day + 1 if len(days) else 1
    pair_keys, inverse = np.unique(codes * span + (days - first_day), return_inverse=True)
    day_value = np.bincount(inverse, weights=values, minlength=len(pair_keys))
    pair_customer = pair_keys // span
    pair_day = pair_keys % span + first_day
    in_cal = pair_day <= cal

    # Calibration: per customer, the first and last day, the number of days, the values.
    cal_customer, cal_day, cal_value = pair_customer[in_cal], pair_day[in_cal], day_value[in_cal]
    if len(cal_customer) == 0:
        raise InsufficientData(
            "No purchase falls on or before calibration_end: the calibration window is empty.",
            reason="empty_calibration_window",
        )
    who, start, n_days = np.unique(cal_customer, return_index=True, return_counts=True)
    end = start + n_days - 1
    first, latest = cal_day[start], cal_day[end]
    total = np.add.reduceat(cal_value, start)
    repeat = n_days - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        monetary = np.where(repeat > 0, (total - cal_value[start]) / repeat, 0.0)

    columns: dict[str, Any] = {
        customer_col: keys.take(pa.array(who)),
        "frequency": pa.array(repeat.astype(np.int64)),
        "recency": pa.array((latest - first) / unit),
        "T": pa.array((cal - first) / unit),
    }
    if value_col:
        columns["monetary_value"] = pa.array(monetary)
    if obs is not None:
        # Holdout days of the calibration customers (customers first seen later are not in it).
        hold = ~in_cal
        position = np.searchsorted(who, pair_customer[hold])
        position = np.minimum(position, len(who) - 1)
        known = who[position] == pair_customer[hold]
        rows = position[known]
        count = np.bincount(rows, minlength=len(who))
        columns["frequency_holdout"] = pa.array(count.astype(np.int64))
        if value_col:
            spent = np.bincount(rows, weights=day_value[hold][known], minlength=len(who))
            with np.errstate(invalid="ignore", divide="ignore"):
                columns["monetary_value_holdout"] = pa.array(
                    np.where(count > 0, spent / np.maximum(count, 1), 0.0)
                )
        columns["duration_holdout"] = pa.array(np.full(len(who), (obs - cal) / unit))
    summary = pa.table(columns)
    return summary.take(pc.sort_indices(summary, [(customer_col, "ascending")]))


def calibration_and_holdout(
    transactions: Any,
    *,
    calibration_end: date | datetime | str,
    observation_end: date | datetime | str,
    customer_col: str = "customer_id",
    datetime_col: str = "date",
    value_col: str | None = None,
    freq: Freq = "D",
    timezone: str | None = None,
) -> pa.Table:
    """Split transactions at ``calibration_end`` into a calibration summary and the holdout's
    ``frequency_holdout`` / ``duration_holdout`` (/ ``monetary_value_holdout``) per customer.

    The same as :func:`rfm_summary` with both window ends required: the models are fitted on
    the calibration columns and checked by comparing their conditional expectation over
    ``duration_holdout`` with ``frequency_holdout``.
    """
    return rfm_summary(
        transactions,
        customer_col=customer_col,
        datetime_col=datetime_col,
        value_col=value_col,
        calibration_end=calibration_end,
        observation_end=observation_end,
        freq=freq,
        timezone=timezone,
    )


# --- helpers --------------------------------------------------------------------------------


def _as_table(transactions: Any) -> pa.Table:
    if isinstance(transactions, pa.Table):
        return transactions
    if isinstance(transactions, pa.RecordBatch):
        return pa.Table.from_batches([transactions])
    if type(transactions).__module__.startswith("pandas"):
        return pa.Table.from_pandas(transactions, preserve_index=False)
    raise InvalidTransactions(
        f"Expected a pyarrow Table or a pandas DataFrame, got {type(transactions).__name__}."
    )


def _combine(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def purchase_days(column: pa.ChunkedArray, name: str, timezone: str | None) -> NDArray[np.int64]:
    """Days since 1970-01-01 of each transaction in ``timezone`` (the days the summary
    counts). Raises InvalidSummary for a column that is not a time."""
    return _days(column, name, timezone)


def _days(column: pa.ChunkedArray, name: str, timezone: str | None) -> NDArray[np.int64]:
    """Days since 1970-01-01 of each transaction (in ``timezone`` when given)."""
    array = _combine(column)
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            array = pc.cast(array, pa.timestamp("us"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InvalidTransactions(
                f"Column {name!r} has values that are not ISO 8601 dates or times ({exc})."
            ) from exc
        kind = array.type
    if pa.types.is_timestamp(kind):
        if timezone is not None:
            if kind.tz is None:
                array = pc.assume_timezone(array, "UTC")
            array = pc.local_timestamp(array.cast(pa.timestamp(kind.unit, timezone)))
        elif kind.tz is not None:
            array = pc.local_timestamp(array.cast(pa.timestamp(kind.unit, "UTC")))
        array = pc.cast(array, pa.date32())
    elif pa.types.is_date64(kind):
        array = pc.cast(array, pa.date32())
    elif not pa.types.is_date32(kind):
        raise InvalidTransactions(
            f"Column {name!r} must hold dates or timestamps, not {kind} "
            "(parse it first, e.g. with --date-format)."
        )
    if array.null_count:
        raise InvalidTransactions(f"{array.null_count:,} transactions have no {name}.")
    days: NDArray[np.int64] = array.cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
    return days


def _values(column: pa.ChunkedArray, name: str) -> NDArray[np.float64]:
    array = _combine(column)
    if not (
        pa.types.is_integer(array.type)
        or pa.types.is_floating(array.type)
        or pa.types.is_decimal(array.type)
    ):
        raise InvalidTransactions(f"Column {name!r} must be numeric, not {array.type}.")
    if array.null_count:
        raise InvalidTransactions(f"{array.null_count:,} transactions have no {name}.")
    values: NDArray[np.float64] = array.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if not np.isfinite(values).all():
        raise InvalidTransactions(f"Column {name!r} has NaN or infinite values.")
    return values


def _day(value: date | datetime | str, name: str) -> int:
    """Days since 1970-01-01 of a window end (a datetime counts as its calendar day)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise InvalidTransactions(
                f"{name} must be an ISO 8601 date such as 1997-09-30, not {value!r}."
            ) from exc
    if isinstance(value, datetime):
        value = value.date()
    if not isinstance(value, date):
        raise InvalidTransactions(f"{name} must be a date, not {type(value).__name__}.")
    return (value - date(1970, 1, 1)).days
