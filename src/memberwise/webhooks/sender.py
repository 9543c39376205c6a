"""The sender: fans the outbox out, leases due deliveries, POSTs them signed, records each try.

One pass handles a batch: the store work (fan-out, the lease, the results) runs in short
transactions on a worker thread, the HTTP requests concurrently on the event loop over pooled
keep-alive connections. A delivery is leased before it is sent and its result is written only
while the lease is still held, so two senders never both record one delivery; a sender killed
mid-pass leaves leases that run out, and those deliveries go again under the same
``webhook-id`` (at-least-once; receivers deduplicate by that id, as the specification asks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import Engine, RowMapping

from memberwise.kit.db import transaction
from memberwise.kit.ids import new_id
from memberwise.kit.time import utcnow
from memberwise.privacy.crypto import FieldCipher
from memberwise.webhooks import policy, repository, service, signing
from memberwise.webhooks.policy import Outcome
from memberwise.webhooks.schemas import SendReport

log = logging.getLogger(__name__)

RESPONSE_KEEP = 1024  # characters of a receiver's answer kept in the attempt log


@dataclass(frozen=True)
class SenderConfig:
    batch: int = 500
    concurrency: int = 64
    timeout_seconds: float = 15.0
    lease: timedelta = timedelta(seconds=60)
    idle_seconds: float = 0.5


@dataclass
class _Result:
    status_code: int | None
    error: str | None
    response: str | None
    retry_after: str | None
    duration_ms: int
    attempted_at: datetime


def _body(row: RowMapping) -> bytes:
    """The Standard Webhooks payload: ``{"type", "timestamp", "data"}`` (data stored as JSON)."""
    stamp = row["created_at"].isoformat().replace("+00:00", "Z")
    head = f'{{"type":"{row["event_type"]}","timestamp":"{stamp}","data":'
    payload: str = row["payload"]
    return head.encode() + payload.encode() + b"}"


class Sender:
    """Delivers the outbox to the registered endpoints; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        cipher: FieldCipher,
        config: SenderConfig | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.engine = engine
        self.cipher = cipher
        self.config = config or SenderConfig()
        self._session = session
        self._own_session = session is None
        self._token = new_id()

    async def __aenter__(self) -> Sender:
        if self._session is None:
            # aiohttp, not httpx: on this project's machine httpx's pool managed about 75
            # requests/s at 64 in flight against 1,400-1,600 for aiohttp (benchmarks/README).
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.config.concurrency),
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds),
            )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- store work, on a worker thread -------------------------------------------------------

    def _claim(self, now: datetime) -> tuple[int, list[RowMapping], dict[str, list[str]]]:
        with transaction(self.engine) as conn:
            dispatched = service.dispatch(conn, now=now)
        with transaction(self.engine) as conn:
            due = repository.due_deliveries(conn, now, self.config.batch)
            claimed = repository.claim(conn, due, self._token, now, now + self.config.lease)
            endpoints = sorted({r["endpoint_id"] for r in claimed})
            secrets = service.signing_secrets(conn, self.cipher, endpoints, now)
        return dispatched, claimed, secrets

    def _record(
        self, claimed: list[RowMapping], results: list[_Result], now: datetime
    ) -> SendReport:
        """Write the attempts and their effects; ``now`` is the pass's clock (retries are
        scheduled from it)."""
        report = SendReport(attempted=len(claimed))
        deliveries: list[dict[str, Any]] = []
        attempts: list[dict[str, Any]] = []
        per_endpoint: dict[str, list[Outcome]] = defaultdict(list)
        for row, res in zip(claimed, results, strict=True):
            outcome = policy.classify(res.status_code)
            nxt: datetime | None = res.attempted_at
            if outcome is Outcome.retry:
                retry_after = policy.parse_retry_after(res.retry_after, res.attempted_at)
                nxt = policy.next_attempt(row["attempts"] + 1, now, retry_after=retry_after)
                if nxt is None:
                    outcome = Outcome.failed
            status = {
                Outcome.delivered: "delivered",
                Outcome.retry: "pending",
                Outcome.failed: "failed",
                Outcome.gone: "failed",
            }[outcome]
            error = res.error
            if outcome is Outcome.gone:
                error = "410 Gone: the endpoint was disabled"
            elif error is None and outcome is not Outcome.delivered:
                error = f"HTTP {res.status_code}"
            deliveries.append(
                {
                    "delivery_id": row["delivery_id"],
                    "status": status,
                    "next_attempt_at": nxt or now,
                    "status_code": res.status_code,
                    "error": error,
                    "delivered_at": res.attempted_at if outcome is Outcome.delivered else None,
                }
            )
            attempts.append(
                {
                    "attempt_id": f"att_{new_id()}",
                    "delivery_id": row["delivery_id"],
                    "attempted_at": res.attempted_at,
                    "status_code": res.status_code,
                    "duration_ms": res.duration_ms,
                    "error": res.error,
                    "response": res.response,
                }
            )
            per_endpoint[row["endpoint_id"]].append(outcome)
            report.delivered += outcome is Outcome.delivered
            report.retrying += outcome is Outcome.retry
            report.failed += outcome in (Outcome.failed, Outcome.gone)
        with transaction(self.engine) as conn:
            repository.insert_attempts(conn, attempts)
            repository.record_deliveries(conn, deliveries, self._token)
            current = repository.endpoints_by_id(conn, sorted(per_endpoint))
            updates = []
            for endpoint_id, outcomes in per_endpoint.items():
                endpoint = current.get(endpoint_id)
                if endpoint is None:  # deleted meanwhile
                    continue
                update = _endpoint_after(endpoint, outcomes, now)
                report.disabled_endpoints += (
                    update["status"] == "disabled" and endpoint["status"] != "disabled"
                )
                updates.append(update)
            repository.record_endpoint_results(conn, updates)
        return report

    # -- HTTP, on the loop --------------------------------------------------------------------

    async def _post(self, row: RowMapping, secrets: list[str], gate: asyncio.Semaphore) -> _Result:
        assert self._session is not None, "use the sender as an async context manager"
        body = _body(row)
        async with gate:
            attempted_at = utcnow()
            started = time.perf_counter()
            headers = signing.headers(secrets, row["message_id"], int(time.time()), body)
            try:
                async with self._session.post(
                    row["url"], data=body, headers=headers, allow_redirects=False
                ) as resp:
                    text = (await resp.read())[: RESPONSE_KEEP * 4].decode("utf-8", "replace")
                    status, retry_after = resp.status, resp.headers.get("retry-after")
            except (aiohttp.ClientError, TimeoutError) as exc:
                return _Result(
                    None,
                    f"{type(exc).__name__}: {exc}"[:500],
                    None,
                    None,
                    int((time.perf_counter() - started) * 1000),
                    attempted_at,
                )
            return _Result(
                status,
                None,
                text[:RESPONSE_KEEP] or None,
                retry_after,
                int((time.perf_counter() - started) * 1000),
                attempted_at,
            )

    async def run_once(self, now: datetime | None = None) -> SendReport:
        """One pass: fan out, lease a batch of due deliveries, send them, record the results."""
        now = now or utcnow()
        dispatched, claimed, secrets = await asyncio.to_thread(self._claim, now)
        report = SendReport(dispatched=dispatched)
        if not claimed:
            return report
        gate = asyncio.Semaphore(self.config.concurrency)
        results = await asyncio.gather(
            *(self._post(r, secrets.get(r["endpoint_id"], []), gate) for r in claimed)
        )
        done = await asyncio.to_thread(self._record, claimed, list(results), now)
        return done.model_copy(update={"dispatched": dispatched})

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop`` is set, resting ``idle_seconds`` when nothing is due."""
        while not stop.is_set():
            try:
                report = await self.run_once()
            except Exception:  # a store or network hiccup must not end the sender
                log.exception("webhook sender pass failed; retrying")
                report = SendReport()
            if report.attempted == 0 and report.dispatched == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.config.idle_seconds)


def _endpoint_after(row: RowMapping, outcomes: list[Outcome], now: datetime) -> dict[str, Any]:
    """An endpoint's failure streak and status after a batch of outcomes (in send order)."""
    failures, since = int(row["consecutive_failures"]), row["failing_since"]
    status, reason = row["status"], row["disabled_reason"]
    for outcome in outcomes:
        if outcome is Outcome.delivered:
            failures, since = 0, None
        else:
            failures += 1
            since = since or now
        if outcome is Outcome.gone:
            status, reason = "disabled", "the endpoint answered 410 Gone"
    if status == "active" and policy.should_disable(failures, since, now):
        status = "disabled"
        reason = f"every attempt failed since {since:%Y-%m-%d %H:%M} UTC ({failures} in a row)"
    return {
        "endpoint_id": row["endpoint_id"],
        "consecutive_failures": failures,
        "failing_since": since,
        "status": status,
        "disabled_reason": reason,
        "updated_at": now,
    }
