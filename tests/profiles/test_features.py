"""Profile features: exact values from hand-counted events, on DuckDB (Spark: test_engines.py)."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ibis
import pyarrow as pa
import pytest

from memberwise.events.bulk import ingest_paths
from memberwise.events.schemas import INPUT_SCHEMA
from memberwise.kit.lake import EventLake, to_lake_table
from memberwise.kit.warehouse import duckdb_backend
from memberwise.profiles.features import member_profiles
from memberwise.profiles.fields import FIELD_NAMES

TAOBAO = Path(__file__).resolve().parents[3] / "shared" / "data" / "taobao_userbehavior_43users.csv"
CHINA = timedelta(hours=8)
NO_MEMBERS = pa.table(
    {
        "member_id": pa.array([], pa.string()),
        "region": pa.array([], pa.string()),
        "credit_stars": pa.array([], pa.int32()),
    }
)


def profiles_of(
    lake: EventLake,
    as_of: datetime,
    members: pa.Table = NO_MEMBERS,
    offset: timedelta = CHINA,
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    con = duckdb_backend()
    profiles, details = member_profiles(
        lake.events_table(con), ibis.memtable(members), as_of=as_of, utc_offset=offset
    )
    rows = {r["member_id"]: r for r in con.to_pyarrow(profiles).to_pylist()}
    detail_rows = con.to_pyarrow(details.order_by(["member_id", "detail", "rank"])).to_pylist()
    con.disconnect()
    return rows, detail_rows


def test_taobao_user_1_matches_a_hand_count_of_the_file(tmp_path: Path) -> None:
    lake = EventLake(tmp_path / "lake")
    ingest_paths([TAOBAO], lake, fmt="taobao", deadletter_dir=tmp_path / "dead")
    with TAOBAO.open() as handle:
        mine = [r for r in csv.reader(handle) if r[0] == "1"]
    times = [datetime.fromtimestamp(int(r[4]), UTC) for r in mine]
    as_of = datetime(2017, 12, 4, tzinfo=UTC)
    local_hours = Counter((t + CHINA).hour for t in times)

    profiles, details = profiles_of(lake, as_of)
    user = profiles["1"]

    assert len(profiles) == 43
    assert Counter(r[3] for r in mine) == {"pv": 55}
    assert user["views_30d"] == user["views_90d"] == user["views_365d"] == 55
    assert user["events_30d"] == user["lifetime_events"] == 55
    assert user["favorites_30d"] == user["carts_30d"] == user["purchases_30d"] == 0
    assert user["orders_365d"] == user["spend_365d"] == 0
    assert user["recency_days"] is None and user["last_purchase"] is None
    assert user["distinct_categories_30d"] == len({r[2] for r in mine}) == 20
    assert user["active_days_30d"] == len({t.date() for t in times})
    assert user["first_seen"] == min(times)
    assert user["last_seen"] == max(times)
    assert user["tenure_days"] == (as_of - min(times)).days
    assert user["peak_hour"] == min(local_hours, key=lambda h: (-local_hours[h], h))
    late = sum(n for h, n in local_hours.items() if h >= 22 or h < 2)
    assert user["share_events_22_to_02"] == pytest.approx(late / 55, abs=1e-12)
    assert user["views_per_category_30d"] == pytest.approx(55 / 20)
    assert user["r_score"] is None and user["price_band"] is None
    categories = Counter(r[2] for r in mine)
    top = [d for d in details if d["member_id"] == "1" and d["detail"] == "top_categories"]
    expected = sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert [(d["key"], d["value"]) for d in top] == [(k, n / 55) for k, n in expected]


T0 = datetime(2026, 11, 20, 12, tzinfo=UTC)


def event(n: int, member: str, type: str, age: timedelta, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {f.name: None for f in INPUT_SCHEMA}
    row.update(event_id=f"e{n}", member_id=member, type=type, ts=T0 - age, **extra)
    return row


def lake_of(tmp_path: Path, rows: list[dict[str, Any]]) -> EventLake:
    lake = EventLake(tmp_path / "lake")
    table = pa.Table.from_pylist(rows, schema=INPUT_SCHEMA)
    table = table.append_column(
        "ingested_at", pa.array([T0] * len(rows), pa.timestamp("us", tz="UTC"))
    )
    lake.append(to_lake_table(table), prefix="t")
    return lake


def test_orders_spend_windows_and_scores_follow_the_documented_rules(tmp_path: Path) -> None:
    day = timedelta(days=1)
    rows = [
        # a: one two-line order 10 days ago, one order without id 100 days ago, a refund.
        event(
            1,
            "a",
            "purchase",
            10 * day,
            order_id="o1",
            price=1000,
            quantity=2,
            category_id="c1",
            brand="b1",
        ),
        event(2, "a", "purchase", 10 * day, order_id="o1", price=500, category_id="c2"),
        event(3, "a", "purchase", 100 * day, price=300, category_id="c1"),
        event(4, "a", "refund", 9 * day, order_id="o1", price=500),
        event(5, "a", "review", 8 * day, rating=4),
        event(6, "a", "review", 8 * day, rating=1),
        event(7, "a", "view", 400 * day, category_id="c9"),
        # b: bought on Singles' Day (China date) 9 days before as-of, 5 views, a cart.
        event(
            8,
            "b",
            "purchase",
            timedelta(days=9, hours=2),
            order_id="o2",
            price=2000,
            category_id="c1",
        ),
        *(event(10 + i, "b", "view", i * day, category_id="c1", channel="app") for i in range(5)),
        event(20, "b", "cart", day, category_id="c1", channel="web"),
        # c: only views, one event after as-of (ignored).
        event(21, "c", "view", 40 * day, region="浙江", channel="app"),
        event(22, "c", "view", -day, region="上海"),
    ]
    lake = lake_of(tmp_path, rows)
    members = pa.table(
        {
            "member_id": ["a", "zz"],
            "region": ["北京", "广东"],
            "credit_stars": pa.array([5, 3], pa.int32()),
        }
    )

    profiles, details = profiles_of(lake, T0, members)
    a, b, c = profiles["a"], profiles["b"], profiles["c"]

    assert sorted(profiles) == ["a", "b", "c"]  # registered-only "zz" has no events
    assert (a["orders_30d"], a["orders_90d"], a["orders_365d"], a["lifetime_orders"]) == (
        1,
        1,
        2,
        2,
    )
    assert (a["purchases_30d"], a["units_30d"], a["units_365d"]) == (2, 3, 4)
    assert (a["spend_30d"], a["spend_365d"], a["lifetime_spend"]) == (2500, 2800, 2800)
    assert a["aov_365d"] == 1400.0
    assert a["refunds_365d"] == 1 and a["refund_amount_365d"] == 500
    assert a["refund_rate_365d"] == pytest.approx(1 / 3)
    assert a["avg_rating_365d"] == 2.5 and a["reviews_30d"] == 2
    assert a["recency_days"] == 10 and a["events_365d"] == 6 and a["lifetime_events"] == 7
    assert a["distinct_categories_30d"] == 2 and a["distinct_categories_365d"] == 2
    assert a["distinct_brands_365d"] == 1
    assert (a["region"], a["credit_stars"]) == ("北京", 5)
    assert c["region"] == "浙江"  # the latest event's region up to as-of; not registered
    assert b["singles_day_share_365d"] == 1.0 and a["singles_day_share_365d"] == 0.0
    assert (b["views_30d"], b["carts_30d"], b["view_to_cart_90d"]) == (5, 1, 0.2)
    assert b["cart_to_purchase_90d"] == 1.0
    assert (b["top_channel"], b["top_channel_share"], b["distinct_channels_90d"]) == (
        "app",
        5 / 6,
        2,
    )
    # Buyers a (recency 10, 2 orders, 2800) and b (9, 1, 2000): percent_rank 0 or 1 -> 1 or 5.
    assert (a["r_score"], a["f_score"], a["m_score"], a["rfm_score"]) == (1, 5, 5, 11)
    assert (b["r_score"], b["f_score"], b["m_score"], b["rfm_score"]) == (5, 1, 1, 7)
    assert c["r_score"] is None and c["rfm_score"] is None
    # Category c1's year purchases by amount: 300 (a), 2000 (a), 2000 (b) -> pct 0, .5, .5.
    bands = {
        (d["member_id"], d["key"]): d["value"] for d in details if d["detail"] == "price_bands"
    }
    assert bands == {("a", "c1"): 2.0, ("a", "c2"): 1.0, ("b", "c1"): 3.0}
    assert (a["price_band"], b["price_band"]) == (2, 3)


def test_an_empty_lake_gives_no_profiles_with_every_field(tmp_path: Path) -> None:
    con = duckdb_backend()
    profiles, _ = member_profiles(
        EventLake(tmp_path).events_table(con), ibis.memtable(NO_MEMBERS), as_of=T0
    )
    table = con.to_pyarrow(profiles)
    assert table.num_rows == 0
    assert table.column_names == ["member_id", *FIELD_NAMES]


def test_the_as_of_clock_moves_the_windows(tmp_path: Path) -> None:
    lake = lake_of(tmp_path, [event(1, "a", "view", timedelta(days=29, hours=23))])
    now, _ = profiles_of(lake, T0)
    later, _ = profiles_of(lake, T0 + timedelta(hours=2))
    assert (now["a"]["views_30d"], later["a"]["views_30d"], later["a"]["views_90d"]) == (1, 0, 1)


def test_the_documented_field_list_is_the_catalog() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "profiles.md").read_text()
    section = docs.split("## Profile fields")[1].split("\n## ")[0]
    documented = [line.split("`")[1] for line in section.splitlines() if line.startswith("| `")]
    assert documented == list(FIELD_NAMES)


def test_bucketed_rfm_quintiles_equal_percent_rank_ones_exactly(tmp_path: Path) -> None:
    """The distributed form of the RFM scores (rank = buyers in lower value buckets + rank in
    the bucket) gives percent_rank's quintiles exactly, ties and extremes included."""
    day = timedelta(days=1)
    spends = [5, 5, 10, 20, 20, 20, 40, 80, 160, 1000, 1_000_000]
    ages = [1, 1, 2, 3, 30, 30, 90, 91, 200, 250, 300]
    orders = [1, 1, 1, 1, 2, 2, 2, 3, 3, 5, 8]
    rows, n = [], 0
    for i, (spend, age, count) in enumerate(zip(spends, ages, orders, strict=True)):
        for k in range(count):
            n += 1
            price = spend if k == 0 else 0  # the first order carries the member's spend
            rows.append(
                event(n, f"m{i:02d}", "purchase", (age + k) * day, order_id=f"o{n}", price=price)
            )
    rows.append(event(999, "viewer", "view", day, category_id="c1"))
    lake = lake_of(tmp_path, rows)
    results = []
    for bucketed in (False, True):
        con = duckdb_backend()
        profiles, _ = member_profiles(
            lake.events_table(con),
            ibis.memtable(NO_MEMBERS),
            as_of=T0,
            utc_offset=CHINA,
            bucketed_quintiles=bucketed,
        )
        table = con.to_pyarrow(profiles.order_by("member_id"))
        results.append(table.select(["member_id", *FIELD_NAMES]).to_pylist())
        con.disconnect()
    plain, bucketed_rows = results
    assert bucketed_rows == plain  # every field, not only the scores
    scores = {r["member_id"]: (r["r_score"], r["f_score"], r["m_score"]) for r in plain}
    # Hand count: n = 11 buyers, score = floor(5 * (buyers below) / 10) + 1, at most 5.
    assert [scores[f"m{i:02d}"][2] for i in range(11)] == [1, 1, 2, 2, 2, 2, 4, 4, 5, 5, 5]
    assert [scores[f"m{i:02d}"][1] for i in range(11)] == [1, 1, 1, 1, 3, 3, 3, 4, 4, 5, 5]
    assert [scores[f"m{i:02d}"][0] for i in range(11)] == [5, 5, 5, 4, 3, 3, 3, 2, 2, 1, 1]
    assert scores["viewer"] == (None, None, None)
