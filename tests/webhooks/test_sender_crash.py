"""kill -9 of the sender mid-delivery: every message still arrives, the ones in flight arrive
again under the same ``webhook-id`` (at-least-once, as the specification promises)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest

from memberwise.kit.db import transaction
from memberwise.kit.outbox import emit
from memberwise.kit.time import utcnow
from memberwise.runtime import Runtime
from memberwise.webhooks.sender import Sender
from tests.conftest import TEST_PII_KEY
from tests.webhooks.receiver import Answer, receiver
from tests.webhooks.test_sender import add_endpoint


@pytest.mark.slow
def test_a_killed_sender_loses_nothing_and_resends_with_the_same_id(runtime: Runtime) -> None:
    with receiver(lambda _: Answer(delay=1.0)) as rx:
        add_endpoint(runtime, rx.url)
        with transaction(runtime.engine) as conn:
            sent = [emit(conn, "coupon.issued", {"n": i}, member_id=f"m{i}") for i in range(20)]
        env = {
            **os.environ,
            "MEMBERWISE_HOME": str(runtime.settings.home),
            "MEMBERWISE_DATABASE_URL": runtime.settings.db_url,
            "MEMBERWISE_PII_KEY": TEST_PII_KEY,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "memberwise.cli", "webhooks", "send", "--lease-seconds", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not rx.received and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)  # requests already on the wire reach the receiver's threads
        in_flight = set(rx.ids())
        assert in_flight, "the sender never reached the receiver"

        async def finish() -> None:
            async with Sender(runtime.engine, runtime.cipher) as sender:
                for step in range(1, 10):
                    await sender.run_once(utcnow() + step * timedelta(seconds=3))

        asyncio.run(finish())
    ids = rx.ids()
    assert set(ids) == set(sent)
    repeated = {i for i in ids if ids.count(i) > 1}
    assert repeated == in_flight
