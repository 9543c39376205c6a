"""Bulk ingest: every kind of bad row reaches the dead letter with its row and reason, the good
rows land, re-runs change nothing, and every format gives the same lake."""

from __future__ import annotations

import csv
import fcntl
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from memberwise.events import bulk_hooks, commands, member_feed, sources
from memberwise.events.bulk import fingerprint, ingest_paths
from memberwise.events.bulk_results import BulkResult
from memberwise.events.schemas import INPUT_SCHEMA, EventIn, max_ts, time_in_range
from memberwise.kit.lake import EventLake

TAOBAO = Path(__file__).resolve().parents[3] / "shared" / "data" / "taobao_userbehavior_43users.csv"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
HEADER = ["event_id", "member_id", "type", "ts", "price", "quantity", "rating", "item_id"]
HEADER += ["properties", "text"]


def good_row(event_id: str, **values: str) -> dict[str, str]:
    row = dict.fromkeys(HEADER, "")
    row.update(event_id=event_id, member_id="m1", type="purchase", ts="2026-05-01T10:00:00Z")
    row.update(price="1999", quantity="2", item_id="i1")
    row.update(values)
    return row


def write_csv(path: Path, rows: list[dict[str, str]], header: list[str] = HEADER) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text(
        "".join((x if isinstance(x, str) else orjson.dumps(x).decode()) + "\n" for x in lines)
    )
    return path


class Run:
    """One lake and dead-letter directory; ``ingest`` runs the bulk ingest into them."""

    def __init__(self, root: Path) -> None:
        self.lake = EventLake(root / "lake")
        self.deadletters = root / "deadletter"
        self.members: list[list[str]] = []

    def ingest(self, *paths: Path, fmt: Any = "auto", now: datetime | None = NOW) -> BulkResult:
        return ingest_paths(
            list(paths),
            self.lake,
            fmt=fmt,
            deadletter_dir=self.deadletters,
            on_members=self.members.append,
            now=now,
        )

    def rows(self) -> list[dict[str, Any]]:
        """The lake's events through the reader, by event_id, without ingested_at."""
        relation = self.lake.events_relation(duckdb.connect())
        table = relation.order("event_id").to_arrow_table().drop_columns(["ingested_at"])
        return table.to_pylist()  # type: ignore[no-any-return]

    def ids(self) -> list[str]:
        return [r["event_id"] for r in self.rows()]

    def stored(self) -> int:
        return self.lake.stats().rows


def deadletter(result: BulkResult) -> list[dict[str, str]]:
    [path] = result.deadletter_paths
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return Run(tmp_path)


def test_good_csv_rows_land_typed_partitioned_and_registered(run: Run, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "events.csv",
        [
            good_row("e1", properties='{"coupon": "C10"}', rating="5", text="很好"),
            good_row("e2", member_id="m2", type="view", ts="2026-05-02 23:30:00", price=""),
        ],
    )

    result = run.ingest(source)

    assert (result.rows_read, result.accepted, result.duplicates, result.rejected) == (2, 2, 0, 0)
    assert result.deadletter_paths == []
    assert result.files[0].files_written == 2
    assert run.rows() == [
        {
            "event_id": "e1",
            "member_id": "m1",
            "type": "purchase",
            "ts": datetime(2026, 5, 1, 10, tzinfo=UTC),
            "item_id": "i1",
            "category_id": None,
            "brand": None,
            "merchant_id": None,
            "price": 1999,
            "quantity": 2,
            "order_id": None,
            "channel": None,
            "query": None,
            "rating": 5,
            "text": "很好",
            "region": None,
            "properties": '{"coupon": "C10"}',
        },
        {
            "event_id": "e2",
            "member_id": "m2",
            "type": "view",
            "ts": datetime(2026, 5, 2, 23, 30, tzinfo=UTC),
            "item_id": "i1",
            "category_id": None,
            "brand": None,
            "merchant_id": None,
            "price": None,
            "quantity": 2,
            "order_id": None,
            "channel": None,
            "query": None,
            "rating": None,
            "text": None,
            "region": None,
            "properties": None,
        },
    ]
    assert [p.parent.name for p in run.lake.files()] == ["date=2026-05-01", "date=2026-05-02"]
    assert run.members == [["m1", "m2"]]


BAD_ROWS = [
    ({"member_id": ""}, "missing_field", "member_id"),
    ({"ts": ""}, "missing_field", "ts"),
    ({"type": ""}, "missing_field", "type"),
    ({"price": "abc"}, "wrong_type", "price"),
    ({"price": "12.5"}, "wrong_type", "price"),
    ({"quantity": "x"}, "wrong_type", "quantity"),
    ({"rating": "4.5"}, "wrong_type", "rating"),
    ({"type": "teleport"}, "unknown_event_type", "type"),
    ({"type": "VIEW"}, "unknown_event_type", "type"),
    ({"ts": "yesterday"}, "bad_time", "ts"),
    ({"ts": "2026-02-30T10:00:00"}, "bad_time", "ts"),
    ({"ts": "1999-12-31T23:59:59Z"}, "bad_time", "ts"),
    ({"ts": "2026-06-02T00:00:01Z"}, "bad_time", "ts"),
    ({"ts": "0"}, "bad_time", "ts"),
    ({"price": "-1"}, "negative_price", "price"),
    ({"item_id": "x" * 129}, "invalid_value", "item_id"),
    ({"event_id": "e" * 129}, "invalid_value", "event_id"),
    ({"text": "字" * 4001}, "invalid_value", "text"),
    ({"rating": "6"}, "invalid_value", "rating"),
    ({"quantity": "0"}, "invalid_value", "quantity"),
    ({"quantity": "1000001"}, "invalid_value", "quantity"),
    ({"properties": "[1, 2]"}, "invalid_value", "properties"),
    ({"properties": "{not json"}, "invalid_value", "properties"),
    # The one member-id rule (kit.ids) holds in files as in the API.
    ({"member_id": "x/profile"}, "invalid_value", "member_id"),
    ({"member_id": "a..b"}, "invalid_value", "member_id"),
    ({"member_id": "m\u202e1"}, "invalid_value", "member_id"),
    ({"member_id": "m\U0001f600"}, "invalid_value", "member_id"),
    ({"member_id": "m 1"}, "invalid_value", "member_id"),
    # Several problems: the first in field order, the time range last (as the API does).
    ({"member_id": "", "price": "-1"}, "missing_field", "member_id"),
    ({"ts": "1990-01-01", "price": "abc"}, "wrong_type", "price"),
]


