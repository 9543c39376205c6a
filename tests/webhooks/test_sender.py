"""The sender against a real local receiver: signatures, order, retries, Retry-After, 410,
exhaustion, auto-disable and replays, on every store under test."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from sqlalchemy import Engine, func, select
from standardwebhooks import Webhook

from memberwise.kit.db import transaction
from memberwise.kit.outbox import emit, outbox
from memberwise.kit.time import utcnow
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime
from memberwise.webhooks import policy, service
from memberwise.webhooks.schemas import EndpointCreate, EndpointCreated, ReplayRange, SendReport
from memberwise.webhooks.sender import Sender
from memberwise.webhooks.tables import webhook_deliveries
from tests.webhooks.receiver import Answer, Received, receiver

ACTOR = Principal(key_id="test", role=Role.admin, name="test")


def add_endpoint(rt: Runtime, url: str, types: list[str] | None = None) -> EndpointCreated:
    body = EndpointCreate.model_validate({"url": url, "event_types": types or []})
    with transaction(rt.engine) as conn:
        return service.create_endpoint(conn, rt.cipher, body, actor=ACTOR)


def emit_committed(engine: Engine, event_type: str, data: dict[str, object], member: str) -> str:
    with transaction(engine) as conn:
        return emit(conn, event_type, data, member_id=member)


def send_once(rt: Runtime, now_offset: timedelta = timedelta(0)) -> SendReport:
    async def go() -> SendReport:
        async with Sender(rt.engine, rt.cipher) as sender:
            return await sender.run_once(utcnow() + now_offset)

    return asyncio.run(go())


def delivery(engine: Engine, message_id: str) -> dict[str, object]:
    with transaction(engine) as conn:
        row = (
            conn.execute(
                select(webhook_deliveries).where(webhook_deliveries.c.message_id == message_id)
            )
            .mappings()
            .one()
        )
    return dict(row)


def test_deliveries_are_signed_to_the_standard_and_keep_each_members_order(
    runtime: Runtime,
) -> None:
    with receiver() as rx:
        created = add_endpoint(runtime, rx.url)
        sent = [
            emit_committed(runtime.engine, "coupon.issued", {"n": i}, member)
            for i, member in enumerate(["m1", "m2", "m1", "m1", "m2"])
        ]
        reports = [send_once(runtime) for _ in range(4)]

    assert sum(r.delivered for r in reports) == 5
    assert sorted(rx.ids()) == sorted(sent)
    verifier = Webhook(created.secret)
    payloads = [verifier.verify(r.body, r.headers) for r in rx.received]
    assert {p["type"] for p in payloads} == {"coupon.issued"}
    by_id = dict(zip(rx.ids(), payloads, strict=True))
    assert [by_id[m]["data"]["n"] for m in rx.ids() if m in (sent[0], sent[2], sent[3])] == [
        0,
        2,
        3,
    ]
    assert delivery(runtime.engine, sent[0])["status"] == "delivered"


def test_nothing_is_sent_for_a_rolled_back_change(runtime: Runtime) -> None:
    with receiver() as rx:
        add_endpoint(runtime, rx.url)
        with runtime.engine.connect() as conn:
            trans = conn.begin()
            emit(conn, "coupon.issued", {"coupon": "c1"}, member_id="m1")
            trans.rollback()  # the change failed
        report = send_once(runtime)
    assert report == SendReport()
    assert rx.received == []


def test_an_endpoint_gets_only_the_types_it_subscribed_to(runtime: Runtime) -> None:
    with receiver() as rx:
        add_endpoint(runtime, rx.url, ["member.tier_changed"])
        emit_committed(runtime.engine, "coupon.issued", {}, "m1")
        wanted = emit_committed(runtime.engine, "member.tier_changed", {"to": "gold"}, "m1")
        send_once(runtime)
    assert rx.ids() == [wanted]


def test_a_failure_is_retried_on_the_schedule_and_a_later_message_of_that_member_waits(
    runtime: Runtime,
) -> None:
    failing: set[str] = set()

    def answer(req: Received) -> Answer:
        if req.headers["webhook-id"] in failing:
            failing.discard(req.headers["webhook-id"])
            return Answer(status=503)
        return Answer()

    with receiver(answer) as rx:
        add_endpoint(runtime, rx.url)
        first = emit_committed(runtime.engine, "coupon.issued", {"n": 1}, "m1")
        second = emit_committed(runtime.engine, "coupon.issued", {"n": 2}, "m1")
        other = emit_committed(runtime.engine, "coupon.issued", {"n": 3}, "m2")
        failing.add(first)
        before = utcnow()
        report = send_once(runtime)
        assert (report.attempted, report.delivered, report.retrying) == (2, 1, 1)
        row = delivery(runtime.engine, first)
        assert row["attempts"] == 1 and row["last_status_code"] == 503
        wait = row["next_attempt_at"] - before  # type: ignore[operator]
        assert timedelta(seconds=4.5) <= wait <= timedelta(seconds=5.5 + 2)
        assert send_once(runtime).attempted == 0  # m1's second waits behind the first
        send_once(runtime, timedelta(seconds=6))
        send_once(runtime, timedelta(seconds=6))
    assert rx.ids() == [first, other, first, second] or rx.ids() == [other, first, first, second]
    with transaction(runtime.engine) as conn:
        attempts = service.list_attempts(conn, str(row["delivery_id"]))
    assert [a.status_code for a in attempts] == [503, 200]


def test_retry_after_is_honoured(runtime: Runtime) -> None:
    with receiver(lambda _: Answer(status=429, headers={"Retry-After": "120"})) as rx:
        add_endpoint(runtime, rx.url)
        message = emit_committed(runtime.engine, "coupon.issued", {}, "m1")
        now = utcnow()

        async def go() -> None:
            async with Sender(runtime.engine, runtime.cipher) as sender:
                await sender.run_once(now)

        asyncio.run(go())
    assert delivery(runtime.engine, message)["next_attempt_at"] == now + timedelta(seconds=120)


def test_410_disables_the_endpoint_and_nothing_more_is_sent(runtime: Runtime) -> None:
    with receiver(lambda _: Answer(status=410)) as rx:
        created = add_endpoint(runtime, rx.url)
        gone = emit_committed(runtime.engine, "coupon.issued", {}, "m1")
        report = send_once(runtime)
        emit_committed(runtime.engine, "coupon.issued", {}, "m2")
        later = send_once(runtime)
    assert (report.failed, report.disabled_endpoints) == (1, 1)
    assert later.attempted == 0 and rx.ids() == [gone]
    with transaction(runtime.engine) as conn:
        endpoint = service.get_endpoint(conn, created.endpoint_id)
    assert endpoint.status == "disabled"
    assert endpoint.disabled_reason == "the endpoint answered 410 Gone"
    assert delivery(runtime.engine, gone)["status"] == "failed"


def test_attempts_run_out_after_the_schedule(runtime: Runtime) -> None:
    with receiver(lambda _: Answer(status=500)) as rx:
        add_endpoint(runtime, rx.url)
        message = emit_committed(runtime.engine, "coupon.issued", {}, "m1")
        clock = timedelta(0)
        for _ in range(policy.MAX_ATTEMPTS + 2):
            send_once(runtime, clock)
            clock += timedelta(days=2)  # past every delay of the schedule
    assert len(rx.received) == policy.MAX_ATTEMPTS
    row = delivery(runtime.engine, message)
    assert (row["status"], row["attempts"]) == ("failed", policy.MAX_ATTEMPTS)


def test_an_endpoint_failing_for_five_days_and_ten_attempts_is_disabled(
    runtime: Runtime,
) -> None:
    with receiver(lambda _: Answer(status=500)) as rx:
        created = add_endpoint(runtime, rx.url)
        messages = [emit_committed(runtime.engine, "coupon.issued", {}, f"m{i}") for i in range(3)]
        disabled_after = []
        for day in (0, 2, 4, 6, 8):
            report = send_once(runtime, timedelta(days=day))
            disabled_after.append(report.disabled_endpoints)
    # 3 failures a pass: 12 in a row on day 6, failing since day 0, so the 4th pass disables it
    assert disabled_after == [0, 0, 0, 1, 0]
    assert len(rx.received) == 12
    assert {delivery(runtime.engine, m)["status"] for m in messages} == {"pending"}
    with transaction(runtime.engine) as conn:
        endpoint = service.get_endpoint(conn, created.endpoint_id)
    assert (endpoint.status, endpoint.consecutive_failures) == ("disabled", 12)


def test_replays_resend_under_the_original_webhook_id(runtime: Runtime) -> None:
    with receiver() as rx:
        created = add_endpoint(runtime, rx.url)
        message = emit_committed(runtime.engine, "coupon.issued", {"n": 1}, "m1")
        send_once(runtime)
        row = delivery(runtime.engine, message)
        with transaction(runtime.engine) as conn:
            replayed = service.replay_delivery(conn, str(row["delivery_id"]), actor=ACTOR)
        assert replayed.status == "pending" and replayed.attempts == 0
        send_once(runtime)
        with transaction(runtime.engine) as conn:
            count = service.replay_range(
                conn,
                created.endpoint_id,
                ReplayRange(since=utcnow() - timedelta(hours=1)),
                actor=ACTOR,
            )
        send_once(runtime)
    assert count == 1
    assert rx.ids() == [message, message, message]


def test_fan_out_is_idempotent_and_the_outbox_is_pruned_after_the_replay_window(
    runtime: Runtime,
) -> None:
    with receiver() as rx:
        add_endpoint(runtime, rx.url)
        emit_committed(runtime.engine, "coupon.issued", {}, "m1")
        now = utcnow()
        with transaction(runtime.engine) as conn:
            assert service.dispatch(conn, now=now) == 1
            assert service.dispatch(conn, now=now) == 0
        send_once(runtime)
        with transaction(runtime.engine) as conn:
            assert service.prune(conn, now=now) == 0
            assert service.prune(conn, now=now + service.RETENTION + timedelta(seconds=1)) == 1
            assert conn.execute(select(func.count()).select_from(outbox)).scalar_one() == 0
    assert len(rx.received) == 1


def test_payload_is_the_standard_envelope(runtime: Runtime) -> None:
    with receiver() as rx:
        add_endpoint(runtime, rx.url)
        emit_committed(
            runtime.engine, "member.tier_changed", {"from": "silver", "to": "gold"}, "m7"
        )
        send_once(runtime)
    body = json.loads(rx.received[0].body)
    assert body["type"] == "member.tier_changed"
    assert body["data"] == {"from": "silver", "to": "gold"}
    assert body["timestamp"].endswith("Z")
