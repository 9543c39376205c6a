"""Business rules as functions of candidate arrays, with exact expected survivors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from memberwise.recommend.candidates import RepeatSource
from memberwise.recommend.interactions import from_events
from memberwise.recommend.rules import diverse, not_durable_just_bought, not_hidden, not_refunded
from tests.recommend import categories, checkerboard, item_id, member_id


def test_hidden_items_are_removed() -> None:
    assert not_hidden(np.array([1, 2, 3]), np.array([2])).tolist() == [True, False, True]
    assert not_hidden(np.array([1]), np.array([], np.int64)).tolist() == [True]


def test_diversity_keeps_the_best_of_each_category_up_to_the_cap() -> None:
    pos = np.array([0, 0, 0, 0, 1, 1])
    cat = np.array([5, 5, 5, -1, 5, 5])
    score = np.array([0.1, 0.9, 0.5, 0.2, 0.3, 0.4])
    # Member 0 keeps its two best of category 5 (0.9, 0.5); uncategorized items are not capped.
    assert diverse(pos, cat, score, max_per_category=2).tolist() == [
        False,
        True,
        True,
        True,
        True,
        True,
    ]
    assert diverse(pos, cat, score, max_per_category=1).tolist() == [
        False,
        True,
        False,
        True,
        False,
        True,
    ]


def test_refunded_and_just_bought_durables_are_removed() -> None:
    events = checkerboard(groups=2, members=3)
    member = member_id(0, 0)
    refund = events.slice(0, 1).to_pylist()[0] | {
        "event_id": "refund-1",
        "type": "refund",
        "item_id": item_id(0, 2),
    }
    events = pa.concat_tables([events, pa.Table.from_pylist([refund], schema=events.schema)])
    data = from_events(events, categories=categories(2))
    repeat = RepeatSource()
    repeat.fit(data)
    members = data.member_index([member, member_id(0, 1)])
    # Candidates: the staple, the refunded item, the durable (bought by member 0 only).
    items = data.item_index([item_id(0, 0), item_id(0, 2), item_id(0, 5)])
    pos = np.array([0, 0, 0, 1, 1, 1])
    item = np.tile(items, 2)
    assert not_refunded(data, members, pos, item).tolist() == [True, False, True, True, True, True]
    # Member 0 bought the durable 53 days ago: within a 90-day cooldown, not within 30 days.
    assert not_durable_just_bought(data, members, pos, item, repeat, cooldown=90).tolist() == [
        True,
        True,
        False,
        True,
        True,
        True,
    ]
    assert not_durable_just_bought(data, members, pos, item, repeat, cooldown=30).all()
