"""Online re-ranking rules as pure functions, and the reader of the last minutes' events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from memberwise.events.schemas import LAKE_SCHEMA
from memberwise.kit.lake import EventLake
from memberwise.recommend.serving import (
    Context,
    ItemFacts,
    RecentEvent,
    RecentEvents,
    RerankInput,
    decay,
    fallback_keys,
    fill,
    rerank,
    signals,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def facts(category: str, *, consumable: bool = False, **kw: object) -> ItemFacts:
    values: dict[str, object] = {
        "category_id": category,
        "parent_category_id": category[:3],
        "title": None,
        "in_stock": True,
        "hidden": False,
        "launched_at": None,
        "consumable": consumable,
    }
    values.update(kw)
    return ItemFacts(**values)  # type: ignore[arg-type]


FACTS = {
    "a": facts("c0101"),
    "b": facts("c0101"),
    "c": facts("c0101"),
    "d": facts("c0202"),
    "x": facts("c0303"),
    "y": facts("c0303"),
}


def test_signals_sum_decayed_weights_and_the_item_page_counts_double() -> None:
    recent = [
        RecentEvent("view", "x", NOW - timedelta(minutes=10)),
        RecentEvent("cart", "x", NOW),
        RecentEvent("login", "y", NOW),
    ]

    assert decay(timedelta(minutes=10)) == 0.5
    assert signals(recent, Context("home"), NOW) == {"x": 2.5}
    assert signals(recent, Context("cart"), NOW) == {"x": 2.0}
    assert signals([], Context("item", "y"), NOW) == {"y": 2.0}


def test_context_parsing() -> None:
    assert Context.parse("item:i1") == Context("item", "i1")
    assert str(Context.parse("cart")) == "cart"
    assert Context.parse("item:") is None and Context.parse("checkout") is None


def test_rerank_lifts_neighbours_drops_durables_just_bought_and_caps_categories() -> None:
    data = RerankInput(
        base=[
            ("a", 4.0, "ra", "repeat"),
            ("b", 3.0, "rb", "als"),
            ("c", 2.0, "rc", "als"),
            ("d", 1.0, "rd", "popular"),
        ],
        signals={"x": 1.0},
        similar={"x": [("y", 0.5), ("d", 0.25)]},
        facts=FACTS,
        titles={"x": "X"},
        bought=frozenset({"b"}),
    )

    ranked = rerank(data, n=4, now=NOW, diversity_share=0.5)

    # y: 1.5 x 0.5/0.5; d: 0.1 + 1.5 x 0.25/0.5; b was just bought (a durable): gone;
    # a, c share c0101 within the cap of 2.
    assert [(r.item_id, round(r.score, 4), r.source) for r in ranked] == [
        ("y", 1.5, "session"),
        ("a", 1.0, "repeat"),
        ("d", 0.85, "popular"),
        ("c", 0.4, "als"),
    ]
    assert ranked[2].reason == "rd; related to X you just looked at"


def test_rerank_keeps_a_consumable_just_bought_and_hides_unavailable_items() -> None:
    data = RerankInput(
        base=[("a", 3.0, "", "repeat"), ("b", 2.0, "", "repeat"), ("c", 1.0, "", "als")],
        signals={},
        similar={},
        facts={
            "a": facts("c0101", consumable=True),
            "b": facts("c0101", hidden=True),
            "c": facts("c0102", launched_at=NOW + timedelta(days=1)),
        },
        bought=frozenset({"a"}),
    )

    assert [r.item_id for r in rerank(data, n=3, now=NOW)] == ["a"]
    data.early_access = True
    assert [r.item_id for r in rerank(data, n=3, now=NOW)] == ["a", "c"]


def test_fallback_keys_and_fill_order() -> None:
    assert fallback_keys("浙江", "c01") == [
        "region:浙江|category:c01",
        "category:c01",
        "region:浙江",
        "new",
        "all",
    ]
    assert fallback_keys(None, None) == ["new", "all"]
    lists = [
        ("new", [("x", 9.0, "new arrival"), ("y", 8.0, "new arrival")]),
        ("all", [("a", 5.0, "popular"), ("x", 4.0, "popular"), ("d", 3.0, "popular")]),
    ]

    filled = fill([], lists, FACTS, n=4, now=NOW, category=None, exclude=frozenset({"d"}))

    # New arrivals are capped at a quarter of n (1), d is excluded, x is not repeated: the
    # catalog runs out at 2. Scores fall with the rank, below any personalized item.
    assert [(r.item_id, r.reason, round(r.score, 3)) for r in filled] == [
        ("x", "new arrival", 0.1),
        ("a", "popular", 0.05),
    ]


def _lake_rows(member: str, item: str, ts: datetime, event_id: str) -> pa.Table:
    row: dict[str, object] = dict.fromkeys(LAKE_SCHEMA.names)
    row.update(
        event_id=event_id, member_id=member, type="view", ts=ts, item_id=item, ingested_at=ts
    )
    return pa.Table.from_pylist([row], schema=LAKE_SCHEMA)


def test_recent_events_sees_new_api_files_and_forgets_old_events(tmp_path: Path) -> None:
    now = datetime.now(UTC)  # files are judged by their real modification time too
    lake = EventLake(tmp_path / "lake")
    reader = RecentEvents(lake, window=timedelta(minutes=30))
    lake.append(_lake_rows("m1", "old", now - timedelta(hours=2), "e0"), prefix="api")
    lake.append(_lake_rows("m1", "bulk", now, "e1"), prefix="part")

    assert reader.for_member("m1", now) == []
    lake.append(_lake_rows("m1", "i1", now - timedelta(minutes=1), "e2"), prefix="api")
    lake.append(_lake_rows("m2", "i2", now, "e3"), prefix="api")

    assert reader.for_member("m1", now) == [RecentEvent("view", "i1", now - timedelta(minutes=1))]
    assert [e.item_id for e in reader.for_member("m2", now)] == ["i2"]
    assert reader.for_member("m1", now + timedelta(minutes=31)) == []


@pytest.mark.parametrize("text", ["home", "cart", "item:i1"])
def test_every_context_round_trips(text: str) -> None:
    parsed = Context.parse(text)
    assert parsed is not None and str(parsed) == text