@pytest.mark.parametrize(("values", "code", "field"), BAD_ROWS)
def test_each_kind_of_bad_row_is_dead_lettered_with_its_row_and_reason(
    run: Run, tmp_path: Path, values: dict[str, str], code: str, field: str
) -> None:
    bad = {**good_row("bad"), **values}
    source = write_csv(tmp_path / "events.csv", [good_row("e1"), bad, good_row("e3")])

    result = run.ingest(source)

    assert (result.rows_read, result.accepted, result.rejected) == (3, 2, 1)
    [letter] = deadletter(result)
    assert (letter["row"], letter["code"], letter["field"]) == ("3", code, field)
    assert letter["message"]
    assert json.loads(letter["raw"]) == {name: (bad[name] or None) for name in HEADER}
    assert run.ids() == ["e1", "e3"]


def test_the_messages_name_the_bad_value(run: Run, tmp_path: Path) -> None:
    rows = [
        good_row("a", price="abc"),
        good_row("b", type="teleport"),
        good_row("c", ts="1990-01-01"),
        good_row("d", quantity="0"),
    ]
    result = run.ingest(write_csv(tmp_path / "events.csv", rows))

    assert [r["message"] for r in deadletter(result)] == [
        "price must be an integer, not 'abc'",
        "unknown event type 'teleport'; expected one of view, search, favorite, cart, "
        "purchase, refund, review, complaint, login, service",
        "ts '1990-01-01' is outside 2000-01-01 .. now + 1 day",
        "quantity must be between 1 and 1000000, not '0'",
    ]


def test_lax_values_are_read_as_the_api_reads_them(run: Run, tmp_path: Path) -> None:
    rows = [
        good_row("a", price="1_000", quantity=" 3 ", rating="5.0"),
        good_row("b", price="12.00", ts="2026-05-01T18:00:00+08:00"),
        good_row("c", ts="1777629600"),
        good_row("d", ts="1777629600000"),
        good_row("e", ts="2026-05-01T10:00"),
        good_row("f", ts="2026-05-01t10:00:00.250z"),
        good_row("g", ts="2026-05-01"),
        good_row("h", member_id=" m1 "),
        good_row("i", ts="2026-05-01T10:00:00,5+01:00"),  # a decimal comma (DuckDB's cast: no)
    ]
    result = run.ingest(write_csv(tmp_path / "events.csv", rows))

    # " m1 " is refused, as the API refuses it: ids are never stripped (kit.ids' one rule).
    assert (result.accepted, result.rejected) == (8, 1)
    assert [(d["row"], d["code"], d["field"]) for d in deadletter(result)] == [
        ("9", "invalid_value", "member_id")
    ]
    got = {r["event_id"]: r for r in run.rows()}
    assert (got["a"]["price"], got["a"]["quantity"], got["a"]["rating"]) == (1000, 3, 5)
    assert got["b"]["price"] == 12
    assert got["b"]["ts"] == datetime(2026, 5, 1, 10, tzinfo=UTC)
    assert got["c"]["ts"] == got["d"]["ts"] == datetime(2026, 5, 1, 10, tzinfo=UTC)
    assert got["e"]["ts"] == datetime(2026, 5, 1, 10, tzinfo=UTC)
    assert got["f"]["ts"] == datetime(2026, 5, 1, 10, 0, 0, 250_000, tzinfo=UTC)
    assert got["g"]["ts"] == datetime(2026, 5, 1, tzinfo=UTC)
    assert got["i"]["ts"] == datetime(2026, 5, 1, 9, 0, 0, 500_000, tzinfo=UTC)
    assert "h" not in got


def test_malformed_csv_rows_are_dead_lettered_with_their_row_numbers(
    run: Run, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "events.csv", [good_row("e1")])
    with open(path, "a") as f:
        f.write("e2,m1,view\n")
        f.write(",".join(good_row("e3").values()) + "\n")
        f.write(",".join([*good_row("e4").values(), "one too many"]) + "\n")
        f.write(",".join(good_row("e5").values()) + "\n")

    result = run.ingest(path)

    assert (result.rows_read, result.accepted, result.rejected) == (5, 3, 2)
    letters = deadletter(result)
    assert [(r["row"], r["code"], r["field"]) for r in letters] == [
        ("3", "malformed_row", ""),
        ("5", "malformed_row", ""),
    ]
    assert letters[0]["message"] == "expected 10 cells, found 3"
    assert json.loads(letters[0]["raw"]) == "e2,m1,view"
    assert run.ids() == ["e1", "e3", "e5"]


