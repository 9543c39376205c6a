"""No input gets a 500 or breaks a later read (issue 13): each request a valid role once sent
that answered 500, or was accepted and then broke reads, is answered 4xx with a stable code."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from starlette.types import Message

from memberwise.app import create_app
from memberwise.privacy.schemas import Role
from memberwise.runtime import Runtime

Auth = Callable[[Role], dict[str, str]]
PROGRAM = Path(__file__).resolve().parents[1] / "programs" / "demo.yaml"

BIG = 2**63


@pytest.fixture
def platform(client: TestClient, auth: Auth) -> dict[str, str]:
    """Platform headers, with member m1 registered."""
    headers = auth(Role.platform)
    assert client.post("/v1/members", json={"member_id": "m1"}, headers=headers).status_code == 201
    return headers


def order(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": "o1",
        "member_id": "m1",
        "items": [{"item_id": "i1", "price": 1000}],
    }
    return body | fields


def assert_refused(response: Any, status: int = 422, code: str = "invalid_request") -> None:
    assert (response.status_code, response.json()["code"]) == (status, code), response.text


# -- integers past 64 bits ------------------------------------------------------------------------


def test_an_order_whose_lines_sum_past_2_63_is_refused_and_nothing_is_stored(
    client: TestClient, platform: dict[str, str]
) -> None:
    items = [{"item_id": f"i{n}", "price": 10**12, "quantity": 100_000} for n in range(93)]

    response = client.post("/v1/orders", json=order(items=items), headers=platform)

    assert_refused(response)
    assert "goods amount" in response.json()["message"]
    assert client.get("/v1/orders/o1", headers=platform).status_code == 404


def test_an_order_just_within_the_largest_amount_is_accepted(
    client: TestClient, platform: dict[str, str]
) -> None:
    items = [{"item_id": "i1", "price": 10**7, "quantity": 100_000}]  # 10^12 fen in all

    response = client.post("/v1/orders", json=order(items=items), headers=platform)

    assert response.status_code == 201, response.text
    assert response.json()["goods_amount"] == 10**12


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/items/i1", {"price": BIG}),
        ("POST", "/v1/subscriptions/s1/payments", {"payment_id": "p1", "amount": BIG}),
        ("POST", "/v1/orders", order(items=[{"item_id": "i1", "price": BIG}])),
        ("POST", "/v1/orders", order(points=BIG)),
        ("POST", "/v1/orders/o1/refunds", {"refund_id": "r1", "amount": BIG}),
        ("POST", "/v1/members/m1/points/redemptions", {"points": BIG}),
    ],
)
def test_money_and_points_past_the_bound_are_refused(
    client: TestClient, platform: dict[str, str], method: str, path: str, body: dict[str, Any]
) -> None:
    assert_refused(client.request(method, path, json=body, headers=platform))


@pytest.mark.parametrize("price", ["100", True, 100.0, "1e3"])
def test_money_is_a_strict_integer(
    client: TestClient, platform: dict[str, str], price: Any
) -> None:
    items = [{"item_id": "i1", "price": price}]

    assert_refused(client.post("/v1/orders", json=order(items=items), headers=platform))
    assert_refused(client.put("/v1/items/i1", json={"price": price}, headers=platform))
    quote = {"member_id": "m1", "items": [{"item_id": "i1", "price": price, "quantity": 1}]}
    assert_refused(client.post("/v1/checkout/quote", json=quote, headers=platform))
    assert client.get("/v1/orders/o1", headers=platform).status_code == 404


# -- business times -------------------------------------------------------------------------------


def test_an_order_placed_in_year_1_is_refused_and_reads_keep_working(
    client: TestClient, platform: dict[str, str]
) -> None:
    response = client.post(
        "/v1/orders", json=order(placed_at="0001-01-01T00:00:00Z"), headers=platform
    )

    assert_refused(response)
    assert response.json()["message"].startswith("placed_at:")
    assert client.get("/v1/orders/o1", headers=platform).status_code == 404
    points = client.get("/v1/members/m1/points", headers=platform)
    assert points.status_code == 200
    assert points.json()["balance"] == {"member_id": "m1", "available": 0, "pending": 0, "debt": 0}
    # A sane order then goes through and reads back.
    assert client.post("/v1/orders", json=order(), headers=platform).status_code == 201
    assert client.get("/v1/orders/o1", headers=platform).status_code == 200
    assert client.get("/v1/members/m1/points", headers=platform).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/orders", order(placed_at="9999-12-25T00:00:00Z")),
        ("POST", "/v1/orders", order(placed_at="1999-12-31T23:59:59Z")),
        ("POST", "/v1/orders", order(placed_at="9999-12-31T23:00:00-05:00")),
        ("POST", "/v1/orders/o1/refunds", {"refund_id": "r1", "full": True, "at": "0001-01-01"}),
        (
            "POST",
            "/v1/members/m1/points/awards",
            {"kind": "check_in", "source_id": "c1", "at": "9999-12-31T00:00:00Z"},
        ),
        (
            "POST",
            "/v1/subscriptions/s1/payments",
            {"payment_id": "p1", "amount": 1, "occurred_at": "9999-12-31T00:00:00Z"},
        ),
        (
            "POST",
            "/v1/members/m1/tier",
            {"tier": "gold", "reason": "vip", "until": "0001-01-01T00:00:00Z"},
        ),
        (
            "POST",
            "/v1/members/m1/tier",
            {"tier": "gold", "reason": "vip", "until": "9999-12-31T00:00:00Z"},
        ),
        ("POST", "/v1/members", {"member_id": "m2", "registered_at": "0001-01-01T00:00:00Z"}),
        ("PATCH", "/v1/members/m1", {"registered_at": "9999-12-31T00:00:00Z"}),
        ("PUT", "/v1/items/i1", {"launched_at": "9999-12-31T00:00:00Z"}),
        ("PUT", "/v1/items/i1", {"launched_at": "0001-01-01T00:00:00Z"}),
    ],
)
def test_business_times_outside_the_window_are_refused(
    client: TestClient,
    platform: dict[str, str],
    auth: Auth,
    method: str,
    path: str,
    body: dict[str, Any],
) -> None:
    response = client.request(method, path, json=body, headers=auth(Role.admin))

    assert_refused(response)
    assert "time" in response.json()["message"]


def test_the_window_is_configurable(runtime: Runtime, tmp_path: Path) -> None:
    from memberwise.config import Settings
    from tests.conftest import TEST_PII_KEY

    settings = Settings(
        home=tmp_path / "other",
        database_url=runtime.settings.db_url,
        pii_key=TEST_PII_KEY,  # type: ignore[arg-type]
        business_time_earliest="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
    )
    other = Runtime.open(settings)
    try:
        from memberwise.ledger.schemas import OrderIn

        with pytest.raises(ValueError, match="placed_at"):
            OrderIn.model_validate(order(placed_at="2025-12-31T00:00:00Z"))
        assert OrderIn.model_validate(order(placed_at="2026-01-02T00:00:00Z")).placed_at
    finally:
        other.close()
        Runtime.open(runtime.settings).close()  # the default window again


# -- one member-id rule ---------------------------------------------------------------------------

BAD_IDS = [
    "m\x001",
    "x/profile",
    "..",
    "a..b",
    "m\u202e1",
    "m\U0001f600",
    " m1",
    "m 1",
    "",
    "x" * 129,
]


@pytest.mark.parametrize("member_id", BAD_IDS)
def test_every_entry_point_refuses_the_same_bad_member_ids(
    client: TestClient, platform: dict[str, str], member_id: str
) -> None:
    assert_refused(client.post("/v1/members", json={"member_id": member_id}, headers=platform))
    assert_refused(client.post("/v1/orders", json=order(member_id=member_id), headers=platform))
    event = {"event_id": "e1", "member_id": member_id, "type": "view", "ts": "2026-01-01"}
    result = client.post("/v1/events", json={"events": [event]}, headers=platform).json()
    assert (result["accepted"], result["rejected"]) == (0, 1)
    assert (result["rejections"][0]["code"], result["rejections"][0]["field"]) in {
        ("invalid_value", "member_id"),
        ("missing_field", "member_id"),
    }


@pytest.mark.parametrize("member_id", ["m1", "U_42", "shop:7:user-9", "a.b.c", "0042", "x."])
def test_a_member_id_the_rule_accepts_can_register_order_and_send_events(
    client: TestClient, auth: Auth, member_id: str
) -> None:
    platform = auth(Role.platform)
    created = client.post("/v1/members", json={"member_id": member_id}, headers=platform)
    assert created.status_code == 201
    placed = client.post("/v1/orders", json=order(member_id=member_id), headers=platform)
    assert placed.status_code == 201
    event = {"event_id": "e1", "member_id": member_id, "type": "view", "ts": "2026-01-01"}
    result = client.post("/v1/events", json={"events": [event]}, headers=platform).json()
    assert result["accepted"] == 1
    assert client.get(f"/v1/members/{member_id}", headers=platform).json()["member_id"] == member_id


# -- authentication first, one code for malformed JSON --------------------------------------------


@pytest.mark.parametrize("path", ["/v1/orders", "/v1/members", "/v1/events", "/v1/keys"])
def test_malformed_json_without_a_key_is_a_401(client: TestClient, path: str) -> None:
    response = client.post(path, content=b"{not json", headers={"content-type": "application/json"})

    assert_refused(response, 401, "missing_api_key")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/orders"),
        ("POST", "/v1/members"),
        ("POST", "/v1/events"),
        ("PUT", "/v1/items/i1"),
        ("POST", "/v1/checkout/quote"),
        ("POST", "/v1/keys"),
    ],
)
def test_malformed_json_is_the_same_400_everywhere(
    client: TestClient, auth: Auth, method: str, path: str
) -> None:
    headers = auth(Role.admin) | {"content-type": "application/json"}

    response = client.request(method, path, content=b'{"a": 1,', headers=headers)

    assert_refused(response, 400, "malformed_json")


def test_a_body_is_not_read_before_the_key_is_refused(runtime: Runtime) -> None:
    app = create_app(runtime=runtime)
    reads = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 1024 * 1024, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/events",
        "raw_path": b"/v1/events",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"52428800")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))

    assert sent[0]["status"] == 401
    assert reads == 0


# -- keys -----------------------------------------------------------------------------------------


def test_the_last_active_admin_key_cannot_be_revoked(client: TestClient, auth: Auth) -> None:
    admin = auth(Role.admin)
    me = client.get("/v1/me", headers=admin).json()["key_id"]

    refused = client.delete(f"/v1/keys/{me}", headers=admin)

    assert_refused(refused, 409, "last_admin_key")
    assert client.get("/v1/me", headers=admin).status_code == 200
    # With a second admin key, the first may go.
    second = client.post("/v1/keys", json={"role": "admin", "name": "b"}, headers=admin).json()
    assert client.delete(f"/v1/keys/{me}", headers=admin).status_code == 204
    other = {"Authorization": f"Bearer {second['key']}"}
    assert_refused(
        client.delete(f"/v1/keys/{second['key_id']}", headers=other), 409, "last_admin_key"
    )


# -- cursors --------------------------------------------------------------------------------------


LISTS = [
    "/v1/members",
    "/v1/audit",
    "/v1/invitations",
    "/v1/managers/s1/members",
    "/v1/members/m1/points",
    "/v1/members/m1/coupons",
    "/v1/segments/new/members",
]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("cursor", ["!!!!", "%%%", "a", "YWI=", "Zm9v\n"])
def test_every_list_refuses_a_garbage_cursor(
    client: TestClient, platform: dict[str, str], auth: Auth, path: str, cursor: str
) -> None:
    response = client.get(path, params={"after": cursor}, headers=auth(Role.admin))

    assert_refused(response, 422, "invalid_cursor")


# -- a 500 keeps the connection -------------------------------------------------------------------


@pytest.fixture
def live_server(runtime: Runtime) -> Iterator[int]:
    """The app served by uvicorn on a free port, with one route that fails unexpectedly."""
    app = create_app(runtime=runtime)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)
    sock.close()


def test_a_500_answers_json_and_keeps_the_connection_open(live_server: int) -> None:
    conn = HTTPConnection("127.0.0.1", live_server, timeout=10)
    conn.request("GET", "/boom")
    failed = conn.getresponse()
    body = failed.read()
    conn.request("GET", "/health")
    after = conn.getresponse()

    assert failed.status == 500
    assert b'"code":"internal_error"' in body
    assert failed.getheader("connection") != "close"
    assert after.status == 200
    conn.close()
