"""Journeys on the real stores: enrollment by trigger occurrence, waits, steps through the
ledgers and the outbox, exits, and replays that give nothing twice."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import Connection, select

from memberwise.campaigns import journeys
from memberwise.campaigns.schemas import JourneyCreate
from memberwise.kit.outbox import outbox
from memberwise.kit.time import utcnow
from memberwise.ledger import orders, points
from memberwise.privacy.schemas import SYSTEM
from tests.ledger.factories import add_members, make_program, order


def expiring_points_journey() -> JourneyCreate:
    return JourneyCreate.model_validate(
        {
            "name": "use your points",
            "trigger": {"kind": "points_expiring", "days": 30},
            "channels": ["app"],
            "steps": [
                {"wait_hours": 0, "offer": {"kind": "message", "message": "points expire soon"}},
                {"wait_hours": 48, "offer": {"kind": "coupon", "coupon_template": "ten_off"}},
            ],
        }
    )


def test_points_expiring_journey_enrolls_once_steps_after_waits_and_exits(
    conn: Connection,
) -> None:
    program = make_program(expiry="days", expiry_days=20)
    add_members(conn, "a", "b", "c")
    now = utcnow() - timedelta(days=5)
    for m in ("a", "b", "c"):
        points.adjust(conn, program, m, 500, reason="goodwill", key=f"k-{m}", at=now)
    made = journeys.create(conn, program, expiring_points_journey(), actor=SYSTEM)

    first = journeys.run(conn, program, now=now + timedelta(days=1))
    assert (first.enrolled, first.stepped, first.completed) == (3, 3, 0)
    again = journeys.run(conn, program, now=now + timedelta(days=1))
    assert again == type(again)()  # a replay enrolls and sends nothing

    # b orders, c spends all their points: both leave before the second step.
    orders.place(conn, program, order("o-b", "b", at=now + timedelta(days=1, hours=1)))
    points.adjust(
        conn, program, "c", -500, reason="spent", key="spend-c", at=now + timedelta(days=1)
    )
    second = journeys.run(conn, program, now=now + timedelta(days=3, hours=1))
    assert (second.stepped, second.completed, second.exited) == (1, 1, 2)

    page = journeys.enrollments(conn, made.journey_id, after=None, limit=10, status=None)
    state = {e.member_id: (e.status, e.step, e.exit_reason) for e in page.items}
    assert state == {
        "a": ("completed", 2, None),
        "b": ("exited", 1, "ordered"),
        "c": ("exited", 1, "trigger_resolved"),
    }
    steps = conn.execute(
        select(outbox.c.member_id, outbox.c.payload)
        .where(outbox.c.event_type == "journey.step")
        .order_by(outbox.c.seq)
    ).all()
    sent = [(m, json.loads(p)["step"], json.loads(p)["offer"]["kind"]) for m, p in steps]
    assert sorted(sent) == [
        ("a", 0, "message"),
        ("a", 1, "coupon"),
        ("b", 0, "message"),
        ("c", 0, "message"),
    ]
    assert journeys.get(conn, made.journey_id).enrollments == {"completed": 1, "exited": 2}


def test_a_refused_step_is_recorded_and_the_journey_goes_on(conn: Connection) -> None:
    program = make_program(expiry="days", expiry_days=20)
    add_members(conn, "a")
    now = utcnow() - timedelta(days=5)
    points.adjust(conn, program, "a", 100, reason="goodwill", key="k-a", at=now)
    body = JourneyCreate.model_validate(
        {
            "name": "twice the single coupon",
            "trigger": {"kind": "points_expiring", "days": 30},
            "channels": ["app"],
            "exit_on_order": False,
            "steps": [
                {"offer": {"kind": "coupon", "coupon_template": "single"}},
                {"offer": {"kind": "coupon", "coupon_template": "single"}},
            ],
        }
    )
    made = journeys.create(conn, program, body, actor=SYSTEM)
    report = journeys.run(conn, program, now=now)
    assert (report.stepped, report.skipped) == (1, 0)
    report = journeys.run(conn, program, now=now)
    assert (report.stepped, report.skipped) == (0, 1)  # per-member limit 1
    [enrollment] = journeys.enrollments(
        conn, made.journey_id, after=None, limit=5, status=None
    ).items
    assert enrollment.status == "completed"
    assert enrollment.exit_reason == "step 1 skipped: per_member_limit"


def test_refusals() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        JourneyCreate.model_validate({"name": "x", "trigger": {"kind": "churn_risk"}, "steps": []})