def test_bad_json_lines_and_wrong_json_kinds_are_dead_lettered(run: Run, tmp_path: Path) -> None:
    good = {"event_id": "j1", "member_id": "m1", "type": "view", "ts": "2026-05-01T10:00:00Z"}
    source = write_jsonl(
        tmp_path / "events.jsonl",
        [
            good,
            '{"event_id": "j2", "member_id": ',
            {**good, "event_id": "j3", "price": True, "utm": "x"},
            "[1, 2, 3]",
            "",
            {**good, "event_id": "j6", "member_id": 42},
            {**good, "event_id": "j7", "properties": '{"a": 1}'},
            {**good, "event_id": "j8", "price": 12.5},
            {**good, "event_id": "j9", "ts": 1777629600, "properties": {"a": [1]}},
        ],
    )

    result = run.ingest(source)

    assert (result.rows_read, result.accepted, result.rejected) == (8, 3, 5)
    letters = deadletter(result)
    assert [(r["row"], r["code"], r["field"]) for r in letters] == [
        ("2", "malformed_row", ""),
        ("4", "malformed_row", ""),
        ("6", "wrong_type", "member_id"),
        ("7", "wrong_type", "properties"),
        ("8", "wrong_type", "price"),
    ]
    assert letters[1]["message"] == "a line must be a JSON object, not list"
    assert letters[2]["raw"] == orjson.dumps({**good, "event_id": "j6", "member_id": 42}).decode()
    rows = {r["event_id"]: r for r in run.rows()}
    assert sorted(rows) == ["j1", "j3", "j9"]
    assert rows["j3"]["price"] == 1  # pydantic's lax int: true is 1
    assert rows["j9"]["properties"] == '{"a":[1]}'
    assert result.files[0].warnings == ["ignored column(s) not in the event contract: utm"]


AGREEMENT_CASES: list[dict[str, Any]] = [
    {"price": "12"},
    {"price": " 12 "},
    {"price": "12.0"},
    {"price": 12.0},
    {"price": "1_000"},
    {"price": "1__0"},
    {"price": "1e3"},
    {"price": 12.5},
    {"price": -1},
    {"price": True},
    {"price": "12."},
    {"quantity": 0},
    {"quantity": 1_000_000},
    {"quantity": "2"},
    {"rating": 5},
    {"rating": 6},
    {"ts": 1777629600},
    {"ts": "1777629600"},
    {"ts": 1777629600.5},
    {"ts": "1.7776296e9"},
    {"ts": 1777629600000},
    {"ts": "2026-05-01"},
    {"ts": "2026-05-01T10:00"},
    {"ts": "2026-05-01T10"},
    {"ts": "2026-05-01T10:00:00+0800"},
    {"ts": "2026-05-01T10:00:00+08"},
    {"ts": "2026-05-01T24:00:00"},
    {"ts": "2026-05-01T10:00:60"},
    {"ts": " 2026-05-01T10:00:00"},
    {"ts": "2026-05-01T10:00:00 UTC"},
    {"ts": "1999-12-31T23:59:59Z"},
    {"ts": "2000-01-01T00:00:00Z"},
    {"ts": "2999-01-01T00:00:00Z"},
    {"ts": True},
    {"member_id": ""},
    {"member_id": "  "},
    {"member_id": 7},
    {"member_id": None},
    {"member_id": "x/profile"},
    {"member_id": "m\x001"},
    {"member_id": ".."},
    {"member_id": "m\u202e1"},
    {"member_id": "m_1:a-b.c"},
    {"item_id": ""},
    {"item_id": "x" * 128},
    {"item_id": "é" * 129},
    {"item_id": ["x"]},
    {"type": "pv"},
    {"type": " view"},
    {"type": 1},
    {"properties": {}},
    {"properties": []},
    {"properties": "{}"},
    {"query": "q" * 4000},
    {"text": "t" * 4001},
]


def test_bulk_validation_accepts_exactly_what_the_api_model_accepts(
    run: Run, tmp_path: Path
) -> None:
    base = {"member_id": "m1", "type": "view", "ts": "2026-05-01T10:00:00Z"}
    events = [{**base, **case, "event_id": f"c{i}"} for i, case in enumerate(AGREEMENT_CASES)]
    api_accepts = set()
    for event in events:
        try:
            parsed = EventIn.model_validate(event)
        except ValidationError:
            continue
        if time_in_range(parsed.ts, max_ts()):
            api_accepts.add(event["event_id"])

    run.ingest(write_jsonl(tmp_path / "cases.jsonl", events), now=None)

    assert set(run.ids()) == api_accepts
    assert len(api_accepts) == 23


