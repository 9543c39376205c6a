"""Automatic tickets from events through the program's rules (the rule language)."""

from __future__ import annotations

from sqlalchemy import Connection

from memberwise.service import auto, service
from tests.service.factories import PROGRAM, T0, add_members, make_program

RULES = """
  auto:
    - {name: complaint, event: complaint, kind: complaint, priority: high}
    - {name: unhappy_black, event: review, rule: "rating <= 2 and tier = 'black'", kind: complaint}
"""


def test_complaints_and_bad_reviews_of_chosen_tiers_open_tickets_once(conn: Connection) -> None:
    program = make_program(PROGRAM + RULES)
    add_members(conn, program, m1="member", b1="black")
    events = [
        {"event_id": "e1", "member_id": "m1", "type": "complaint", "ts": T0, "text": "物流太慢"},
        {"event_id": "e2", "member_id": "m1", "type": "review", "ts": T0, "rating": 1},
        {"event_id": "e3", "member_id": "b1", "type": "review", "ts": T0, "rating": 2},
        {"event_id": "e4", "member_id": "b1", "type": "review", "ts": T0, "rating": 5},
        {"event_id": "e5", "member_id": "b1", "type": "review", "ts": T0},  # no rating: no
        {"event_id": "e6", "member_id": "ghost", "type": "complaint", "ts": T0},
    ]
    opened = auto.open_for_events(conn, program, events)
    tickets = [service.get_ticket(conn, program, t, at=T0) for t in opened]
    assert [(t.member_id, t.kind, t.priority, t.source) for t in tickets] == [
        ("m1", "complaint", "high", "auto"),
        ("b1", "complaint", "normal", "auto"),
    ]
    assert tickets[0].subject == "complaint: 物流太慢"
    assert auto.open_for_events(conn, program, events) == opened
    assert len(service.member_tickets(conn, "m1", limit=10)) == 1
