"""The Python SDK (clients/python) against the real app: it cannot drift from the served
OpenAPI, it speaks to the API sync and async, retries only what is safe, and verifies webhooks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel
from standardwebhooks import Webhook

from memberwise.app import create_app
from memberwise.privacy.schemas import Role
from memberwise.runtime import Runtime
from memberwise.webhooks import signing
from memberwise_client import ApiError, AsyncClient, Client, RetryPolicy, TransportError
from memberwise_client import models as sdk_models
from memberwise_client.operations import OPERATIONS
from memberwise_client.webhooks import WebhookVerificationError, verify_webhook
from tests.webhooks.receiver import Answer, Received, receiver

Auth = Callable[[Role], dict[str, str]]
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _resolve(spec, schema["allOf"][0])
    return schema


def _fields_exist(spec: dict[str, Any], model: type[BaseModel], schema: dict[str, Any]) -> None:
    schema = _resolve(spec, schema)
    props = schema.get("properties", {})
    for name, info in model.model_fields.items():
        assert name in props, f"{model.__name__}.{name} is not in the served schema"
        annotation = info.annotation
        inner = getattr(annotation, "__args__", (None,))[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            _fields_exist(spec, inner, _resolve(spec, props[name])["items"])


def test_every_sdk_call_matches_the_served_openapi(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for method, path, query, model in OPERATIONS:
        assert path in spec["paths"], f"{path} is not served"
        operation = spec["paths"][path].get(method.lower())
        assert operation is not None, f"{method} {path} is not served"
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        assert set(query) <= declared, f"{method} {path}: {set(query) - declared}"
        if model is None:
            continue
        answers = operation["responses"]
        ok = next(answers[c] for c in ("201", "200") if "content" in answers.get(c, {}))
        schema = _resolve(spec, ok["content"]["application/json"]["schema"])
        if "items" in schema.get("properties", {}) and model is not sdk_models.Recommendations:
            schema = _resolve(spec, schema["properties"]["items"])["items"]  # a Page
        _fields_exist(spec, model, schema)


def test_the_sync_client_against_the_app(client: TestClient, auth: Auth) -> None:
    key = auth(Role.admin)["Authorization"].removeprefix("Bearer ")
    mw = Client("http://testserver", key, http=client, retry=FAST)
    events = [
        {
            "event_id": f"e{i}",
            "member_id": f"sdk{i % 3}",
            "type": "view",
            "ts": "2026-11-20T21:15:00+08:00",
            "item_id": "i1",
        }
        for i in range(6)
    ]
    sent = mw.send_events(events)
    assert (sent.accepted, sent.duplicate, sent.rejected) == (6, 0, 0)
    assert mw.send_events(events).duplicate == 6
    assert sorted(m.member_id for m in mw.iter_members(page_size=2)) == ["sdk0", "sdk1", "sdk2"]
    with pytest.raises(ApiError) as refused:
        mw.member("nobody")
    assert (refused.value.status, refused.value.code) == (404, "member_not_found")
    recs = mw.recommendations("sdk0", n=5)
    assert recs.member_id == "sdk0" and recs.personalized is False


def test_the_async_client_against_the_app(runtime: Runtime, auth: Auth) -> None:
    key = auth(Role.admin)["Authorization"].removeprefix("Bearer ")
    app = create_app(runtime=runtime)

    async def go() -> list[str]:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        async with AsyncClient("http://t", key, http=http, retry=FAST) as mw:
            await mw.send_events(
                [
                    {
                        "event_id": "a1",
                        "member_id": "am1",
                        "type": "login",
                        "ts": "2026-11-20T01:00:00Z",
                    }
                ]
            )
            return [m.member_id async for m in mw.iter_members(page_size=10)]

    assert asyncio.run(go()) == ["am1"]


def test_a_write_with_an_idempotency_key_is_retried_with_the_same_key() -> None:
    calls: list[Received] = []

    def answer(req: Received) -> Answer:
        calls.append(req)
        return Answer(status=503, headers={"Retry-After": "0"}) if len(calls) == 1 else Answer()

    with receiver(answer) as rx:
        mw = Client(rx.url.rsplit("/", 1)[0], "mw_x", retry=FAST)
        with pytest.raises(ApiError) as wrong:  # the stand-in answers "ok", not JSON
            mw.adjust_points("m1", 10, "goodwill")
        assert wrong.value.code == "invalid_response"
    keys = [c.headers.get("idempotency-key") for c in calls]
    assert len(keys) == 2 and keys[0] is not None and keys[0] == keys[1]


def test_a_write_that_would_happen_twice_is_not_retried() -> None:
    with receiver(lambda _: Answer(status=503)) as rx:
        mw = Client(rx.url.rsplit("/", 1)[0], "mw_x", retry=FAST)
        with pytest.raises(ApiError) as refused:
            mw.create_webhook_endpoint("http://127.0.0.1:9/x")
        assert refused.value.status == 503
        assert len(rx.received) == 1
    dead = Client("http://127.0.0.1:9", "mw_x", retry=FAST)
    with pytest.raises(TransportError):
        dead.member("m1")


def test_verify_webhook_accepts_what_memberwise_signs_and_refuses_the_rest() -> None:
    secret = signing.new_secret()
    body = json.dumps({"type": "coupon.issued", "data": {"coupon_id": "c1"}}).encode()
    headers = signing.headers([secret], "msg_1", 1_800_000_000, body)
    assert verify_webhook(secret, body, headers, now=1_800_000_010)["data"] == {"coupon_id": "c1"}
    # Signed now, the reference verifier and the SDK's agree.
    fresh = signing.headers([secret], "msg_2", int(time.time()), body)
    assert Webhook(secret).verify(body, fresh) == verify_webhook(secret, body, fresh)
    with pytest.raises(WebhookVerificationError, match="no signature"):
        verify_webhook(secret, body + b" ", headers, now=1_800_000_010)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify_webhook(secret, body, headers, now=1_800_009_999)
    with pytest.raises(WebhookVerificationError, match="no signature"):
        verify_webhook(signing.new_secret(), body, headers, now=1_800_000_010)


def test_a_campaign_with_offer_arms_through_the_sdk(
    client: TestClient, auth: Auth, runtime: Runtime
) -> None:
    from memberwise.kit.db import transaction
    from tests.campaigns.test_service import publish_profiles
    from tests.ledger.factories import add_members

    members = [f"a{i:03d}" for i in range(60)]
    with transaction(runtime.engine) as conn:
        add_members(conn, *members)
        publish_profiles(conn, members, "loyal", [])
    key = auth(Role.operator)["Authorization"].removeprefix("Bearer ")
    mw = Client("http://testserver", key, http=client, retry=FAST)
    made = mw.create_campaign(
        {
            "name": "three offers",
            "audience": {"segment": "loyal"},
            "arms": [
                {"name": "msg_a", "weight": 1, "offer": {"kind": "message", "message": "a"}},
                {"name": "msg_b", "weight": 1, "offer": {"kind": "message", "message": "b"}},
            ],
            "channels": ["app"],
            "holdout_percent": 20,
            "send_at_best_hour": False,
            "quiet_hours": [0, 0],
        }
    )
    launched = mw.launch_campaign(made.campaign_id)
    assert sum(sum(s.values()) for s in launched.arms.values()) == 60
    assert set(launched.arms) <= {"holdout", "msg_a", "msg_b"}
    results = mw.campaign_results(made.campaign_id)
    assert results.control == "holdout"
    assert results.srm.observed == {a: sum(s.values()) for a, s in launched.arms.items()}
    with pytest.raises(ApiError) as refused:
        mw.launch_campaign(made.campaign_id)
    assert refused.value.code == "campaign_already_launched"
