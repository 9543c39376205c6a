"""POST /v1/events: per-event outcomes, idempotency, and nothing lost on bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from memberwise.kit.db import transaction
from memberwise.members.tables import members
from memberwise.privacy.schemas import Role
from memberwise.runtime import Runtime
from tests.events.helpers import event, stored_event_ids

Auth = Callable[[Role], dict[str, str]]


def _send(client: TestClient, auth: Auth, events: list[Any]) -> Any:
    response = client.post("/v1/events", json={"events": events}, headers=auth(Role.platform))
    assert response.status_code == 200, response.text
    return response.json()


def test_a_good_batch_lands_in_the_lake_partitioned_by_utc_day(
    client: TestClient, auth: Auth, runtime: Runtime
) -> None:
    result = _send(client, auth, [event(i) for i in range(5)])
    assert result == {"accepted": 5, "duplicate": 0, "rejected": 0, "rejections": []}
    assert stored_event_ids(runtime.lake.root) == ["e0", "e1", "e2", "e3", "e4"]
    days = sorted(p.name for p in (runtime.lake.root / "events").iterdir())
    # 12:00 in China is 04:00 UTC the same day.
    assert days == [f"date=2026-11-0{d}" for d in range(1, 6)]


def test_a_replayed_batch_is_all_duplicates_and_writes_nothing(
    client: TestClient, auth: Auth, runtime: Runtime
) -> None:
    batch = [event(i) for i in range(4)]
    _send(client, auth, batch)
    files_before = sorted(runtime.lake.root.glob("events/*/*.parquet"))
    again = _send(client, auth, batch)
    assert again == {"accepted": 0, "duplicate": 4, "rejected": 0, "rejections": []}
    assert sorted(runtime.lake.root.glob("events/*/*.parquet")) == files_before
    partly = _send(client, auth, [event(3), event(4), event(4)])
    assert (partly["accepted"], partly["duplicate"]) == (1, 2)
    assert stored_event_ids(runtime.lake.root) == ["e0", "e1", "e2", "e3", "e4"]


BAD_EVENTS: list[tuple[str, dict[str, Any], str, str | None]] = [
    ("missing field", event(100, member_id=None), "missing_field", "member_id"),
    ("missing time", event(101, ts=None), "missing_field", "ts"),
    ("wrong type", event(102, price="abc"), "wrong_type", "price"),
    ("fractional price", event(103, price=12.5), "wrong_type", "price"),
    ("unknown event type", event(104, type="teleport"), "unknown_event_type", "type"),
    ("unparseable time", event(105, ts="yesterday"), "bad_time", "ts"),
    ("time before 2000", event(106, ts="1970-01-01T00:00:00Z"), "bad_time", "ts"),
    ("time in the future", event(107, ts="2999-01-01T00:00:00Z"), "bad_time", "ts"),
    ("negative price", event(108, price=-1), "negative_price", "price"),
    ("rating out of range", event(109, type="review", rating=6), "invalid_value", "rating"),
    ("zero quantity", event(110, quantity=0), "invalid_value", "quantity"),
    ("unknown field", event(111, colour="red"), "unknown_field", "colour"),
    ("empty id", event(112, event_id=""), "missing_field", "event_id"),
    ("null member", event(114, member_id=None) | {"member_id": None}, "missing_field", "member_id"),
    ("price too large", event(115, price=2**63), "invalid_value", "price"),
    ("id too long", event(116, item_id="x" * 129), "invalid_value", "item_id"),
    ("properties not an object", event(113, properties=[1, 2]), "wrong_type", "properties"),
]


@pytest.mark.parametrize(
    ("case", "bad", "code", "field"), BAD_EVENTS, ids=[c[0] for c in BAD_EVENTS]
)
def test_each_bad_event_is_rejected_with_its_code_and_the_good_ones_land(
    client: TestClient,
    auth: Auth,
    runtime: Runtime,
    case: str,
    bad: dict[str, Any],
    code: str,
    field: str | None,
) -> None:
    result = _send(client, auth, [event(1), bad, event(2)])
    assert (result["accepted"], result["duplicate"], result["rejected"]) == (2, 0, 1)
    [rejection] = result["rejections"]
    assert (rejection["index"], rejection["code"], rejection["field"]) == (1, code, field)
    assert rejection["message"]
    assert stored_event_ids(runtime.lake.root) == ["e1", "e2"]


def test_an_event_that_is_not_an_object_is_rejected_alone(client: TestClient, auth: Auth) -> None:
    result = _send(client, auth, [event(1), "oops", 42])
    assert result["accepted"] == 1
    assert [(r["index"], r["code"]) for r in result["rejections"]] == [
        (1, "wrong_type"),
        (2, "wrong_type"),
    ]


def test_whole_request_errors_have_codes_and_write_nothing(
    client: TestClient, auth: Auth, runtime: Runtime
) -> None:
    headers = {**auth(Role.platform), "content-type": "application/json"}
    too_many = orjson.dumps({"events": [event(i) for i in range(10_001)]})
    cases = [
        (too_many, 413, "batch_too_large"),
        (b"{not json", 400, "malformed_json"),
        (b'{"events": {}}', 422, "malformed_batch"),
        (b"[1, 2]", 422, "malformed_batch"),
        (b'{"events": [], "extra": 1}', 422, "malformed_batch"),
    ]
    for body, status, code in cases:
        response = client.post("/v1/events", content=body, headers=headers)
        assert (response.status_code, response.json()["code"]) == (status, code)
        assert response.json()["message"]
    assert stored_event_ids(runtime.lake.root) == []


def test_a_full_batch_of_ten_thousand_is_accepted(
    client: TestClient, auth: Auth, runtime: Runtime
) -> None:
    result = _send(client, auth, [event(i) for i in range(10_000)])
    assert (result["accepted"], result["rejected"]) == (10_000, 0)
    assert len(stored_event_ids(runtime.lake.root)) == 10_000


def test_members_first_seen_in_events_get_records(
    client: TestClient, auth: Auth, runtime: Runtime
) -> None:
    _send(client, auth, [event(i) for i in range(6)])
    with transaction(runtime.engine) as conn:
        rows = conn.execute(select(members.c.member_id, members.c.source).order_by("member_id"))
        assert [tuple(r) for r in rows] == [("m0", "events"), ("m1", "events"), ("m2", "events")]
    found = client.get("/v1/members/m1", headers=auth(Role.operator))
    assert (found.status_code, found.json()["source"]) == (200, "events")


def test_stored_events_keep_every_field(client: TestClient, auth: Auth, runtime: Runtime) -> None:
    import duckdb

    _send(client, auth, [event(7, type="review", rating=5, text="质量很好", price=None)])
    [path] = runtime.lake.root.glob("events/*/*.parquet")
    [row] = duckdb.sql(
        f"SELECT event_id, member_id, type, ts::VARCHAR, rating, text, price, properties "
        f"FROM read_parquet('{path}')"
    ).fetchall()
    assert row == (
        "e7",
        "m1",
        "review",
        "2026-11-08 04:00:00+00",
        5,
        "质量很好",
        None,
        '{"coupon":"C10"}',
    )
