"""SLA clocks as pure values: start, pause, resume, stop, change of policy, and what is due next.

A clock accumulates the counted seconds of the periods it ran (``elapsed`` up to ``since``, plus
the calendar's seconds from ``since`` while it runs). Pausing folds the running period into
``elapsed``, so a pause never resets (Zammad's failure) and a paused clock does not move
(Frappe's); stopping freezes it for good (Chatwoot's timer ran after resolution); a policy change
keeps ``elapsed`` and only swaps the target and calendar (GLPI lost paused time there).

``alert_at`` is the earliest instant at which the next threshold is crossed -- a warning
fraction or the breach (elapsed *past* the target, i.e. ``target + 1`` counted seconds) --
computed from the calendar when the clock changes, so a sweep only reads rows whose
``alert_at`` has come. Times are whole seconds (callers truncate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime

from memberwise.program.desk import Hours
from memberwise.service.calendar import Calendar


def second(at: datetime) -> datetime:
    """``at`` truncated to the whole second (clocks count whole seconds)."""
    return at.replace(microsecond=0)


@dataclass(frozen=True)
class Clock:
    """One SLA clock of a ticket (see the module docstring)."""

    metric: str
    target: int  # seconds
    hours: Hours
    elapsed: int = 0  # counted seconds up to ``since`` (or in total when not running)
    running: bool = False
    since: datetime | None = None
    stopped: bool = False
    warned: int = 0  # how many warning fractions have been recorded
    breached: bool = False

    def elapsed_at(self, at: datetime, calendar: Calendar) -> int:
        if self.running and self.since is not None:
            return self.elapsed + calendar.seconds_between(self.since, at)
        return self.elapsed


@dataclass(frozen=True)
class Alert:
    """A threshold crossed: a warning (``fraction``) or the breach (``late`` seconds over)."""

    metric: str
    kind: str  # "warning" | "breach"
    fraction: float | None
    late: int
    elapsed: int


def start(metric: str, target: int, hours: Hours, at: datetime) -> Clock:
    return Clock(metric=metric, target=target, hours=hours, running=True, since=second(at))


def pause(clock: Clock, at: datetime, calendar: Calendar) -> Clock:
    """Fold the running period into ``elapsed`` and stop counting (a no-op when not running)."""
    if not clock.running:
        return clock
    return replace(clock, elapsed=clock.elapsed_at(second(at), calendar), running=False, since=None)


def resume(clock: Clock, at: datetime) -> Clock:
    """Count again from ``at`` (a no-op when running or stopped)."""
    if clock.running or clock.stopped:
        return clock
    return replace(clock, running=True, since=second(at))


def stop(clock: Clock, at: datetime, calendar: Calendar) -> Clock:
    """Stop for good (response given, ticket resolved)."""
    return replace(pause(clock, at, calendar), stopped=True)


def reopen(clock: Clock, at: datetime) -> Clock:
    """A stopped clock counts again from ``at``, on top of what it had (a reopened ticket)."""
    return replace(clock, stopped=False, running=True, since=second(at))


def change_policy(
    clock: Clock, at: datetime, old: Calendar, target: int, hours: Hours
) -> tuple[Clock, bool]:
    """The same clock under a new target and calendar: elapsed time (paused or not) is kept.

    Returns the clock and whether the breach is undone (a longer target): the breach event
    stays recorded, the clock may breach again later under the new target.
    """
    at = second(at)
    elapsed = clock.elapsed_at(at, old)
    moved = replace(
        clock,
        target=target,
        hours=hours,
        elapsed=elapsed,
        since=at if clock.running else None,
        breached=clock.breached and elapsed > target,
    )
    return moved, clock.breached and not moved.breached


def thresholds(clock: Clock, warn_at: tuple[float, ...]) -> list[tuple[str, float | None, int]]:
    """The clock's thresholds still ahead: (kind, fraction, counted seconds to reach)."""
    ahead: list[tuple[str, float | None, int]] = [
        ("warning", f, math.ceil(f * clock.target)) for f in warn_at[clock.warned :]
    ]
    if not clock.breached:
        ahead.append(("breach", None, clock.target + 1))
    return ahead


def alert_at(clock: Clock, calendar: Calendar, warn_at: tuple[float, ...]) -> datetime | None:
    """The instant the next threshold is crossed (None: stopped, paused, or nothing ahead)."""
    if not clock.running or clock.stopped or clock.since is None:
        return None
    ahead = thresholds(clock, warn_at)
    if not ahead:
        return None
    need = min(seconds for _, _, seconds in ahead)
    return calendar.add(clock.since, max(0, need - clock.elapsed))


def check(
    clock: Clock, at: datetime, calendar: Calendar, warn_at: tuple[float, ...]
) -> tuple[Clock, list[Alert]]:
    """The thresholds crossed by ``at``: warnings (each once) and the breach (once). A stopped
    clock is frozen: checked after its stop it can only report a breach it already had."""
    at = second(at)
    elapsed = clock.elapsed_at(at, calendar)
    alerts: list[Alert] = []
    warned = clock.warned
    while warned < len(warn_at) and elapsed >= math.ceil(warn_at[warned] * clock.target):
        # a stopped clock warns no more (its answer came); a breached one no longer warns
        if not clock.stopped and not clock.breached and elapsed <= clock.target:
            alerts.append(Alert(clock.metric, "warning", warn_at[warned], 0, elapsed))
        warned += 1
    breached = clock.breached
    if not breached and elapsed > clock.target:
        breached = True
        alerts.append(Alert(clock.metric, "breach", None, elapsed - clock.target, elapsed))
    return replace(clock, warned=warned, breached=breached), alerts


def met(clock: Clock) -> bool:
    """Whether a stopped clock met its target."""
    return clock.elapsed <= clock.target
