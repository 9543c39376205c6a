"""The demo platform generator: deterministic, valid by the event contract, and realistic
enough for profiles, tiers, CLV, churn and recommendations to find their signals."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from memberwise.demo.catalog import TAXONOMY
from memberwise.demo.commands import app
from memberwise.demo.generator import (
    BIG_SPEND_FEN,
    CHINA,
    TAOBAO_FUNNEL,
    DemoSummary,
    generate_platform,
)
from memberwise.demo.personas import PERSONA_NAMES
from memberwise.events.schemas import (
    EVENT_TYPES,
    ID_FIELDS,
    INPUT_SCHEMA,
    MAX_ID_LEN,
    MAX_TEXT_LEN,
    MIN_TS,
    EventIn,
)

END = date(2024, 12, 1)  # the period ends 2024-11-30 (China date), so Singles' Day is inside
FILES = [
    "categories.parquet",
    "incidents.json",
    "items.parquet",
    "members.parquet",
    "merchants.parquet",
]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _small(out: Path, *, seed: int = 7, workers: int = 1) -> DemoSummary:
    """1,200 members in 3 parts of 400, 30 days: fast, and enough to test determinism."""
    return generate_platform(
        out,
        members=1_200,
        days=30,
        seed=seed,
        end=END,
        events_per_member=40.0,
        workers=workers,
        members_per_part=400,
    )


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoSummary]:
    """The default platform (20,000 members, 120 days, ~2 M events) ending 2024-11-30."""
    out = tmp_path_factory.mktemp("demo") / "platform"
    summary = generate_platform(
        out, members=20_000, days=120, seed=7, end=END, events_per_member=100.0
    )
    return out, summary


@pytest.fixture(scope="module")
def db(default_run: tuple[Path, DemoSummary]) -> Iterator[duckdb.DuckDBPyConnection]:
    """DuckDB views over the default run: events, members, items, merchants, categories."""
    out, _ = default_run
    con = duckdb.connect()
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{out}/events/*.parquet')")
    for name in ("members", "items", "merchants", "categories"):
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{out}/{name}.parquet')")
    con.execute("SET TimeZone = 'Asia/Shanghai'")
    yield con
    con.close()


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    assert row is not None
    return row[0]


# --- determinism and files ------------------------------------------------------------------


def test_same_seed_gives_identical_files_whatever_the_workers(tmp_path: Path) -> None:
    first = _small(tmp_path / "a", workers=1)
    second = _small(tmp_path / "b", workers=2)

    names = _files(tmp_path / "a")
    assert names == [
        "categories.parquet",
        "events/part-00000.parquet",
        "events/part-00001.parquet",
        "events/part-00002.parquet",
        "incidents.json",
        "items.parquet",
        "members.parquet",
        "merchants.parquet",
    ]
    assert _files(tmp_path / "b") == names
    incidents = (tmp_path / "a" / "incidents.json").read_bytes()
    assert incidents == (tmp_path / "b" / "incidents.json").read_bytes()
    for name in (n for n in names if n.endswith(".parquet")):
        assert pq.read_table(tmp_path / "a" / name).equals(pq.read_table(tmp_path / "b" / name))
    assert (first.events, first.events_by_type) == (second.events, second.events_by_type)
    assert first.parts == 3
    assert first.members == 1_200


def test_another_seed_gives_another_platform(tmp_path: Path) -> None:
    _small(tmp_path / "a", seed=7)
    _small(tmp_path / "b", seed=8)

    for name in ("events/part-00000.parquet", "members.parquet", "items.parquet"):
        assert not pq.read_table(tmp_path / "a" / name).equals(pq.read_table(tmp_path / "b" / name))


def test_a_rerun_replaces_the_earlier_parts(tmp_path: Path) -> None:
    _small(tmp_path)
    generate_platform(tmp_path, members=300, days=5, seed=7, end=END, events_per_member=10.0)

    assert _files(tmp_path) == sorted([*FILES, "events/part-00000.parquet"])
    assert pq.read_metadata(tmp_path / "members.parquet").num_rows == 300


def test_an_end_in_the_future_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="future"):
        generate_platform(tmp_path, members=10, days=5, seed=7, end=date(2999, 1, 1))
    assert not (tmp_path / "events").exists()


# --- the event contract ---------------------------------------------------------------------


def test_event_files_have_exactly_the_input_schema(default_run: tuple[Path, DemoSummary]) -> None:
    out, summary = default_run

    parts = sorted((out / "events").glob("part-*.parquet"))

    assert [p.name for p in parts] == [f"part-0000{k}.parquet" for k in range(4)]
    for part in parts:
        assert pq.read_schema(part).equals(INPUT_SCHEMA, check_metadata=False)
    assert sum(pq.read_metadata(p).num_rows for p in parts) == summary.events


def test_every_event_passes_the_contract_rules(db: duckdb.DuckDBPyConnection) -> None:
    types = ", ".join(f"'{t}'" for t in EVENT_TYPES)
    ids = " OR ".join(
        f"({f} IS NOT NULL AND (length({f}) = 0 OR length({f}) > {MAX_ID_LEN}))" for f in ID_FIELDS
    )
    latest = int(datetime.now(UTC).timestamp() * 1e6) + 86_400 * 10**6
    broken = _one(
        db,
        f"""SELECT count(*) FROM events WHERE type NOT IN ({types})
            OR epoch_us(ts) < {int(MIN_TS.timestamp() * 1e6)} OR epoch_us(ts) > {latest}
            OR price < 0 OR quantity NOT BETWEEN 1 AND 1000000 OR rating NOT BETWEEN 1 AND 5
            OR length(query) > {MAX_TEXT_LEN} OR length(text) > {MAX_TEXT_LEN}
            OR (properties IS NOT NULL AND NOT json_valid(properties)) OR {ids}""",
    )
    duplicates = _one(db, "SELECT count(*) - count(DISTINCT event_id) FROM events")

    assert broken == 0
    assert duplicates == 0


def test_a_sample_of_events_validates_with_the_api_model(db: duckdb.DuckDBPyConnection) -> None:
    rows = db.execute(
        "SELECT * EXCLUDE (ts), epoch_us(ts) AS us FROM events "
        "WHERE hash(event_id) % 500 = 0 OR type NOT IN ('view', 'cart', 'favorite')"
    ).fetchall()
    names = [d[0] for d in db.description or []]

    for row in rows[:: max(1, len(rows) // 5_000)]:
        record = dict(zip(names, row, strict=True))
        record["ts"] = datetime.fromtimestamp(record.pop("us") / 1e6, UTC)
        if record["properties"] is not None:
            record["properties"] = orjson.loads(record["properties"])
        EventIn.model_validate({k: v for k, v in record.items() if v is not None})


# --- what the summary says ------------------------------------------------------------------


def test_the_default_run_has_the_asked_for_size(
    default_run: tuple[Path, DemoSummary], db: duckdb.DuckDBPyConnection
) -> None:
    _, summary = default_run

    assert summary.members == _one(db, "SELECT count(DISTINCT member_id) FROM members") == 20_000
    assert summary.items == _one(db, "SELECT count(*) FROM items") == 10_000
    assert summary.merchants == _one(db, "SELECT count(*) FROM merchants") == 240
    leaves = sum(len(top.leaves) for top in TAXONOMY)
    assert summary.categories == _one(db, "SELECT count(*) FROM categories") == 16 + leaves
    assert (summary.first_day, summary.last_day, summary.parts) == ("2024-08-03", "2024-11-30", 4)
    assert summary.events == sum(summary.events_by_type.values())
    by_type = dict(db.execute("SELECT type, count(*) FROM events GROUP BY type").fetchall())
    assert by_type == {k: v for k, v in summary.events_by_type.items() if v}
    # events_per_member is an average over the whole period: within 3 % of 20,000 * 100.
    assert abs(summary.events - 2_000_000) < 60_000


# --- realism --------------------------------------------------------------------------------


def test_funnel_shares_are_taobaos(db: duckdb.DuckDBPyConnection) -> None:
    counts = dict(
        db.execute(
            "SELECT type, count(*) FROM events "
            "WHERE type IN ('view', 'cart', 'favorite', 'purchase') GROUP BY type"
        ).fetchall()
    )
    total, target_total = sum(counts.values()), sum(TAOBAO_FUNNEL.values())

    for kind, target in TAOBAO_FUNNEL.items():
        share, wanted = counts[kind] / total, target / target_total
        # views within 1 point of 89.6 %; cart, favorite, purchase within 10 % of their share
        tolerance = 0.01 if kind == "view" else 0.1 * wanted
        assert abs(share - wanted) <= tolerance, kind


def test_singles_day_is_a_spike(db: duckdb.DuckDBPyConnection) -> None:
    daily = dict(
        db.execute(
            "SELECT CAST(ts AS DATE), count(*) FROM events WHERE type = 'purchase' GROUP BY 1"
        ).fetchall()
    )
    ordinary = sorted(daily.values())[len(daily) // 2]

    assert daily[date(2024, 11, 11)] >= 3 * ordinary
    assert max(daily, key=lambda d: daily[d]) == date(2024, 11, 11)


def test_spend_is_heavy_tailed_with_black_card_candidates(
    default_run: tuple[Path, DemoSummary], db: duckdb.DuckDBPyConnection
) -> None:
    _, summary = default_run
    spend = db.execute(
        "SELECT m.member_id, coalesce(sum(e.price * e.quantity), 0) AS fen FROM members m "
        "LEFT JOIN events e ON e.member_id = m.member_id AND e.type = 'purchase' GROUP BY 1"
    ).fetchall()
    fen = sorted(v for _, v in spend)

    big = sum(v > BIG_SPEND_FEN for v in fen)
    assert big == summary.big_spenders
    assert big >= max(3, 20_000 // 4_000)
    assert big <= 20_000 // 500  # a handful, not a crowd
    median, mean = fen[len(fen) // 2], sum(fen) / len(fen)
    assert median < mean / 5
    assert sum(fen[-200:]) > 0.3 * sum(fen)  # the top 1 % spend over 30 %


def test_bad_merchants_get_far_more_refunds_and_complaints(db: duckdb.DuckDBPyConnection) -> None:
    rates = {
        quality: (refunds / buys, complaints / buys)
        for quality, buys, refunds, complaints in db.execute(
            """SELECT m.quality, count(*) FILTER (WHERE type = 'purchase'),
                      count(*) FILTER (WHERE type = 'refund'),
                      count(*) FILTER (WHERE type = 'complaint')
               FROM events e JOIN merchants m USING (merchant_id) GROUP BY 1"""
        ).fetchall()
    }
    share_bad = _one(db, "SELECT avg((quality = 'bad')::INT) FROM merchants")

    assert 0.03 <= share_bad <= 0.05
    assert rates["bad"][0] > 3 * rates["good"][0]
    assert rates["bad"][1] > 5 * rates["good"][1]


def test_refunds_and_reviews_follow_their_purchases(db: duckdb.DuckDBPyConnection) -> None:
    orphans = _one(
        db,
        """SELECT count(*) FROM events a WHERE a.type IN ('refund', 'review', 'complaint')
           AND NOT EXISTS (SELECT 1 FROM events p WHERE p.type = 'purchase'
                           AND p.order_id = a.order_id AND p.item_id = a.item_id
                           AND p.member_id = a.member_id AND p.ts < a.ts)""",
    )
    multi_line = _one(
        db,
        "SELECT count(*) FROM (SELECT order_id FROM events WHERE type = 'purchase' "
        "GROUP BY 1 HAVING count(*) > 1)",
    )

    assert orphans == 0
    assert multi_line > 100


def test_consumables_are_rebought_and_durables_rarely(db: duckdb.DuckDBPyConnection) -> None:
    repeat = dict(
        db.execute(
            """SELECT consumable, avg((days >= 2)::INT) FROM (
                 SELECT e.member_id, e.item_id, i.consumable,
                        count(DISTINCT CAST(e.ts AS DATE)) AS days
                 FROM events e JOIN items i USING (item_id) WHERE e.type = 'purchase'
                 GROUP BY ALL) GROUP BY 1"""
        ).fetchall()
    )

    assert repeat[True] > 0.1
    assert repeat[True] > 5 * repeat[False]


def test_joiners_start_late_and_churners_stop_early(db: duckdb.DuckDBPyConnection) -> None:
    early = _one(
        db,
        "SELECT count(*) FROM events e JOIN members m USING (member_id) "
        "WHERE e.ts < m.registered_at",
    )
    joiners = _one(db, "SELECT count(*) FROM members WHERE registered_at >= '2024-08-03'")
    quiet_dormant = _one(
        db,
        """SELECT avg((last < TIMESTAMPTZ '2024-10-01')::INT) FROM (
             SELECT m.member_id, max(e.ts) last FROM members m JOIN events e USING (member_id)
             WHERE m.persona = 'dormant' GROUP BY 1)""",
    )

    assert early == 0
    assert 0.05 * 20_000 < joiners < 0.12 * 20_000
    assert quiet_dormant > 0.5


def test_personas_shape_categories_prices_and_hours(db: duckdb.DuckDBPyConnection) -> None:
    baby = dict(
        db.execute(
            """SELECT m.persona, avg((c.parent_id = 'c01')::INT) FROM events e
               JOIN members m USING (member_id) JOIN categories c USING (category_id)
               WHERE e.type = 'view' GROUP BY 1"""
        ).fetchall()
    )
    price = dict(
        db.execute(
            """SELECT m.persona, median(e.price) FROM events e JOIN members m USING (member_id)
               WHERE e.type = 'view' GROUP BY 1"""
        ).fetchall()
    )
    hours = dict(
        db.execute(
            "SELECT hour(ts), count(*) FROM events WHERE type = 'view' GROUP BY 1"
        ).fetchall()
    )

    assert set(baby) == set(PERSONA_NAMES)
    assert baby["young_parent"] > 3 * baby["tech_enthusiast"]
    assert price["luxury_shopper"] > 3 * price["bargain_hunter"]
    assert hours[21] > 3 * hours[4] and hours[12] > hours[10]


def test_member_table_looks_like_real_members(db: duckdb.DuckDBPyConnection) -> None:
    row = db.execute(
        """SELECT count(DISTINCT phone), min(length(phone)), max(length(phone)),
                  bool_and(regexp_full_match(phone, '1[3-9][0-9]{9}')),
                  count(DISTINCT email), bool_and(email LIKE '%@example.%'),
                  min(credit_stars), max(credit_stars), count(DISTINCT region),
                  bool_and(gender IN ('F', 'M')), min(birth_year) >= 1945
           FROM members"""
    ).fetchone()

    assert row == (20_000, 11, 11, True, 20_000, True, 1, 7, 31, True, True)


def test_catalog_has_new_arrivals_and_events_respect_launch_dates(
    db: duckdb.DuckDBPyConnection,
) -> None:
    new = _one(db, "SELECT avg((launched_at >= '2024-08-03')::INT) FROM items")
    too_early = _one(
        db,
        "SELECT count(*) FROM events e JOIN items i USING (item_id) WHERE e.ts < i.launched_at",
    )
    consumables = db.execute(
        "SELECT bool_and(rebuy_days > 0), count(*) FROM items WHERE consumable"
    ).fetchone()

    assert 0.08 < new < 0.16
    assert too_early == 0
    assert consumables is not None and consumables[0] and consumables[1] > 2_000


# --- CLI ------------------------------------------------------------------------------------


def test_cli_generate_prints_json_and_writes_the_files(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["generate", "--members", "300", "--days", "10", "--end", "2024-12-01"]

    result = runner.invoke(app, [*args, "--out", str(tmp_path), "--json"])

    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.output)
    assert summary["members"] == 300
    assert summary["first_day"] == "2024-11-21"
    assert summary["last_day"] == "2024-11-30"
    assert summary["events"] == sum(summary["events_by_type"].values()) > 0
    assert _files(tmp_path) == sorted([*FILES, "events/part-00000.parquet"])


def test_cli_generate_shows_a_summary_and_refuses_a_bad_date(tmp_path: Path) -> None:
    runner = CliRunner()

    shown = runner.invoke(
        app, ["generate", "--members", "50", "--days", "3", "--out", str(tmp_path)]
    )
    refused = runner.invoke(app, ["generate", "--end", "1/12/2024", "--out", str(tmp_path)])

    assert shown.exit_code == 0, shown.output
    assert "members" in shown.output and "purchase" in shown.output
    assert refused.exit_code == 2
    assert "YYYY-MM-DD" in refused.output


def test_one_staple_turns_bad_at_the_recorded_date(tmp_path: Path) -> None:
    generate_platform(tmp_path, members=2_000, days=60, seed=7, end=END, events_per_member=60.0)
    incidents = orjson.loads((tmp_path / "incidents.json").read_bytes())
    merchants = pq.read_table(tmp_path / "merchants.parquet").to_pylist()
    assert sorted(incidents["bad_merchants"]) == sorted(
        m["merchant_id"] for m in merchants if m["quality"] == "bad"
    )
    turned = incidents["turned_bad"]
    assert turned["date"] == "2024-11-10"  # 21 days before the period ends (1 December)
    assert turned["merchant_id"] not in incidents["bad_merchants"]
    events = pq.read_table(tmp_path / "events").to_pylist()
    mine = [e for e in events if e["item_id"] == turned["item_id"]]
    day = datetime.fromisoformat(turned["date"]).replace(tzinfo=CHINA)
    before = [e for e in mine if e["ts"] < day]
    after = [e for e in mine if e["ts"] >= day]

    def rate(rows: list[dict[str, Any]]) -> float:
        buys = sum(e["type"] == "purchase" for e in rows)
        return sum(e["type"] == "complaint" for e in rows) / max(buys, 1)

    assert rate(after) > 0.2 > 0.05 > rate(before)


def _rebuy_share(events_dir: Path) -> float:
    """Share of purchases whose item the member had bought before (in an earlier order)."""
    con = duckdb.connect()
    try:
        share: float = con.execute(
            f"""SELECT avg((n > 0)::INT) FROM (
                  SELECT count(*) OVER (PARTITION BY member_id, item_id ORDER BY ts
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS n
                  FROM read_parquet('{events_dir}/*.parquet') WHERE type = 'purchase')"""
        ).fetchone()[0]  # type: ignore[index]
    finally:
        con.close()
    return share


def test_a_repeat_heavy_shop_rebuys_far_more_and_a_bad_share_is_refused(tmp_path: Path) -> None:
    options: dict[str, Any] = {"members": 1_500, "days": 60, "end": END, "workers": 1}
    generate_platform(tmp_path / "base", **options)
    generate_platform(tmp_path / "repeat", rebuy_share=0.8, **options)

    base = _rebuy_share(tmp_path / "base" / "events")
    heavy = _rebuy_share(tmp_path / "repeat" / "events")
    assert 0.1 < base < 0.35
    assert heavy > 0.5 and heavy > 2 * base
    with pytest.raises(ValueError, match="rebuy_share"):
        generate_platform(tmp_path / "bad", rebuy_share=1.0, **options)
