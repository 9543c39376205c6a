"""Taobao's DSR rules as exact cases, and the rates behind a scorecard (DuckDB)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import ibis
import pyarrow as pa
import pytest

from memberwise.merchants.scorecard import counted_ratings, dsr, service_rates
from memberwise.program.merchants import MerchantSettings

AS_OF = datetime(2026, 12, 1, tzinfo=UTC)
SETTINGS = MerchantSettings()
SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("member_id", pa.string()),
        ("type", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("merchant_id", pa.string()),
        ("order_id", pa.string()),
        ("category_id", pa.string()),
        ("rating", pa.int32()),
        ("properties", pa.string()),
    ]
)


class Events:
    """A tiny event stream: orders and their reviews, built step by step."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, kind: str, ts: datetime, order: str, **extra: Any) -> None:
        self.rows.append(
            {
                "event_id": f"e{len(self.rows)}",
                "member_id": extra.pop("member", "m1"),
                "type": kind,
                "ts": ts,
                "merchant_id": extra.pop("merchant", "s1"),
                "order_id": order,
                "category_id": "c1",
                "rating": extra.pop("rating", None),
                "properties": extra.pop("properties", None),
            }
        )

    def order_and_review(self, bought: datetime, after: timedelta, rating: int, **kw: Any) -> None:
        order = f"o{len(self.rows)}"
        self.add("purchase", bought, order, **kw)
        self.add("review", bought + after, order, rating=rating, **kw)

    def table(self) -> ibis.Table:
        return ibis.memtable(pa.Table.from_pylist(self.rows, schema=SCHEMA))


def counted(events: Events) -> list[tuple[str, int]]:
    expr = counted_ratings(events.table(), as_of=AS_OF, settings=SETTINGS).order_by("ts")
    rows = expr.select("event_id", "described").to_pyarrow().to_pylist()
    return [(r["event_id"], r["described"]) for r in rows]


def test_only_the_first_three_ratings_of_a_buyer_and_shop_a_month_count() -> None:
    # Given four reviews by one buyer of one shop in November (China time) and one in December
    ev = Events()
    for day, stars in ((2, 5), (5, 4), (9, 3), (20, 1)):
        ev.order_and_review(datetime(2026, 11, day, 2, tzinfo=UTC), timedelta(days=1), stars)
    ev.order_and_review(datetime(2026, 11, 30, 15, 30, tzinfo=UTC), timedelta(hours=1), 2)
    # When the ratings are counted
    # Then the 4th of November is not; the last one is 30 Nov 16:30 UTC = 1 Dec China: counted
    assert counted(ev) == [("e1", 5), ("e3", 4), ("e5", 3), ("e9", 2)]


def test_the_monthly_limit_is_per_buyer_and_shop() -> None:
    ev = Events()
    for member, merchant in (("m1", "s1"), ("m1", "s1"), ("m1", "s1"), ("m2", "s1"), ("m1", "s2")):
        ev.order_and_review(
            datetime(2026, 11, 3, tzinfo=UTC), timedelta(days=1), 4, member=member,
            merchant=merchant,
        )  # fmt: skip
    assert len(counted(ev)) == 5


def test_a_rating_on_day_16_after_the_order_is_not_recorded() -> None:
    bought = datetime(2026, 11, 1, tzinfo=UTC)
    ev = Events()
    ev.order_and_review(bought, timedelta(days=15), 5)  # the 15th day: recorded
    ev.order_and_review(bought, timedelta(days=15, seconds=1), 1)  # day 16: not recorded
    assert counted(ev) == [("e1", 5)]


def test_an_unrecorded_rating_does_not_use_up_the_months_three() -> None:
    ev = Events()
    ev.order_and_review(datetime(2026, 10, 20, tzinfo=UTC), timedelta(days=20), 1)  # 9 Nov, late
    for day in (10, 11, 12):
        ev.order_and_review(datetime(2026, 11, day, tzinfo=UTC), timedelta(days=1), 5)
    assert [stars for _, stars in counted(ev)] == [5, 5, 5]


def test_a_rating_181_days_old_has_left_the_window() -> None:
    ev = Events()
    day_180 = AS_OF - timedelta(days=180) + timedelta(seconds=1)
    day_181 = AS_OF - timedelta(days=180)
    ev.order_and_review(day_180 - timedelta(days=1), timedelta(days=1), 5)  # 180 days old
    ev.order_and_review(day_181 - timedelta(days=1, seconds=1), timedelta(days=1), 1)  # day 181
    assert counted(ev) == [("e1", 5)]


def test_dsr_is_the_plain_average_of_each_score() -> None:
    ev = Events()
    bought = datetime(2026, 11, 3, tzinfo=UTC)
    props = '{"dsr_described": 5, "dsr_service": 3, "dsr_logistics": 4}'
    ev.order_and_review(bought, timedelta(days=1), 5, properties=props, member="m1")
    ev.order_and_review(bought, timedelta(days=1), 2, member="m2")  # no DSR: stars for all
    ratings = counted_ratings(ev.table(), as_of=AS_OF, settings=SETTINGS)
    row = dsr(ratings).to_pyarrow().to_pylist()[0]
    assert row == {
        "merchant_id": "s1", "ratings": 2, "dsr_described": 3.5, "dsr_service": 2.5,
        "dsr_logistics": 3.0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("ruling", "disputes"), [(None, 1), ('{"ruling": "merchant"}', 0), ('{"ruling": "member"}', 1)]
)
def test_rates_count_orders_refunds_disputes_complaints_and_handling_time(
    ruling: str | None, disputes: int
) -> None:
    ev = Events()
    t = datetime(2026, 11, 20, tzinfo=UTC)
    ev.add("purchase", t, "o1")
    ev.add("complaint", t + timedelta(hours=10), "o1")
    ev.add("refund", t + timedelta(hours=40), "o1", properties=ruling)
    ev.add("purchase", t, "o2")
    ev.add("purchase", t, "o3")
    ev.add("refund", t + timedelta(hours=5), "o3")
    ev.add("purchase", t - timedelta(days=40), "o4")  # outside the 30 days
    rows = service_rates(ev.table(), as_of=AS_OF, days=30).to_pyarrow().to_pylist()
    assert rows == [
        {"merchant_id": "s1", "orders": 3, "refunds": 2, "disputes": disputes, "complaints": 1,
         "handling_hours": 30.0}
    ]  # fmt: skip
