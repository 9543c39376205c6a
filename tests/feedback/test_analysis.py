"""Feedback analytics on DuckDB: aspects, segmentation, negative mentions, topics, the rising
test and its false-discovery control."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import ibis
import numpy as np
import pyarrow as pa
import pytest

from memberwise.feedback.analysis import (
    RisingTest,
    bh,
    complaint_counts,
    dictionary_words,
    negative_mentions,
    rising,
    topics,
)
from memberwise.feedback.aspects import find_aspects
from memberwise.feedback.text import Segmenter, clauses

AS_OF = datetime(2026, 11, 30, tzinfo=UTC)


def test_aspects_name_their_trigger_and_clause() -> None:
    hits = find_aspects("物流太慢了，客服态度很差。和描述不符")
    assert [(h.aspect, h.trigger, h.phrase) for h in hits] == [
        ("logistics", "物流", "物流太慢了"),
        ("description", "描述不符", "和描述不符"),
        ("service", "客服", "客服态度很差"),
    ]
    assert find_aspects("还可以") == []


def test_the_user_dictionary_keeps_brands_and_shop_terms_whole() -> None:
    segmenter = Segmenter(dictionary_words(["花王"], ["母婴 / 纸尿裤"]))
    assert segmenter.words_of("花王纸尿裤七天无理由退货") == ["花王", "纸尿裤", "七天无理由退货"]
    assert clauses("好评！物流快，包装好。") == ["好评", "物流快", "包装好"]


SCHEMA = pa.schema(
    [("event_id", pa.string()), ("member_id", pa.string()), ("type", pa.string()),
     ("ts", pa.timestamp("us", tz="UTC")), ("item_id", pa.string()),
     ("category_id", pa.string()), ("brand", pa.string()), ("merchant_id", pa.string()),
     ("rating", pa.int32()), ("text", pa.string())]
)  # fmt: skip
SCORED = pa.table(
    {
        "text": ["物流太慢了", "质量很好", "质量很好", "假货"],
        "positive": [0.2, 0.9, 0.9, 0.1],
        "aspect": ["logistics", "quality", "quality", "description"],
        "trigger": ["物流", "质量", "质量", "假货"],
        "phrase": ["物流太慢了", "质量很好", "质量很好", "假货"],
    }
).slice(0, 4)


def _event(i: int, kind: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"e{i}", "member_id": extra.get("member", f"m{i}"), "type": kind,
        "ts": AS_OF - timedelta(days=1), "item_id": "i1", "category_id": "c1", "brand": "b1",
        "merchant_id": "s1", "rating": extra.get("rating"), "text": text,
    }  # fmt: skip


def test_negative_mentions_and_topics_count_by_level_with_examples() -> None:
    rows = [
        _event(1, "review", "物流太慢了", rating=2),
        _event(2, "review", "物流太慢了", rating=3),  # negative text
        _event(3, "complaint", "物流太慢了", member="m1"),
        _event(4, "review", "质量很好", rating=1),  # 1 star: negative whatever the text
        _event(5, "review", "质量很好", rating=5),  # positive: not a problem
        _event(6, "complaint", "假货"),
    ]
    feedback = ibis.memtable(pa.Table.from_pylist(rows, schema=SCHEMA))
    scored = ibis.memtable(SCORED.group_by(SCORED.column_names).aggregate([]))
    mentions = negative_mentions(feedback, scored)
    assert sorted(mentions.event_id.to_pyarrow().to_pylist()) == ["e1", "e2", "e3", "e4", "e6"]
    found = topics(mentions, min_mentions=2).filter(lambda t: t.level == "merchant").to_pyarrow()
    assert found.select(["key", "aspect", "trigger", "mentions", "members", "share",
                         "examples"]).to_pylist() == [
        {"key": "s1", "aspect": "logistics", "trigger": "物流", "mentions": 3, "members": 2,
         "share": 0.6, "examples": ["物流太慢了", None, None]},
    ]  # fmt: skip


def test_bh_matches_the_textbook_example() -> None:
    # Benjamini & Hochberg (1995)'s adjusted values for these p-values, by hand.
    q = bh([0.01, 0.04, 0.03, 0.005])
    assert np.allclose(q, [0.02, 0.04, 0.04, 0.02])


def _counts(rows: list[tuple[str, int, int, int, int]]) -> pa.Table:
    names = ["key", "recent_complaints", "recent_orders", "base_complaints", "base_orders"]
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def test_rising_flags_a_jump_not_a_steady_rate_nor_a_handful() -> None:
    table = rising(
        _counts(
            [
                ("jump", 8, 40, 1, 160),  # 20 % against 0.6 %
                ("steady", 8, 400, 30, 1600),  # 2 % both
                ("few", 2, 4, 0, 100),  # too few complaints to call
            ]
        ),
        RisingTest(fdr=0.01, min_complaints=3, min_ratio=2.0),
    )
    assert table.column("rising").to_pylist() == [True, False, False]
    # P(X >= 8), X ~ Binomial(9 complaints, 40 / 200 of the orders): 9 * 0.2^8 * 0.8 + 0.2^9
    assert table.column("p_value")[0].as_py() == pytest.approx(1.8944e-05, rel=1e-9)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_under_no_change_the_test_almost_never_flags(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 2000
    orders1, orders0 = rng.integers(50, 500, n), rng.integers(200, 2000, n)
    rate = rng.uniform(0.001, 0.05, n)
    rows = list(zip([f"k{i}" for i in range(n)], rng.poisson(orders1 * rate),
                    orders1, rng.poisson(orders0 * rate), orders0, strict=True))  # fmt: skip
    assert sum(rising(_counts(rows)).column("rising").to_pylist()) <= 2


def test_complaint_counts_split_the_recent_week_from_the_baseline() -> None:
    rows = []
    for i, (kind, days) in enumerate(
        [("purchase", 1), ("complaint", 2), ("purchase", 10), ("complaint", 20), ("purchase", 40)]
    ):
        event = _event(i, kind, "x")
        event["ts"] = AS_OF - timedelta(days=days)
        rows.append(event)
    events = ibis.memtable(pa.Table.from_pylist(rows, schema=SCHEMA))
    got = complaint_counts(events, as_of=AS_OF, level="item_id").to_pyarrow().to_pylist()
    assert got == [{"key": "i1", "recent_complaints": 1, "recent_orders": 1,
                    "base_complaints": 1, "base_orders": 1}]  # fmt: skip