def test_the_taobao_file_maps_every_behaviour_and_keeps_the_2017_09_row(run: Run) -> None:
    result = run.ingest(TAOBAO, fmt="taobao", now=None)

    assert (result.rows_read, result.accepted, result.duplicates, result.rejected) == (
        4321,
        4321,
        0,
        0,
    )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    events = run.lake.events_relation(con)
    by_type = events.aggregate("type, count(*)").order("type").fetchall()
    assert by_type == [("cart", 190), ("favorite", 128), ("purchase", 77), ("view", 3926)]
    assert events.aggregate("count(DISTINCT member_id)").fetchall() == [(43,)]
    assert events.filter("event_id NOT LIKE 'tb-%'").aggregate("count(*)").fetchall() == [(0,)]
    early = events.filter("ts < TIMESTAMPTZ '2017-11-01'").select("member_id, ts::VARCHAR")
    assert early.fetchall() == [("1000169", "2017-09-11 08:16:39+00")]  # 1505117799
    assert sum(len(chunk) for chunk in run.members) == 43


def test_taobao_unknown_behaviours_bad_times_and_repeated_rows(run: Run, tmp_path: Path) -> None:
    source = tmp_path / "behaviour.csv"
    source.write_text(
        "1,100,10,pv,1511544070\n"
        "1,100,10,like,1511544071\n"
        "2,200,20,buy,0\n"
        "2,200,20,cart,1511544080\n"
        "2,200,20,cart,1511544080\n"
        "3,300,30\n"
    )

    result = run.ingest(source, fmt="taobao")

    assert (result.rows_read, result.accepted, result.duplicates, result.rejected) == (6, 2, 1, 3)
    assert [(r["row"], r["code"], r["field"]) for r in deadletter(result)] == [
        ("2", "unknown_event_type", "type"),
        ("3", "bad_time", "ts"),
        ("6", "malformed_row", ""),
    ]
    assert json.loads(deadletter(result)[0]["raw"]) == {
        "user_id": "1",
        "item_id": "100",
        "category_id": "10",
        "behavior_type": "like",
        "timestamp": "1511544071",
    }
    assert [(r["member_id"], r["type"]) for r in run.rows()] in (
        [("1", "view"), ("2", "cart")],
        [("2", "cart"), ("1", "view")],
    )


def test_running_the_same_ingest_again_changes_nothing(run: Run, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "events.csv", [good_row("e1"), good_row("e2", price="-1")])
    first = run.ingest(source)
    files = {p: p.stat().st_mtime_ns for p in run.lake.files()}
    letters = deadletter(first)

    second = run.ingest(source)

    assert [f.status for f in second.files] == ["skipped"]
    assert second.skipped_files == [source]
    assert (second.rows_read, second.accepted, second.rejected) == (0, 0, 0)
    assert {p: p.stat().st_mtime_ns for p in run.lake.files()} == files
    assert run.members == [["m1"]]
    assert second.files[0].deadletter == first.files[0].deadletter
    assert deadletter(first) == letters
    assert not list((run.lake.root / "_staging").iterdir())
    assert not list(run.lake.pending_dir.iterdir())


def test_a_changed_file_is_ingested_again_and_the_reader_hides_the_copies(
    run: Run, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "events.csv", [good_row("e1")])
    run.ingest(source)
    write_csv(source, [good_row("e1", item_id="changed"), good_row("e2")])

    result = run.ingest(source)

    assert result.accepted == 2
    assert [(r["event_id"], r["item_id"]) for r in run.rows()] == [("e1", "i1"), ("e2", "i1")]
    assert run.stored() == 3
    run.lake.compact()
    assert run.stored() == 2


