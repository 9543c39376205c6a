"""Business rules as functions of candidate arrays, with exact expected survivors."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from memberwise.recommend.candidates import RepeatSource
from memberwise.recommend.interactions import from_events
from memberwise.recommend.rules import diverse, not_durable_just_bought, not_hidden, not_refunded
from tests.recommend import END, categories, checkerboard, item_id, member_id


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


def _with_refunds(events: pa.Table, member: str, item: str, times: int) -> pa.Table:
    first = events.filter(pc.equal(events.column("member_id"), member)).slice(0, 1).to_pylist()[0]
    refunds = [
        first | {"event_id": f"refund-{member}-{item}-{r}", "type": "refund", "item_id": item}
        for r in range(times)
    ]
    return pa.concat_tables([events, pa.Table.from_pylist(refunds, schema=events.schema)])


def test_an_item_refunded_every_time_it_was_bought_is_removed_one_bought_again_stays() -> None:
    events = checkerboard(groups=2, members=3)
    # Member 0 bought item 2 in 4 baskets; member 1 bought item 3 in 2 baskets.
    events = _with_refunds(events, member_id(0, 0), item_id(0, 2), 4)
    events = _with_refunds(events, member_id(0, 1), item_id(0, 3), 1)
    data = from_events(events)
    members = data.member_index([member_id(0, 0), member_id(0, 1)])
    items = data.item_index([item_id(0, 2), item_id(0, 3)])
    pos = np.array([0, 0, 1, 1])
    item = np.tile(items, 2)
    # 4 refunds of 4 purchases: gone; 1 refund of 2 purchases: bought again after it, kept.
    assert not_refunded(data, members, pos, item).tolist() == [False, True, True, True]


def test_refunded_and_just_bought_durables_are_removed() -> None:
    events = checkerboard(groups=2, members=3)
    member = member_id(0, 0)
    events = _with_refunds(events, member, item_id(0, 2), 4)
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


def test_a_durable_the_member_keeps_rebuying_is_not_held_back() -> None:
    events = checkerboard(groups=2, members=3)
    member = member_id(0, 0)
    bought = events.filter(
        pc.and_(
            pc.equal(events.column("member_id"), member),
            pc.and_(
                pc.equal(events.column("item_id"), item_id(0, 5)),
                pc.equal(events.column("type"), "purchase"),
            ),
        )
    ).to_pylist()
    assert len(bought) == 1
    again = bought[0] | {"event_id": "again", "order_id": "again", "ts": END - timedelta(days=3)}
    # The category's re-buy rate is learned on the platform as it was (a durable there).
    repeat = RepeatSource()
    repeat.fit(from_events(events, categories=categories(2)))
    events = pa.concat_tables([events, pa.Table.from_pylist([again], schema=events.schema)])
    data = from_events(events, categories=categories(2))
    members = data.member_index([member])
    items = data.item_index([item_id(0, 5)])
    pos = np.zeros(1, np.int64)

    assert not repeat.consumable(data, items).any()  # still a durable category
    assert not_durable_just_bought(data, members, pos, items, repeat, cooldown=90).tolist() == [
        True
    ]
