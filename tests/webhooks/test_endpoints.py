"""The webhooks API: registering, rotating, the delivery log and replays, by role."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from fastapi.testclient import TestClient
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from memberwise.app import create_app
from memberwise.kit.db import transaction
from memberwise.kit.outbox import emit
from memberwise.privacy.schemas import Role
from memberwise.runtime import Runtime
from memberwise.webhooks.sender import Sender
from tests.webhooks.receiver import receiver

Auth = Callable[[Role], dict[str, str]]


def send_once(rt: Runtime) -> None:
    async def go() -> None:
        async with Sender(rt.engine, rt.cipher) as sender:
            await sender.run_once()

    asyncio.run(go())


def test_register_deliver_inspect_and_replay_through_the_api(
    client: TestClient, auth: Auth, runtime: Runtime
) -> None:
    with receiver() as rx:
        made = client.post(
            "/v1/webhooks/endpoints",
            json={"url": rx.url, "event_types": ["coupon.issued"], "description": "app push"},
            headers=auth(Role.platform),
        )
        assert made.status_code == 201
        endpoint = made.json()
        assert endpoint["secret"].startswith("whsec_")
        assert endpoint["event_types"] == ["coupon.issued"]
        listed = client.get("/v1/webhooks/endpoints", headers=auth(Role.platform)).json()
        assert [e["endpoint_id"] for e in listed] == [endpoint["endpoint_id"]]
        assert "secret" not in listed[0]

        with transaction(runtime.engine) as conn:
            message = emit(conn, "coupon.issued", {"coupon_id": "c1"}, member_id="m1")
        send_once(runtime)

        log = client.get(
            "/v1/webhooks/deliveries", params={"member_id": "m1"}, headers=auth(Role.platform)
        ).json()
        assert [(d["message_id"], d["status"], d["attempts"]) for d in log["items"]] == [
            (message, "delivered", 1)
        ]
        delivery_id = log["items"][0]["delivery_id"]
        attempts = client.get(
            f"/v1/webhooks/deliveries/{delivery_id}/attempts", headers=auth(Role.platform)
        ).json()
        assert [a["status_code"] for a in attempts] == [200]

        replay = client.post(
            f"/v1/webhooks/deliveries/{delivery_id}/replay", headers=auth(Role.platform)
        )
        assert replay.status_code == 200 and replay.json()["status"] == "pending"
        again = client.post(
            f"/v1/webhooks/deliveries/{delivery_id}/replay", headers=auth(Role.platform)
        )
        assert again.status_code == 409
        assert again.json()["code"] == "webhook_delivery_pending"
        send_once(runtime)
    assert rx.ids() == [message, message]
    Webhook(endpoint["secret"]).verify(rx.received[1].body, rx.received[1].headers)


def test_a_rotated_secret_overlaps_with_the_new_one(
    client: TestClient, auth: Auth, runtime: Runtime
) -> None:
    with receiver() as rx:
        endpoint = client.post(
            "/v1/webhooks/endpoints", json={"url": rx.url}, headers=auth(Role.admin)
        ).json()
        rotated = client.post(
            f"/v1/webhooks/endpoints/{endpoint['endpoint_id']}/rotate-secret",
            json={"keep_previous_hours": 24},
            headers=auth(Role.admin),
        ).json()
        with transaction(runtime.engine) as conn:
            emit(conn, "points.expired", {"points": 10}, member_id="m1")
        send_once(runtime)
        got = rx.received[0]
        assert len(got.headers["webhook-signature"].split(" ")) == 2
        Webhook(endpoint["secret"]).verify(got.body, got.headers)
        Webhook(rotated["secret"]).verify(got.body, got.headers)

        client.post(
            f"/v1/webhooks/endpoints/{endpoint['endpoint_id']}/rotate-secret",
            json={"keep_previous_hours": 0},
            headers=auth(Role.admin),
        )
        with transaction(runtime.engine) as conn:
            emit(conn, "points.expired", {"points": 20}, member_id="m1")
        send_once(runtime)
    last = rx.received[1]
    assert len(last.headers["webhook-signature"].split(" ")) == 1
    try:
        Webhook(endpoint["secret"]).verify(last.body, last.headers)
    except WebhookVerificationError:
        pass
    else:  # pragma: no cover - the old secret must no longer sign
        raise AssertionError("a retired secret still signs")


def test_refusals_are_clear(client: TestClient, auth: Auth) -> None:
    bad_url = client.post(
        "/v1/webhooks/endpoints", json={"url": "ftp://x"}, headers=auth(Role.platform)
    )
    assert bad_url.status_code == 422
    bad_type = client.post(
        "/v1/webhooks/endpoints",
        json={"url": "http://127.0.0.1:9/x", "event_types": ["no.such"]},
        headers=auth(Role.platform),
    )
    assert bad_type.status_code == 422
    missing = client.get("/v1/webhooks/endpoints/ep_none", headers=auth(Role.platform))
    assert (missing.status_code, missing.json()["code"]) == (404, "webhook_endpoint_not_found")
    forbidden = client.get("/v1/webhooks/endpoints", headers=auth(Role.operator))
    assert forbidden.status_code == 403
    types = client.get("/v1/webhooks/event-types", headers=auth(Role.platform)).json()
    assert "member.tier_changed" in [t["type"] for t in types]


def test_disable_and_reenable(client: TestClient, auth: Auth) -> None:
    endpoint = client.post(
        "/v1/webhooks/endpoints", json={"url": "http://127.0.0.1:9/x"}, headers=auth(Role.admin)
    ).json()
    path = f"/v1/webhooks/endpoints/{endpoint['endpoint_id']}"
    off = client.patch(path, json={"enabled": False}, headers=auth(Role.admin)).json()
    assert off["status"] == "disabled" and off["disabled_reason"].startswith("disabled by")
    on = client.patch(path, json={"enabled": True}, headers=auth(Role.admin)).json()
    assert (on["status"], on["disabled_reason"], on["consecutive_failures"]) == ("active", None, 0)
    assert client.delete(path, headers=auth(Role.admin)).status_code == 204
    assert client.get(path, headers=auth(Role.admin)).status_code == 404


def test_the_server_delivers_when_its_sender_is_on(runtime: Runtime, auth: Auth) -> None:
    runtime.settings.webhooks_sender = True
    with receiver() as rx, TestClient(create_app(runtime=runtime)) as client:
        client.post("/v1/webhooks/endpoints", json={"url": rx.url}, headers=auth(Role.admin))
        with transaction(runtime.engine) as conn:
            message = emit(conn, "coupon.issued", {"coupon_id": "c9"}, member_id="m9")
        deadline = time.monotonic() + 20
        while not rx.received and time.monotonic() < deadline:
            time.sleep(0.05)
    assert rx.ids() == [message]