def test_csv_jsonl_and_parquet_give_the_same_lake(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = [
        {
            "event_id": f"e{i}",
            "member_id": f"m{i % 3}",
            "type": ["view", "cart", "purchase"][i % 3],
            "ts": datetime(2026, 5, 1 + i % 4, i % 24, tzinfo=UTC),
            "item_id": f"i{i}",
            "price": 100 * i if i % 3 else None,
            "quantity": 1 + i % 2 if i % 3 else None,
            "rating": None,
            "properties": '{"k": 1}' if i % 5 == 0 else None,
        }
        for i in range(40)
    ]
    as_text = [
        {
            k: ("" if v is None else v.isoformat() if isinstance(v, datetime) else str(v))
            for k, v in e.items()
        }
        for e in events
    ]
    header = list(events[0])
    csv_path = write_csv(tmp_path / "e.csv", as_text, header)
    jsonl_path = write_jsonl(
        tmp_path / "e.jsonl",
        [
            {
                **e,
                "ts": e["ts"].isoformat(),
                "properties": orjson.loads(e["properties"]) if e["properties"] else None,
            }
            for e in events
        ],
    )
    table = pa.Table.from_pylist(events, schema=pa.schema([INPUT_SCHEMA.field(n) for n in header]))
    parquet_path = tmp_path / "e.parquet"
    pq.write_table(table, parquet_path, row_group_size=7)

    lakes = []
    for name, path in [("csv", csv_path), ("jsonl", jsonl_path), ("parquet", parquet_path)]:
        run = Run(tmp_path / name)
        result = run.ingest(path)
        assert (result.accepted, result.rejected) == (40, 0)
        lakes.append(run.rows())

    normalized = [
        [{**r, "properties": r["properties"] and orjson.loads(r["properties"])} for r in lake]
        for lake in lakes
    ]
    assert normalized[0] == normalized[1] == normalized[2]
    assert len(normalized[0]) == 40


def test_parquet_columns_of_other_types_are_converted_or_refused(run: Run, tmp_path: Path) -> None:
    table = pa.table(
        {
            "event_id": ["p1", "p2", "p3"],
            "member_id": ["m1", "m1", "m2"],
            "type": ["view", "purchase", "purchase"],
            "ts": pa.array(
                [datetime(2026, 5, 1, 10), datetime(2026, 5, 1, 11), datetime(2026, 5, 2)],
                pa.timestamp("ms"),
            ),
            "price": pa.array([None, 12.0, 12.5], pa.float64()),
            "quantity": pa.array([None, 2, 3], pa.int8()),
            "note": ["x", "y", "z"],
        }
    )
    pq.write_table(table, tmp_path / "typed.parquet")

    result = run.ingest(tmp_path / "typed.parquet")

    assert (result.accepted, result.rejected) == (2, 1)
    assert [(r["row"], r["code"], r["field"]) for r in deadletter(result)] == [
        ("3", "wrong_type", "price")
    ]
    rows = run.rows()
    assert [(r["event_id"], r["ts"], r["price"], r["quantity"]) for r in rows] == [
        ("p1", datetime(2026, 5, 1, 10, tzinfo=UTC), None, None),
        ("p2", datetime(2026, 5, 1, 11, tzinfo=UTC), 12, 2),
    ]
    assert result.files[0].warnings == ["ignored column(s) not in the event contract: note"]

    pq.write_table(table.set_column(1, "member_id", pa.array([1, 2, 3])), tmp_path / "ids.parquet")
    refused = run.ingest(tmp_path / "ids.parquet")
    assert refused.failed_files == [
        (tmp_path / "ids.parquet", "column member_id has type integer; expected text")
    ]


def test_a_file_without_a_required_column_is_refused_and_the_others_still_land(
    run: Run, tmp_path: Path
) -> None:
    header = [h for h in HEADER if h != "ts"]
    broken = write_csv(
        tmp_path / "a.csv", [{k: v for k, v in good_row("x").items() if k != "ts"}], header
    )
    fine = write_csv(tmp_path / "b.csv", [good_row("e1")])
    unknown = tmp_path / "c.txt"
    unknown.write_text("hello")

    result = run.ingest(broken, fine, unknown)

    assert [f.status for f in result.files] == ["failed", "ingested", "failed"]
    assert result.failed_files == [
        (broken, "a.csv has no ts column; required: event_id, member_id, type, ts"),
        (unknown, "cannot tell the format of c.txt from its extension; pass --format"),
    ]
    assert not result.ok
    assert run.ids() == ["e1"]
    assert len(list(run.lake.ingested_dir.iterdir())) == 1


def test_repeated_event_ids_in_one_file_keep_the_first_good_row(run: Run, tmp_path: Path) -> None:
    rows = [
        good_row("a", item_id="first"),
        good_row("b", price="-1", item_id="bad"),
        good_row("a", item_id="second"),
        good_row("b", item_id="good"),
        good_row("b", item_id="third"),
        good_row("c"),
    ]
    result = run.ingest(write_csv(tmp_path / "events.csv", rows))

    assert (result.rows_read, result.accepted, result.duplicates, result.rejected) == (6, 3, 2, 1)
    assert [(r["event_id"], r["item_id"]) for r in run.rows()] == [
        ("a", "first"),
        ("b", "good"),
        ("c", "i1"),
    ]
    assert run.stored() == 3
    assert run.members == [["m1"]]


def test_across_files_of_one_run_the_earlier_file_wins(run: Run, tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    write_csv(folder / "1.csv", [good_row("a", item_id="from-1")])
    write_csv(folder / "2.csv", [good_row("a", item_id="from-2"), good_row("b")])
    (folder / "README.txt").write_text("not events")

    result = run.ingest(folder)

    assert [f.path.name for f in result.files] == ["1.csv", "2.csv"]
    assert [(r["event_id"], r["item_id"]) for r in run.rows()] == [("a", "from-1"), ("b", "i1")]


def test_progress_reports_rows_and_reaches_the_end(tmp_path: Path) -> None:
    run = Run(tmp_path)
    seen: list[tuple[int, int, float]] = []
    source = write_csv(tmp_path / "events.csv", [good_row(f"e{i}") for i in range(5)])

    ingest_paths(
        [source],
        run.lake,
        deadletter_dir=run.deadletters,
        progress=lambda p: seen.append((p.index, p.rows, p.fraction)),
    )

    assert seen[-1] == (1, 5, 1.0)


def test_the_cli_ingests_prints_json_and_exits_1_on_a_failed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMBERWISE_HOME", str(tmp_path / "home"))
    registered: list[str] = []

    class Registrar:
        """Stands in for the store's registrar: this test has no store."""

        def __call__(self, member_ids: list[str]) -> None:
            registered.extend(member_ids)

        def scrub_erased(self, lake: Any) -> int:
            return 0

    monkeypatch.setattr(bulk_hooks, "member_registrar", lambda _: Registrar())
    good = write_csv(tmp_path / "good.csv", [good_row("e1"), good_row("e2", price="-5")])
    app = typer.Typer()
    app.command()(commands.ingest)

    ok = CliRunner().invoke(app, [str(good), "--json"])
    bad = CliRunner().invoke(app, [str(tmp_path / "good.csv"), str(tmp_path / "x.csv")])

    assert ok.exit_code == 0, ok.output
    body = json.loads(ok.output)
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert body["deadletter_paths"] == [
        str(tmp_path / "home" / "deadletter" / f"good-{body['files'][0]['fingerprint']}.csv")
    ]
    assert registered == ["m1"]
    assert bad.exit_code == 2  # typer refuses a path that does not exist
    write_csv(tmp_path / "x.csv", [{"a": "1"}], ["a"])
    failed = CliRunner().invoke(app, [str(tmp_path / "x.csv")])
    assert failed.exit_code == 1
    assert "x.csv has no event_id, member_id, type, ts columns" in failed.output


def test_a_failing_member_registration_fails_the_file_and_a_rerun_completes_it(
    run: Run, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "events.csv", [good_row("e1"), good_row("e2")])

    def store_down(_: list[str]) -> None:
        raise ConnectionError("the operational store is down")

    failed = ingest_paths(
        [source], run.lake, deadletter_dir=run.deadletters, on_members=store_down, now=NOW
    )
    again = run.ingest(source)

    assert failed.failed_files == [
        (source, "registering members failed: the operational store is down")
    ]
    assert [f.status for f in again.files] == ["ingested"]
    assert run.members == [["m1"]]
    assert run.ids() == ["e1", "e2"]
    assert run.stored() == 2


def test_a_second_process_on_the_same_file_is_refused_while_the_first_runs(
    run: Run, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "events.csv", [good_row("e1")])
    locks = run.lake.manifest_dir / "locks"
    locks.mkdir(parents=True)
    with open(locks / f"{fingerprint(source, 'csv')}.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = run.ingest(source)

    assert busy.failed_files == [(source, "another ingest of events.csv is running")]
    assert run.ids() == []
    assert run.ingest(source).accepted == 1


def test_a_csv_row_with_a_byte_that_is_not_utf8_is_dead_lettered_and_the_rest_land(
    run: Run, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "events.csv", [good_row("e1"), good_row("e2"), good_row("e4")])
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"i1", b"i\xff1")  # row 3 (the header is row 1): e2's item
    path.write_bytes(b"".join(lines))

    result = run.ingest(path)

    assert (result.rows_read, result.accepted, result.rejected) == (3, 2, 1)
    [letter] = deadletter(result)
    assert (letter["row"], letter["code"], letter["field"]) == ("3", "malformed_row", "")
    assert letter["message"] == "not valid UTF-8 (item_id: invalid start byte at byte 1)"
    assert json.loads(letter["raw"]).startswith("e2,m1,purchase,")
    assert run.ids() == ["e1", "e4"]


def test_a_json_line_that_is_not_utf8_is_dead_lettered_with_its_line_number(
    run: Run, tmp_path: Path
) -> None:
    good = {"event_id": "j1", "member_id": "m1", "type": "view", "ts": "2026-05-01T10:00:00Z"}
    path = write_jsonl(tmp_path / "events.jsonl", [good, {**good, "event_id": "j2"}, "", good])
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"j2", b"j\xfe2")
    lines[3] = orjson.dumps({**good, "event_id": "j4"}) + b"\n"
    path.write_bytes(b"".join(lines))

    result = run.ingest(path)

    assert (result.rows_read, result.accepted, result.rejected) == (3, 2, 1)
    [letter] = deadletter(result)
    assert (letter["row"], letter["code"]) == ("2", "malformed_row")
    assert letter["message"].startswith("not valid JSON: not UTF-8")
    assert run.ids() == ["j1", "j4"]


def test_json_blocks_keep_line_numbers_across_block_edges(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Blocks of 64 bytes: most lines cross a block's end, one is longer than a block, blank
    # lines fall on both sides of an edge and the file's last line has no newline.
    monkeypatch.setattr(sources, "_JSONL_BLOCK", 64)
    good = {"event_id": "j1", "member_id": "m1", "type": "view", "ts": "2026-05-01T10:00:00Z"}
    lines = [
        orjson.dumps(good),
        b"",
        orjson.dumps({**good, "event_id": "j3", "text": "x" * 200}),
        b"   ",
        b'{"event_id": "j5", "member_id": 5}',
        b"",
        b"",
        orjson.dumps({**good, "event_id": "j8"}),
        b"nope",
        orjson.dumps({**good, "event_id": "j10"}),
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines))

    result = run.ingest(path)

    assert (result.rows_read, result.accepted, result.rejected) == (6, 4, 2)
    assert [(r["row"], r["code"], r["field"]) for r in deadletter(result)] == [
        ("5", "wrong_type", "member_id"),
        ("9", "malformed_row", ""),
    ]
    assert run.ids() == ["j1", "j10", "j3", "j8"]
    assert result.files[0].warnings == []


@pytest.mark.parametrize(
    ("line", "warned"),
    [
        (b'{"event_id":"k2","member_id":"m1","type":"view","ts":1777629600,"utm":"x"}', True),
        (b'{"event_id" : "k2", "member_id" : "m1", "type" : "view", "ts" : 1777629600}', False),
        (b'{"event_id" : "k2", "member_id" : "m1", "type":"view", "ts":1777629600, "utm":1}', True),
        (
            b'{"event_id":"k2","member_id":"m1","type":"view","ts":1777629600,'
            b'"properties":{"a":{"b":"c\\":"}}}',
            False,
        ),
        (
            b'{"event_id":"k2","member_id":"m1","type":"view","ts":1777629600,'
            b'"properties":{"a":1},"utm":{"b":1}}',
            True,
        ),
        (
            b'{"event_id":"k2","member_id":"m1","type":"view","ts":1777629600,'
            b'"text":"say \\"utm\\": 1"}',
            False,
        ),
        (
            b'{"event_id":"k2","member_id":"m1","type":"view","ts":1777629600,"event_id":"k3"}',
            False,
        ),
    ],
)
def test_keys_outside_the_contract_are_warned_about_whatever_the_spacing(
    run: Run, tmp_path: Path, line: bytes, warned: bool
) -> None:
    good = {"event_id": "k1", "member_id": "m1", "type": "view", "ts": "2026-05-01T10:00:00Z"}
    path = tmp_path / "events.jsonl"
    path.write_bytes(orjson.dumps(good) + b"\n" + line + b"\n")

    result = run.ingest(path)

    assert (result.accepted, result.rejected) == (2, 0)
    expected = ["ignored column(s) not in the event contract: utm"] if warned else []
    assert result.files[0].warnings == expected


def _members_file(path: Path) -> Path:
    """12 events in row groups of 2 (one batch each with BATCH_ROWS = 2): members m1..m5 in
    good rows, m9 only in a row refused for its type."""
    members = ["m1", "m2", "m1", "m3", "m9", "m2", "m4", "m1", "m5", "m3", "m4", "m5"]
    table = pa.table(
        {
            "event_id": [f"e{n:02d}" for n in range(12)],
            "member_id": members,
            "type": ["nope" if m == "m9" else "view" for m in members],
            "ts": [datetime(2026, 5, 1 + n, 10, tzinfo=UTC) for n in range(12)],
        },
        schema=pa.schema([INPUT_SCHEMA.field(n) for n in ("event_id", "member_id", "type", "ts")]),
    )
    pq.write_table(table, path, row_group_size=2)
    return path


def test_members_are_registered_while_the_file_is_read_each_once_before_publishing(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "BATCH_ROWS", 2)
    monkeypatch.setattr(member_feed, "MEMBER_CHUNK", 2)
    source = _members_file(tmp_path / "events.parquet")
    calls: list[tuple[list[str], int]] = []

    def register(member_ids: list[str]) -> None:
        calls.append((member_ids, run.lake.stats().rows))  # what the lake held at that moment

    result = ingest_paths(
        [source], run.lake, deadletter_dir=run.deadletters, on_members=register, now=NOW
    )

    assert (result.accepted, result.rejected) == (11, 1)
    registered = [m for chunk, _ in calls for m in chunk]
    assert sorted(registered) == ["m1", "m2", "m3", "m4", "m5"]  # each once, not m9
    assert all(chunk == sorted(chunk) and 1 <= len(chunk) <= 2 for chunk, _ in calls)
    assert [rows for _, rows in calls] == [0] * len(calls)  # before any event was published
    assert run.stored() == 11


def test_a_registration_failing_midway_fails_the_file_unpublished_and_a_rerun_completes(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "BATCH_ROWS", 2)
    monkeypatch.setattr(member_feed, "MEMBER_CHUNK", 2)
    source = _members_file(tmp_path / "events.parquet")
    registered: list[str] = []

    def second_call_fails(member_ids: list[str]) -> None:
        if registered:
            raise ConnectionError("the operational store went away")
        registered.extend(member_ids)

    failed = ingest_paths(
        [source], run.lake, deadletter_dir=run.deadletters, on_members=second_call_fails, now=NOW
    )

    assert failed.failed_files == [
        (source, "registering members failed: the operational store went away")
    ]
    assert run.stored() == 0  # nothing published, nothing committed
    assert list(run.lake.ingested_dir.glob("*.json")) == []
    assert not list(run.deadletters.glob("*.csv"))
    again = run.ingest(source)
    assert [f.status for f in again.files] == ["ingested"]
    assert sorted(m for chunk in run.members for m in chunk) == ["m1", "m2", "m3", "m4", "m5"]
    assert run.stored() == 11


def _lake_and_letters(root: Path, path: Path) -> tuple[Any, ...]:
    run = Run(root)
    result = run.ingest(path)
    letters = [dict(r) for p in result.deadletter_paths for r in csv.DictReader(p.open())]
    return (result.accepted, result.rejected, letters, run.rows(), result.files[0].warnings)


ODD_LINES: list[bytes] = [
    *(
        orjson.dumps({"member_id": "m1", "type": "view", "ts": "2026-05-01T10:00:00Z", **case})
        for case in AGREEMENT_CASES
    ),
    b'{"event_id":"x","member_id":"m1","type":"view","ts":"2026-05-01T10:00:00Z","utm":"x"}',
    b'{"event_id":"x","member_id":"m1","type":"view","ts":"2026-05-01T10:00:00Z","utm":null}',
    b'{"event_id":"x","member_id":"m1","type":"view","ts":"2026-05-01T10:00:00Z",'
    b'"properties":{"a":{"b":"c\\":"}},"text":"say \\"utm\\": 1 \\u00e9"}',
    b'{"event_id":"x","member_id":"m1","type":"view","ts":"2026-05-01T10:00:00Z","event_id":"y"}',
    b'{"event_id":"x","member_id":"m1","type":"view","ts":"2026-05-01T10:00:00Z"}{"a":1}',
    b'\xef\xbb\xbf{"event_id":"x","member_id":"m1","type":"view","ts":"2026-05-01T10:00:00Z"}',
    b'{"event_id":"x","member_id":"m1","type":"view","ts":"2026-05-01T10:00:00Z",}',
    b'{"event_id":"x","member_id":"m1","type":"view","ts":"2026-05-01T10:00:00Z","price":1e400}',
    b'{"event_id":"x","member_id":"m1","type":"view","ts":"2026-05-01T10:00:00Z","rating":-0}',
    b'{"event_id":"x","member_id":"m1","type":"view","ts":"2026-05-01T10:00:00Z","text":"a\\ud800"}',
    b'{"event_id":"x","member_id":"m1","type":"view","ts":"2026-05-01T10:00:00Z","brand":null}',
    b'{"event_id":"x","member_id":"m1","type":"view","ts":"2026-05-01T10:00:00Z","properties":null}',
    b'{"event_id":"x","member_id":"m1","type":"view","ts":"2026-05-01T10:00:00Z","utm":{"a":[1]}}',
    b'{"event_id":"x","member_id":"m1","type":"view","ts":"2026-05-01T10:00:00Z","quantity":2}\r',
    b'{"event_id":"x","member_id":"m1","type":"view","ts":"2026-05-01T10:00:00Z","price":null,'
    b'"quantity":3,"rating":5,"item_id":"500798421","order_id":"o1","properties":{"k":[1,{"z":null}]}}',
    b"{}",
    b'{"event_id":"x"}',
]


@pytest.mark.parametrize("line", ODD_LINES, ids=range(len(ODD_LINES)))
def test_blocks_arrow_parses_land_exactly_as_the_duckdb_path_lands_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: bytes
) -> None:
    # A good line and the odd one, ingested as they come (Arrow parses a block of plain events)
    # and with the Arrow parse switched off (DuckDB's JSON functions read every block).
    good = b'{"event_id":"g","member_id":"m2","type":"cart","ts":"2026-05-02T10:00:00+08:00"}'
    path = tmp_path / "events.jsonl"
    path.write_bytes(good + b"\n" + line + b"\n")
    parsed_blocks: list[bool] = []
    parse = sources.JsonLines.parsed

    def spy(self: sources.JsonLines, con: duckdb.DuckDBPyConnection) -> sources.ParsedLines | None:
        parsed = parse(self, con)
        parsed_blocks.append(parsed is not None)
        return parsed

    monkeypatch.setattr(sources.JsonLines, "parsed", spy)
    fast = _lake_and_letters(tmp_path / "fast", path)
    monkeypatch.setattr(sources.JsonLines, "parsed", lambda self, con: None)
    slow = _lake_and_letters(tmp_path / "slow", path)

    assert fast == slow
    assert len(parsed_blocks) == 1


