"""SLA clocks on a simulated clock: elapsed business time against a brute-force minute count,
breaches exactly when elapsed passes the target, and the anchors' known failures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from memberwise.program.desk import CalendarSettings, Hours
from memberwise.service import sla
from memberwise.service.calendar import Calendar

ZONE = "Asia/Shanghai"
BUSINESS = Calendar(Hours.business, CalendarSettings(), ZONE)
ALWAYS = Calendar(Hours.always, CalendarSettings(), ZONE)
WARN = (0.5, 0.8)


def _brute_minute_counts(cal: Calendar, start: datetime, running: list[bool]) -> list[int]:
    """counts[i] = counted minutes in [start, start + i minutes) while running[minute]."""
    counts = [0]
    for i, on in enumerate(running):
        minute = start + timedelta(minutes=i)
        local = minute.astimezone(cal.zone)
        counted = cal.hours is Hours.always or (
            cal.is_workday(local.date()) and cal.settings.start <= local.time() < cal.settings.end
        )
        counts.append(counts[-1] + int(on and counted))
    return counts


def test_chinese_holidays_and_make_up_workdays() -> None:
    # National Day 2025 is off on a Wednesday; Sunday 28 September 2025 is a make-up workday.
    assert not BUSINESS.is_workday(date(2025, 10, 1))
    assert BUSINESS.is_workday(date(2025, 9, 28))
    assert BUSINESS.is_workday(date(2025, 9, 30))
    weekends = Calendar(Hours.business, CalendarSettings(holidays="weekends"), ZONE)
    assert weekends.is_workday(date(2025, 10, 1))
    assert not weekends.is_workday(date(2025, 9, 28))


def test_years_the_package_does_not_know_fall_back_to_weekends_and_the_program() -> None:
    cal = Calendar(
        Hours.business,
        CalendarSettings(extra_holidays=(date(2031, 1, 1),), extra_workdays=(date(2031, 1, 4),)),
        ZONE,
    )
    assert not cal.is_workday(date(2031, 1, 1))  # a Wednesday the program made a holiday
    assert cal.is_workday(date(2031, 1, 2))
    assert cal.is_workday(date(2031, 1, 4))  # a Saturday the program made a workday
    assert not cal.is_workday(date(2031, 1, 5))


def test_business_deadline_skips_the_night_and_the_holiday() -> None:
    # Tuesday 30 September 2025, 17:00 Shanghai; 2 hours of business time: one hour that day,
    # then the National Day week (1-8 October) is off; Thursday 9 October 10:00 Shanghai.
    start = datetime(2025, 9, 30, 9, 0, tzinfo=UTC)
    due = BUSINESS.add(start, 2 * 3600)
    assert due == datetime(2025, 10, 9, 2, 0, tzinfo=UTC)
    assert BUSINESS.seconds_between(start, due) == 7200


_TIMES = st.datetimes(
    min_value=datetime(2025, 1, 20), max_value=datetime(2026, 10, 10), timezones=st.just(UTC)
).map(lambda d: d.replace(second=0, microsecond=0))


@settings(max_examples=200, deadline=None)
@given(start=_TIMES, seconds=st.integers(min_value=0, max_value=20 * 9 * 3600))
def test_add_is_the_inverse_of_counting(start: datetime, seconds: int) -> None:
    due = BUSINESS.add(start, seconds)
    assert BUSINESS.seconds_between(start, due) == seconds
    if seconds:
        assert BUSINESS.seconds_between(start, due - timedelta(seconds=1)) == seconds - 1


_OPS = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=900),  # minutes until the operation
        st.sampled_from(["pause", "resume", "policy", "sweep", "sweep", "sweep"]),
        st.integers(min_value=1, max_value=600),  # a new target in minutes (policy)
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(
    start=_TIMES,
    target=st.integers(min_value=1, max_value=600),
    always=st.booleans(),
    ops=_OPS,
)
def test_elapsed_equals_brute_force_and_breach_exactly_past_target(
    start: datetime, target: int, always: bool, ops: list[tuple[int, str, int]]
) -> None:
    cal = ALWAYS if always else BUSINESS
    hours = Hours.always if always else Hours.business
    clock = sla.start("resolution", target * 60, hours, start)
    # The running state of every simulated minute, replayed by brute force.
    running: list[bool] = []
    now = start
    on = True
    breaches: list[datetime] = []
    for minutes, op, new_target in ops:
        running += [on] * minutes
        now += timedelta(minutes=minutes)
        counts = _brute_minute_counts(cal, start, running)
        assert clock.elapsed_at(now, cal) == counts[-1] * 60
        alert = sla.alert_at(clock, cal, WARN)
        if op == "pause":
            clock, on = sla.pause(clock, now, cal), False
        elif op == "resume":
            clock, on = sla.resume(clock, now), True
        elif op == "policy":
            clock, _ = sla.change_policy(clock, now, cal, new_target * 60, hours)
        else:
            before = clock.breached
            clock, alerts = sla.check(clock, now, cal, WARN)
            crossed = [a for a in alerts if a.kind == "breach"]
            if crossed:
                breaches.append(now)
                assert crossed[0].late == counts[-1] * 60 - clock.target
                # a running clock's alert instant had come: a sweep reading alert_at finds it
                # (a paused one can only pass a target lowered by a policy change, and the
                # service checks the clock at that change)
                assert (alert is not None and alert <= now) or not on
            # a breach is recorded exactly when elapsed passes the target (once)
            assert clock.breached == (before or counts[-1] * 60 > clock.target)
            assert bool(crossed) == (not before and counts[-1] * 60 > clock.target)
        assert clock.elapsed_at(now, cal) == counts[-1] * 60
    assert len(breaches) <= 1 + sum(1 for _, op, _ in ops if op == "policy")


def test_pending_does_not_reset_the_clock() -> None:  # Zammad
    t0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # Monday 08:00 Shanghai
    clock = sla.start("resolution", 4 * 3600, Hours.always, t0)
    clock = sla.pause(clock, t0 + timedelta(hours=1), ALWAYS)
    clock = sla.resume(clock, t0 + timedelta(hours=5))
    assert clock.elapsed_at(t0 + timedelta(hours=6), ALWAYS) == 2 * 3600


def test_pause_stops_the_clock() -> None:  # Frappe
    t0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    clock = sla.pause(
        sla.start("resolution", 600, Hours.always, t0), t0 + timedelta(seconds=200), ALWAYS
    )
    assert sla.alert_at(clock, ALWAYS, WARN) is None
    later, alerts = sla.check(clock, t0 + timedelta(days=3), ALWAYS, WARN)
    assert later.elapsed_at(t0 + timedelta(days=3), ALWAYS) == 200
    assert alerts == [] and not later.breached


def test_no_timer_after_resolution() -> None:  # Chatwoot
    t0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    clock = sla.stop(
        sla.start("resolution", 600, Hours.always, t0), t0 + timedelta(seconds=599), ALWAYS
    )
    assert sla.met(clock)
    assert sla.resume(clock, t0 + timedelta(days=1)) == clock
    assert sla.alert_at(clock, ALWAYS, WARN) is None
    _, alerts = sla.check(clock, t0 + timedelta(days=9), ALWAYS, WARN)
    assert alerts == []


def test_policy_change_keeps_paused_time() -> None:  # GLPI
    t0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    clock = sla.start("resolution", 3600, Hours.always, t0)
    clock = sla.pause(clock, t0 + timedelta(minutes=40), ALWAYS)
    clock, undone = sla.change_policy(clock, t0 + timedelta(hours=2), ALWAYS, 7200, Hours.business)
    assert not undone and not clock.running and clock.elapsed == 2400 and clock.target == 7200
    clock = sla.resume(clock, datetime(2026, 3, 2, 2, 0, tzinfo=UTC))  # 10:00 Shanghai, Monday
    assert clock.elapsed_at(datetime(2026, 3, 2, 3, 0, tzinfo=UTC), BUSINESS) == 2400 + 3600


def test_black_card_callback_three_minutes_around_the_clock() -> None:
    sunday_night = datetime(2026, 3, 1, 15, 0, tzinfo=UTC)  # 23:00 Shanghai, a Sunday
    clock = sla.start("first_response", 180, Hours.always, sunday_night)
    assert sla.alert_at(clock, ALWAYS, ()) == sunday_night + timedelta(seconds=181)
    _, alerts = sla.check(clock, sunday_night + timedelta(seconds=180), ALWAYS, ())
    assert alerts == []
    _, alerts = sla.check(clock, sunday_night + timedelta(seconds=200), ALWAYS, ())
    assert [(a.kind, a.late) for a in alerts] == [("breach", 20)]
