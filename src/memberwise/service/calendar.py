"""Business time: which seconds count towards a business-hours SLA, and when a target falls due.

A working day is Monday to Friday, minus Chinese public holidays and plus make-up workdays
(``chinese-calendar``) when the program says ``holidays: chinese``; the program's own
``extra_holidays`` / ``extra_workdays`` override both (and cover years chinese-calendar does not
know yet, where it falls back to weekends). Working hours are ``[start, end)`` in the program's
display time zone. All instants are UTC and whole seconds.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import chinese_calendar

from memberwise.program.desk import CalendarSettings, Hours

_DAY = timedelta(days=1)


@lru_cache(maxsize=8192)
def _chinese_workday(day: date) -> bool:
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:  # a year the package does not know yet
        return day.weekday() < 5


class Calendar:
    """Counts elapsed seconds and finds deadlines; 24x7 or business hours."""

    def __init__(self, hours: Hours, settings: CalendarSettings, timezone: str) -> None:
        self.hours = hours
        self.settings = settings
        self.zone = ZoneInfo(timezone)
        self._holidays = frozenset(settings.extra_holidays)
        self._workdays = frozenset(settings.extra_workdays)
        self._windows: dict[date, tuple[datetime, datetime] | None] = {}

    def is_workday(self, day: date) -> bool:
        if day in self._workdays:
            return True
        if day in self._holidays:
            return False
        if self.settings.holidays == "chinese":
            return _chinese_workday(day)
        return day.weekday() < 5

    def window(self, day: date) -> tuple[datetime, datetime] | None:
        """The UTC instants a working day's hours start and end (None on a day off)."""
        if day in self._windows:
            return self._windows[day]
        found: tuple[datetime, datetime] | None = None
        if self.is_workday(day):
            start = datetime.combine(day, self.settings.start, self.zone).astimezone(UTC)
            end = datetime.combine(day, self.settings.end, self.zone).astimezone(UTC)
            found = (start, end)
        if len(self._windows) > 20_000:
            self._windows.clear()
        self._windows[day] = found
        return found

    def _local_day(self, at: datetime) -> date:
        return at.astimezone(self.zone).date()

    def seconds_between(self, start: datetime, end: datetime) -> int:
        """Seconds of ``[start, end)`` that count (0 when end <= start)."""
        if end <= start:
            return 0
        if self.hours is Hours.always:
            return int((end - start).total_seconds())
        total = 0
        day = self._local_day(start)
        last = self._local_day(end)
        while day <= last:
            window = self.window(day)
            if window is not None:
                lo, hi = max(start, window[0]), min(end, window[1])
                if hi > lo:
                    total += int((hi - lo).total_seconds())
            day += _DAY
        return total

    def add(self, start: datetime, seconds: int) -> datetime:
        """The earliest instant ``t`` with ``seconds_between(start, t) == seconds``."""
        if seconds <= 0:
            return start
        if self.hours is Hours.always:
            return start + timedelta(seconds=seconds)
        left = seconds
        day = self._local_day(start)
        for _ in range(3660):  # ten years of days off in a row is not a calendar
            window = self.window(day)
            if window is not None:
                lo = max(start, window[0])
                if window[1] > lo:
                    available = int((window[1] - lo).total_seconds())
                    if available >= left:
                        return lo + timedelta(seconds=left)
                    left -= available
            day += _DAY
        raise ValueError("no working time within ten years; check the calendar")  # pragma: no cover