#: Texts the Arrow-parsed blocks match with Arrow's regular expressions (ts, member_id) where
#: the DuckDB path uses regexp_full_match: anchors, a trailing newline, lowercase, a comma.
MATCHED_LINES: list[bytes] = [
    orjson.dumps({"event_id": "x", "type": "view", **case})
    for case in (
        {"member_id": "m1\n", "ts": "2026-05-01T10:00:00Z"},
        {"member_id": "\nm1", "ts": "2026-05-01T10:00:00Z"},
        {"member_id": "m1.", "ts": "2026-05-01T10:00:00Z"},
        {"member_id": ".m1", "ts": "2026-05-01T10:00:00Z"},
        {"member_id": "m1", "ts": "2026-05-01T10:00:00Z\n"},
        {"member_id": "m1", "ts": "x2026-05-01T10:00:00Z"},
        {"member_id": "m1", "ts": "2026-05-01t10:00:00,5z"},
        {"member_id": "m1", "ts": "2026-05-01T10:00:00.1234567+0800"},
        {"member_id": "m1", "ts": "2026-05-01T24:00:00Z"},
        {"member_id": "m1", "ts": "2026-05-01 10:00"},
        {"member_id": "m1", "ts": "\u0662026-05-01T10:00:00Z"},
    )
]


