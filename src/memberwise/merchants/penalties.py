"""Penalty points as a pure function of ledger entries: the yearly reset and which thresholds
a balance has crossed.

Taobao clears ordinary violation points once a year, except for shops whose points are so high
that their penalties continue; the program says the date (month/day in its display time zone)
and the level (``reset_keep_above``) at or above which points are carried over.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time
from zoneinfo import ZoneInfo

from memberwise.program.merchants import MerchantSettings, Threshold


def reset_dates(
    first: datetime, at: datetime, settings: MerchantSettings, tz: str
) -> list[datetime]:
    """The yearly reset instants (UTC-aware) in ``(first, at]``, oldest first."""
    zone = ZoneInfo(tz)
    found = []
    for year in range(first.astimezone(zone).year, at.astimezone(zone).year + 1):
        local = datetime.combine(
            datetime(year, settings.reset_month, settings.reset_day).date(), time(), zone
        )
        if first < local <= at:
            found.append(local)
    return found


def period_start(at: datetime, settings: MerchantSettings, tz: str) -> datetime:
    """The latest reset instant at or before ``at`` (the start of the current points year)."""
    zone = ZoneInfo(tz)
    local = at.astimezone(zone)
    year = local.year
    start = datetime(year, settings.reset_month, settings.reset_day, tzinfo=zone)
    if start > at:
        start = datetime(year - 1, settings.reset_month, settings.reset_day, tzinfo=zone)
    return start


def balance(
    entries: Sequence[tuple[datetime, int]], at: datetime, settings: MerchantSettings, tz: str
) -> int:
    """Points at ``at`` from ``(created_at, points)`` entries (reversals are negative): at each
    reset the balance goes to 0 unless it is at least ``reset_keep_above``."""
    upto = sorted((ts, p) for ts, p in entries if ts <= at)
    if not upto:
        return 0
    carried = 0
    i = 0
    for boundary in reset_dates(upto[0][0], at, settings, tz):
        while i < len(upto) and upto[i][0] < boundary:
            carried += upto[i][1]
            i += 1
        carried = carried if carried >= settings.reset_keep_above else 0
    return carried + sum(p for _, p in upto[i:])


def crossed(points: int, thresholds: Sequence[Threshold]) -> list[Threshold]:
    """The thresholds ``points`` has reached, lowest first."""
    return [t for t in thresholds if points >= t.points]
