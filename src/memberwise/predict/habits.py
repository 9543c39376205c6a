"""Habits: when a re-buyer will likely buy next, and when to reach a member.

**Next purchase date** (re-buyers only, i.e. members with purchases on at least two distinct
days): the member's purchase days are taken in the program's time zone; the gaps between
consecutive purchase days are their inter-purchase intervals; the next likely purchase is the
last purchase day plus the **median** interval (the median, not the mean, so one long holiday
pause does not push every forecast out). The date may lie before ``as_of``: the member is then
overdue by their own rhythm, a reminder candidate. Members with a single purchase day have no
interval and get no date (null), rather than a population guess.

**Best hour and weekday to reach**: the member's own ``peak_hour`` (0-23) and ``peak_weekday``
(1 = Monday .. 7 = Sunday) profile fields, i.e. when they were most active in the last 90 days
in the program's time zone. A member without activity in that window gets the most common peak
among all members (the population's habit), so every member has an answer.

Pure functions: Arrow tables in, Arrow tables out.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

EPOCH = date(1970, 1, 1)

NEXT_PURCHASE_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string()),
        pa.field("purchase_days", pa.int64()),
        pa.field("purchase_interval_days", pa.float64()),
        pa.field("next_purchase_date", pa.date32()),
    ]
)


def purchase_days(purchases: pa.Table, *, timezone: str) -> pa.Table:
    """Distinct (member_id, day) of the purchases, days in ``timezone`` as days since
    1970-01-01, sorted by member and day.

    ``purchases`` has ``member_id`` and ``ts`` (a UTC timestamp) columns.
    """
    ts = purchases.column("ts")
    if ts.type.tz is None:
        ts = pc.assume_timezone(ts, "UTC")
    local = pc.local_timestamp(ts.cast(pa.timestamp(ts.type.unit, timezone)))
    days = pc.cast(pc.cast(local, pa.date32()), pa.int32())
    pairs = pa.table({"member_id": purchases.column("member_id"), "day": days})
    distinct = pairs.group_by(["member_id", "day"]).aggregate([])
    return distinct.sort_by([("member_id", "ascending"), ("day", "ascending")])


def next_purchase(purchases: pa.Table, *, timezone: str) -> pa.Table:
    """One row per member with purchases: how many distinct purchase days, the median interval
    between them (null below two days) and the next likely purchase date (last day + median
    interval, rounded to whole days; null below two days)."""
    days = purchase_days(purchases, timezone=timezone)
    if days.num_rows == 0:
        return NEXT_PURCHASE_SCHEMA.empty_table()
    member = days.column("member_id").combine_chunks()
    day = days.column("day").to_numpy().astype(np.int64)
    encoded = pc.dictionary_encode(member)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    # Rows are sorted by member, so each member's days are one run.
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    counts = np.diff(np.r_[starts, len(codes)])
    last = day[starts + counts - 1]
    median = _run_medians(np.diff(day), starts, counts)
    step = np.where(np.isnan(median), 0, np.floor(median + 0.5)).astype(np.int64)
    next_day = last + step
    has = counts >= 2
    return pa.table(
        {
            "member_id": member.take(pa.array(starts)),
            "purchase_days": pa.array(counts.astype(np.int64)),
            "purchase_interval_days": pa.array(median, mask=~has),
            "next_purchase_date": pa.array(next_day.astype(np.int32), mask=~has).cast(pa.date32()),
        },
        schema=NEXT_PURCHASE_SCHEMA,
    )


def _run_medians(
    gaps: NDArray[np.int64], starts: NDArray[np.int64], counts: NDArray[np.int64]
) -> NDArray[np.float64]:
    """The median of each member's gaps (member k's are ``gaps[starts[k] : starts[k] +
    counts[k] - 1]``); NaN for members with one day. Vectorized: gaps sorted within members,
    then the middle one or two picked by index."""
    n_gaps = counts - 1
    result = np.full(len(starts), np.nan)
    if len(gaps) == 0:
        return result
    # Gap i belongs to the member whose run contains both day i and day i + 1.
    owner = np.repeat(np.arange(len(starts)), counts)[:-1]
    valid = np.ones(len(gaps), dtype=bool)
    valid[(starts + counts - 1)[:-1]] = False  # the step from one member's last day to the next
    g, o = gaps[valid], owner[valid]
    order = np.lexsort((g, o))
    g = g[order].astype(np.float64)
    first = np.r_[0, np.cumsum(n_gaps)[:-1]]
    has = n_gaps > 0
    lo = first[has] + (n_gaps[has] - 1) // 2
    hi = first[has] + n_gaps[has] // 2
    result[has] = (g[lo] + g[hi]) / 2
    return result


def best_times(profiles: pa.Table) -> pa.Table:
    """``member_id``, ``best_hour`` (0-23) and ``best_weekday`` (1-7) from the profiles'
    ``peak_hour`` and ``peak_weekday``; a null (no activity in the habit window) becomes the
    most common value among members that have one (0 and 1 when nobody has)."""

    def filled(name: str, default: int) -> pa.Array:
        column = profiles.column(name).cast(pa.int64()).combine_chunks()
        known = column.drop_null()
        if len(known):
            counts = pc.value_counts(known)
            values = counts.field("values").to_numpy()
            freq = counts.field("counts").to_numpy()
            # Most frequent; ties go to the smallest value (as peak_hour's own ties do).
            mode = int(values[np.lexsort((values, -freq))[0]])
        else:
            mode = default
        return pc.fill_null(column, mode).cast(pa.int32())

    return pa.table(
        {
            "member_id": profiles.column("member_id"),
            "best_hour": filled("peak_hour", 0),
            "best_weekday": filled("peak_weekday", 1),
        }
    )


def day_to_date(day: int) -> date:
    """Days since 1970-01-01 as a date."""
    return EPOCH + timedelta(days=day)
