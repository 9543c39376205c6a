"""Tier evaluation rules on hand-made states: edges, downgrades, grace, protection, anchors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from memberwise.membership.tiers import (
    NONE,
    Change,
    Source,
    TierState,
    evaluate,
    from_us,
    period_end,
    to_us,
    transition_matrix,
)
from memberwise.program.schemas import Program
from memberwise.program.service import parse_program

LADDER = """
name: t
display_timezone: Asia/Shanghai
score:
  parts: [{name: spend, field: spend_365d, weight: 0.01, max: 5000}]
tiers:
  - {name: member}
  - name: gold
    qualify: [{score: 600}]
    validity: {days: 365}
    grace_days: 30
    notice_days: 30
  - name: platinum
    qualify: [{score: 1000}]
    validity: {anchor: yearly, cycle_start: "01-01"}
    downgrade: {downgrade}
    protection_days: {protection}
  - {name: vip, manual: true}
"""
NOW = datetime(2026, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def ladder(downgrade: str = "one_step", protection: int = 0) -> Program:
    return parse_program(
        LADDER.replace("{downgrade}", downgrade).replace("{protection}", str(protection))
    )


def state(*members: tuple[int, str, datetime | None, datetime | None]) -> TierState:
    """(tier, source, since, until) per member; tier -1 = none yet."""
    return TierState(
        tier=np.array([m[0] for m in members], dtype=np.int64),
        source=np.array([m[1] for m in members], dtype=object),
        since=np.array([to_us(m[2]) if m[2] else NONE for m in members], dtype=np.int64),
        until=np.array([to_us(m[3]) if m[3] else NONE for m in members], dtype=np.int64),
    )


def run(program: Program, current: TierState, qualified: list[int], at: datetime = NOW):
    joined = np.full(len(qualified), NONE, dtype=np.int64)
    return evaluate(program, current, np.array(qualified, dtype=np.int64), joined, at)


def test_new_members_enter_the_tier_they_qualify_for_with_a_period_from_now() -> None:
    result = run(ladder(), state((-1, "auto", None, None), (-1, "auto", None, None)), [0, 1])
    assert result.state.tier.tolist() == [0, 1]
    assert result.change.tolist() == [Change.initial, Change.initial]
    assert result.state.until[0] == NONE  # the floor never expires
    assert from_us(result.state.until[1]) == NOW + 365 * DAY
    assert from_us(result.state.since[1]) == NOW


def test_an_upgrade_is_immediate_and_restarts_the_period() -> None:
    start = NOW - 100 * DAY
    result = run(ladder(), state((1, "auto", start, start + 365 * DAY)), [2])
    assert result.state.tier.tolist() == [2]
    assert result.change.tolist() == [Change.upgrade]
    # platinum runs to the next 1 January, midnight in Shanghai = 31 December 16:00 UTC.
    assert from_us(result.state.until[0]) == datetime(2026, 12, 31, 16, tzinfo=UTC)


def test_no_downgrade_before_the_period_and_grace_end_then_one_step() -> None:
    start = NOW - 380 * DAY
    until = start + 365 * DAY  # ended 15 days ago; grace is 30 days
    kept = run(ladder(), state((1, "auto", start, until)), [0])
    assert kept.state.tier.tolist() == [1]
    assert kept.change.tolist() == [Change.kept]
    # The notice names the day the grace ends and where the member would go.
    assert from_us(kept.notice_on[0]) == until + 30 * DAY
    assert kept.notice_to.tolist() == [0]
    later = run(ladder(), state((1, "auto", start, until)), [0], at=until + 30 * DAY)
    assert later.state.tier.tolist() == [0]
    assert later.change.tolist() == [Change.downgrade]


def test_the_grace_boundary_is_exact() -> None:
    start = NOW - 400 * DAY
    until = start + 365 * DAY
    edge = until + 30 * DAY
    before = run(
        ladder(), state((1, "auto", start, until)), [0], at=edge - timedelta(microseconds=1)
    )
    at_edge = run(ladder(), state((1, "auto", start, until)), [0], at=edge)
    assert (before.state.tier[0], at_edge.state.tier[0]) == (1, 0)


def test_one_step_goes_down_one_automatic_tier_and_to_qualifying_goes_straight() -> None:
    start = datetime(2025, 3, 1, tzinfo=UTC)
    until = datetime(2025, 12, 31, 16, tzinfo=UTC)
    members = state((2, "auto", start, until))
    assert run(ladder("one_step"), members, [0]).state.tier.tolist() == [1]
    assert run(ladder("to_qualifying"), members, [0]).state.tier.tolist() == [0]


def test_requalifying_renews_the_period() -> None:
    start = NOW - 400 * DAY
    result = run(ladder(), state((1, "auto", start, start + 365 * DAY)), [1])
    assert result.change.tolist() == [Change.renewed]
    assert from_us(result.state.since[0]) == start  # still in gold since then
    assert from_us(result.state.until[0]) == NOW + 365 * DAY


def test_manual_tiers_are_never_touched_until_their_end_date() -> None:
    program = ladder()
    held = state((3, Source.manual, NOW - 10 * DAY, None), (3, Source.manual, NOW - 10 * DAY, NOW))
    result = run(program, held, [0, 1])
    assert result.state.tier.tolist() == [3, 1]
    assert result.change.tolist() == [Change.kept, Change.downgrade]


def test_downgrade_protection_spans_the_year_boundary_in_the_programs_time_zone() -> None:
    program = ladder(protection=30)
    # Entered platinum on 10 December 2025 (Shanghai); the yearly period ends at 1 January
    # 00:00 Shanghai, but protection keeps the tier until 9 January 00:00 UTC + 30 days.
    since = datetime(2025, 12, 10, tzinfo=UTC)
    until = datetime(2025, 12, 31, 16, tzinfo=UTC)
    members = state((2, "auto", since, until))
    new_year_shanghai = datetime(2025, 12, 31, 17, tzinfo=UTC)  # 01:00 on 1 January there
    assert run(program, members, [0], at=new_year_shanghai).state.tier.tolist() == [2]
    protected_until = since + 30 * DAY
    assert run(program, members, [0], at=protected_until - DAY).state.tier.tolist() == [2]
    assert run(program, members, [0], at=protected_until).state.tier.tolist() == [1]


def test_a_yearly_period_turns_over_at_local_midnight() -> None:
    program = ladder()
    tier = np.array([2, 2], dtype=np.int64)
    # 31 Dec 15:59 UTC is still 2025 in Shanghai; 16:00 UTC is 1 January 2026 there.
    starts = np.array(
        [
            to_us(datetime(2025, 12, 31, 15, 59, tzinfo=UTC)),
            to_us(datetime(2025, 12, 31, 16, tzinfo=UTC)),
        ]
    )
    ends = period_end(program, tier, starts, np.full(2, NONE, dtype=np.int64))
    assert [from_us(e) for e in ends] == [
        datetime(2025, 12, 31, 16, tzinfo=UTC),
        datetime(2026, 12, 31, 16, tzinfo=UTC),
    ]


def test_join_date_anchors_end_at_the_next_registration_anniversary() -> None:
    program = parse_program(
        LADDER.replace("{downgrade}", "one_step")
        .replace("{protection}", "0")
        .replace("validity: {days: 365}", "validity: {anchor: join_date}")
    )
    joined = np.array([to_us(datetime(2020, 8, 15, 4, tzinfo=UTC))], dtype=np.int64)
    ends = period_end(program, np.array([1]), np.array([to_us(NOW)]), joined)
    assert from_us(ends[0]) == datetime(2026, 8, 14, 16, tzinfo=UTC)  # 15 Aug 00:00 Shanghai


def test_the_transition_matrix_counts_moves_by_tier_name() -> None:
    start = NOW - 10 * DAY
    members = state(
        (-1, "auto", None, None),
        (0, "auto", start, None),
        (0, "auto", start, None),
        (1, "auto", start, start + 365 * DAY),
    )
    result = run(ladder(), members, [1, 2, 0, 2])
    assert transition_matrix(ladder(), result) == {
        "member": {"platinum": 1, "member": 1},
        "gold": {"platinum": 1},
        "(none)": {"gold": 1},
    }


@pytest.mark.parametrize("score", [599, 600])
def test_exactly_at_the_threshold_qualifies(score: int) -> None:
    import pyarrow as pa

    from memberwise.membership.stage import highest_qualified

    program = ladder()
    table = pa.table({"q_1_0": [score >= 600], "q_2_0": [score >= 1000]})
    assert highest_qualified(program, table, {}).tolist() == [1 if score == 600 else 0]
