"""UTC time everywhere inside; a column type that keeps it UTC on SQLite and PostgreSQL alike."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator
from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already (our storage convention)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware.

    SQLite has no time zones and would hand back naive values; PostgreSQL's ``timestamptz``
    would hand back the session zone. Both come back as aware UTC here.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


# -- the business-time window ---------------------------------------------------------------------


@dataclass(frozen=True)
class BusinessWindow:
    """When a business time a client sends (an order's ``placed_at``, a payment's
    ``occurred_at``, ...) may lie: not before ``earliest`` (the platform's launch, or a floor a
    deployment configures) and not more than ``max_future`` ahead of now (clock skew between
    hosts). End dates that are meant to lie ahead (a tier grant's ``until``) may reach
    ``horizon`` past now. Year 1 or 9999 would else be stored and break every later read that
    does arithmetic on it."""

    earliest: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    max_future: timedelta = timedelta(minutes=5)
    horizon: timedelta = timedelta(days=3660)


_window = BusinessWindow()


def configure_window(window: BusinessWindow) -> None:
    """Set the window every schema checks against (``Runtime.open`` does, from Settings)."""
    global _window
    _window = window


def business_window() -> BusinessWindow:
    """The window in force."""
    return _window


def _utc_or_refuse(value: datetime) -> datetime:
    try:
        return as_utc(value)
    except OverflowError:  # e.g. 9999-12-31T23:00-05:00 has no UTC time
        raise ValueError("time is out of range") from None


def check_business_time(value: datetime) -> datetime:
    """``value`` in UTC. Raises ValueError when it is outside the business window."""
    at = _utc_or_refuse(value)
    w = _window
    if at < w.earliest or at > utcnow() + w.max_future:
        raise ValueError(
            f"time must lie between {w.earliest.isoformat()} and "
            f"{int(w.max_future.total_seconds())} s from now, not {value.isoformat()}"
        )
    return at


def check_end_time(value: datetime) -> datetime:
    """``value`` in UTC. Raises ValueError unless it lies after now and within the window's
    horizon (an end date in the past or millennia ahead is a mistake)."""
    at = _utc_or_refuse(value)
    now = utcnow()
    if at <= now or at > now + _window.horizon:
        raise ValueError(
            f"time must lie after now and within {_window.horizon.days} days, "
            f"not {value.isoformat()}"
        )
    return at


#: A past (or present) business time a client sends; naive means UTC.
BusinessTime = Annotated[datetime, AfterValidator(check_business_time)]
#: An end date ahead of now, within the window's horizon; naive means UTC.
EndTime = Annotated[datetime, AfterValidator(check_end_time)]


def check_scheduled_time(value: datetime) -> datetime:
    """``value`` in UTC. Raises ValueError unless it lies between the window's earliest time
    and its horizon past now (a launch may be announced ahead of time)."""
    at = _utc_or_refuse(value)
    w = _window
    if at < w.earliest or at > utcnow() + w.horizon:
        raise ValueError(
            f"time must lie between {w.earliest.isoformat()} and {w.horizon.days} days "
            f"from now, not {value.isoformat()}"
        )
    return at


#: A time that may lie in the past or ahead (an item's launch), within the window.
ScheduledTime = Annotated[datetime, AfterValidator(check_scheduled_time)]
