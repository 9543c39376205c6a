"""When to try a delivery again, when to give up and when to disable an endpoint.

The schedule is the Standard Webhooks reference schedule (immediately, then 5 s, 5 min, 30 min,
2 h, 5 h, 10 h and 10 h after each failure) extended by two daily attempts, so a receiver that
is down over a long weekend (about three days) still gets every message. Each delay is
jittered by up to ±10 % so a receiver coming back is not hit by every retry at once.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum

#: Delay before the next attempt after the n-th failed one (index n-1).
SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
    timedelta(hours=24),
    timedelta(hours=24),
)
#: Attempts in all, the first included.
MAX_ATTEMPTS = len(SCHEDULE) + 1
JITTER = 0.1
#: A receiver's ``Retry-After`` is honoured within these bounds.
RETRY_AFTER_MIN = timedelta(seconds=1)
RETRY_AFTER_MAX = timedelta(hours=24)
#: An endpoint is disabled when every attempt has failed for this long, and at least
#: DISABLE_MIN_FAILURES in a row (one unlucky delivery a week does not disable anything).
DISABLE_AFTER = timedelta(days=5)
DISABLE_MIN_FAILURES = 10


class Outcome(StrEnum):
    delivered = "delivered"
    retry = "retry"
    failed = "failed"  # attempts exhausted
    gone = "gone"  # 410: the endpoint asked never to be called again


def classify(status_code: int | None) -> Outcome:
    """A 2xx delivers; 410 Gone stops; anything else (3xx included, or no answer) retries."""
    if status_code is not None and 200 <= status_code < 300:
        return Outcome.delivered
    if status_code == 410:
        return Outcome.gone
    return Outcome.retry


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """``Retry-After`` as seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return when - now


def next_attempt(
    attempts_made: int,
    now: datetime,
    *,
    retry_after: timedelta | None = None,
    rng: random.Random | None = None,
) -> datetime | None:
    """When to try again after ``attempts_made`` failed attempts; None when they are spent."""
    if attempts_made >= MAX_ATTEMPTS:
        return None
    if retry_after is not None:
        return now + min(max(retry_after, RETRY_AFTER_MIN), RETRY_AFTER_MAX)
    base = SCHEDULE[attempts_made - 1]
    factor = 1 + (rng or random).uniform(-JITTER, JITTER)
    return now + base * factor


def should_disable(
    consecutive_failures: int, failing_since: datetime | None, now: datetime
) -> bool:
    """Whether an endpoint has failed long and often enough to be switched off."""
    return (
        failing_since is not None
        and consecutive_failures >= DISABLE_MIN_FAILURES
        and now - failing_since >= DISABLE_AFTER
    )
