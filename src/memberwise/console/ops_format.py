"""Small formatting helpers of the operations pages: SLA countdowns, percentages, intervals."""

from __future__ import annotations

from datetime import datetime


def countdown(due: datetime | None, now: datetime) -> tuple[str, bool]:
    """``("2h 05m", False)`` until ``due``, ``("-1h 10m", True)`` once it has passed."""
    if due is None:
        return "-", False
    seconds = int((due - now).total_seconds())
    late = seconds < 0
    minutes = abs(seconds) // 60
    days, rest = divmod(minutes, 24 * 60)
    text = f"{days}d {rest // 60}h" if days else f"{rest // 60}h {rest % 60:02d}m"
    return ("-" if late else "") + text, late


def percent(value: float, digits: int = 2) -> str:
    return f"{value * 100:.{digits}f}%"


def interval(low: float, high: float, digits: int = 4) -> str:
    return f"[{low:.{digits}f}, {high:.{digits}f}]"