@pytest.mark.parametrize("line", MATCHED_LINES, ids=range(len(MATCHED_LINES)))
def test_arrow_parsed_blocks_match_ts_and_member_ids_as_duckdb_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: bytes
) -> None:
    test_blocks_arrow_parses_land_exactly_as_the_duckdb_path_lands_them(tmp_path, monkeypatch, line)


def test_arrow_parses_a_block_of_plain_events_and_one_wrong_kind_sends_it_the_duckdb_way(
    run: Run, tmp_path: Path
) -> None:
    good = {"event_id": "p1", "member_id": "m1", "type": "view", "ts": "2026-05-01T10:00:00Z"}
    plain = [good, {**good, "event_id": "p2", "quantity": 2, "properties": {"a": 1}}]
    odd = [*plain, {**good, "event_id": "p3", "quantity": "2"}]
    blocks = [
        sources._json_block(
            memoryview(write_jsonl(tmp_path / f"{n}.jsonl", lines).read_bytes()),
            1,
            sources._jsonl(tmp_path / f"{n}.jsonl"),
        )[0]
        for n, lines in (("plain", plain), ("odd", odd))
    ]
    assert blocks[0] is not None and blocks[1] is not None

    con = duckdb.connect()
    parsed = blocks[0].parsed(con)
    assert parsed is not None and parsed.keys == frozenset()
    assert parsed.table.column("quantity").to_pylist() == [None, 2]
    assert parsed.table.column("properties").to_pylist() == [None, '{"a":1}']
    assert blocks[1].parsed(con) is None  # "2" is text where Arrow was told an integer

    result = run.ingest(tmp_path / "odd.jsonl")
    assert (result.accepted, result.rejected) == (3, 0)
    assert [r["quantity"] for r in run.rows()] == [None, 2, 2]
