"""``Client`` and ``AsyncClient``: the same methods, over httpx, with safe retries.

A request whose outcome is unknown (no connection, a timeout, 429, 502, 503, 504) is sent again
with exponential backoff and jitter, honouring ``Retry-After``, but only when doing it twice
cannot do it twice (see :class:`memberwise_client.operations.Retry`): reads, writes the API
deduplicates by an id in the body, and writes sent with an ``Idempotency-Key`` made once per
call and reused on every attempt.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from memberwise_client import models
from memberwise_client import operations as ops
from memberwise_client.errors import ApiError, TransportError

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 10.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds before attempt ``attempt + 1`` (``Retry-After`` wins when given in seconds)."""
        if retry_after is not None and retry_after.strip().isdigit():
            return min(float(retry_after), self.max_delay)
        backoff: float = min(self.base_delay * 2**attempt, self.max_delay)
        return backoff * random.uniform(0.5, 1.0)


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": "memberwise-client/0.1"}


def _attempt_headers(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key is not None else {}


def _decode(req: ops.Request, response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            body = response.json()
            raise ApiError(response.status_code, body["code"], body["message"], body.get("details"))
        except (ValueError, KeyError, TypeError):
            raise ApiError(response.status_code, "http_error", response.text[:500]) from None
    if response.status_code == 204 or not response.content:
        return None
    try:
        data = response.json()
    except ValueError:
        raise ApiError(
            response.status_code, "invalid_response", "the answer is not JSON: is this memberwise?"
        ) from None
    if req.model is None:
        return data
    if req.page:
        return [req.model.model_validate(i) for i in data["items"]], data.get("next_cursor")
    return req.model.model_validate(data)


class _Base:
    def __init__(self, base_url: str, api_key: str, retry: RetryPolicy | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.retry = retry or RetryPolicy()

    def _may_retry(self, req: ops.Request, attempt: int) -> bool:
        return req.retry is not ops.Retry.never and attempt + 1 < self.retry.attempts


class Client(_Base):
    """The memberwise API, synchronously. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, api_key, retry)
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout)
        self._http.headers.update(_headers(api_key))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, req: ops.Request) -> Any:
        key = str(uuid.uuid4()) if req.retry is ops.Retry.idempotency_key else None
        for attempt in range(self.retry.attempts):
            try:
                response = self._http.request(
                    req.method,
                    req.path,
                    params=dict(req.params),
                    json=req.json,
                    headers=_attempt_headers(key),
                )
            except httpx.TransportError as exc:
                if not self._may_retry(req, attempt):
                    raise TransportError(str(exc)) from exc
                time.sleep(self.retry.delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and self._may_retry(req, attempt):
                time.sleep(self.retry.delay(attempt, response.headers.get("retry-after")))
                continue
            return _decode(req, response)
        raise TransportError("no attempt left")  # pragma: no cover - the loop returns or raises

    # -- the API --------------------------------------------------------------------------

    def send_events(self, events: Sequence[Mapping[str, Any]]) -> models.IngestResult:
        """Send up to 10,000 behaviour events (idempotent by ``event_id``)."""
        out: models.IngestResult = self._run(ops.send_events(events))
        return out

    def member(self, member_id: str) -> models.Member:
        out: models.Member = self._run(ops.member(member_id))
        return out

    def iter_members(self, *, page_size: int = 100) -> Iterator[models.Member]:
        """Every member, following the cursors."""
        after: str | None = None
        while True:
            items, after = self._run(ops.members_page(page_size, after))
            yield from items
            if after is None:
                return

    def membership(self, member_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self._run(ops.membership(member_id))
        return out

    def points(self, member_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self._run(ops.points(member_id))
        return out

    def adjust_points(self, member_id: str, points: int, reason: str) -> models.PointsChange:
        """A staff adjustment (sent with an Idempotency-Key: a retry applies it once)."""
        out: models.PointsChange = self._run(ops.adjust_points(member_id, points, reason))
        return out

    def iter_coupons(
        self, member_id: str, *, status: str | None = None, page_size: int = 100
    ) -> Iterator[models.Coupon]:
        after: str | None = None
        while True:
            items, after = self._run(ops.coupons_page(member_id, status, page_size, after))
            yield from items
            if after is None:
                return

    def issue_coupons(self, template: str, member_ids: Sequence[str]) -> models.Issued:
        out: models.Issued = self._run(ops.issue_coupons(template, member_ids))
        return out

    def place_order(self, order: Mapping[str, Any]) -> models.Order:
        """Place an order (idempotent by ``order_id``: a retry answers the first order)."""
        out: models.Order = self._run(ops.place_order(order))
        return out

    def order(self, order_id: str) -> models.Order:
        out: models.Order = self._run(ops.order(order_id))
        return out

    def refund(self, order_id: str, refund: Mapping[str, Any]) -> dict[str, Any]:
        """Refund part or all of an order (idempotent by ``refund_id``)."""
        out: dict[str, Any] = self._run(ops.refund(order_id, refund))
        return out

    def recommendations(
        self, member_id: str, *, n: int = 20, category: str | None = None
    ) -> models.Recommendations:
        out: models.Recommendations = self._run(ops.recommendations(member_id, n, category))
        return out

    def create_webhook_endpoint(
        self, url: str, event_types: Sequence[str] = ()
    ) -> models.WebhookEndpoint:
        """Register an endpoint; the answer holds its signing secret, shown once."""
        out: models.WebhookEndpoint = self._run(ops.create_webhook_endpoint(url, event_types))
        return out

    def create_campaign(self, definition: Mapping[str, Any]) -> models.Campaign:
        """Define a draft campaign (one ``offer`` or several ``arms``)."""
        out: models.Campaign = self._run(ops.create_campaign(definition))
        return out

    def launch_campaign(self, campaign_id: str) -> models.Campaign:
        """Assign the audience to the holdout and the arms and schedule the sends."""
        out: models.Campaign = self._run(ops.launch_campaign(campaign_id))
        return out

    def campaign(self, campaign_id: str) -> models.Campaign:
        out: models.Campaign = self._run(ops.campaign(campaign_id))
        return out

    def campaign_results(self, campaign_id: str) -> models.CampaignResults:
        """Each arm against the control: SRM, effects, intervals, BH-adjusted p-values."""
        out: models.CampaignResults = self._run(ops.campaign_results(campaign_id))
        return out

    def member_center_link(
        self, member_id: str, *, ttl_seconds: int | None = None, lang: str | None = None
    ) -> models.MemberCenterLink:
        """A signed, short-lived link to the member's member center (open it in a web view)."""
        out: models.MemberCenterLink = self._run(
            ops.member_center_link(member_id, ttl_seconds, lang)
        )
        return out


class AsyncClient(_Base):
    """The memberwise API for asyncio: the same methods as :class:`Client`, awaited."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key, retry)
        self._http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout)
        self._http.headers.update(_headers(api_key))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, req: ops.Request) -> Any:
        key = str(uuid.uuid4()) if req.retry is ops.Retry.idempotency_key else None
        for attempt in range(self.retry.attempts):
            try:
                response = await self._http.request(
                    req.method,
                    req.path,
                    params=dict(req.params),
                    json=req.json,
                    headers=_attempt_headers(key),
                )
            except httpx.TransportError as exc:
                if not self._may_retry(req, attempt):
                    raise TransportError(str(exc)) from exc
                await asyncio.sleep(self.retry.delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and self._may_retry(req, attempt):
                await asyncio.sleep(self.retry.delay(attempt, response.headers.get("retry-after")))
                continue
            return _decode(req, response)
        raise TransportError("no attempt left")  # pragma: no cover

    async def send_events(self, events: Sequence[Mapping[str, Any]]) -> models.IngestResult:
        out: models.IngestResult = await self._run(ops.send_events(events))
        return out

    async def member(self, member_id: str) -> models.Member:
        out: models.Member = await self._run(ops.member(member_id))
        return out

    async def iter_members(self, *, page_size: int = 100) -> AsyncIterator[models.Member]:
        after: str | None = None
        while True:
            items, after = await self._run(ops.members_page(page_size, after))
            for item in items:
                yield item
            if after is None:
                return

    async def membership(self, member_id: str) -> dict[str, Any]:
        out: dict[str, Any] = await self._run(ops.membership(member_id))
        return out

    async def points(self, member_id: str) -> dict[str, Any]:
        out: dict[str, Any] = await self._run(ops.points(member_id))
        return out

    async def adjust_points(self, member_id: str, points: int, reason: str) -> models.PointsChange:
        out: models.PointsChange = await self._run(ops.adjust_points(member_id, points, reason))
        return out

    async def issue_coupons(self, template: str, member_ids: Sequence[str]) -> models.Issued:
        out: models.Issued = await self._run(ops.issue_coupons(template, member_ids))
        return out

    async def place_order(self, order: Mapping[str, Any]) -> models.Order:
        out: models.Order = await self._run(ops.place_order(order))
        return out

    async def order(self, order_id: str) -> models.Order:
        out: models.Order = await self._run(ops.order(order_id))
        return out

    async def refund(self, order_id: str, refund: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = await self._run(ops.refund(order_id, refund))
        return out

    async def recommendations(
        self, member_id: str, *, n: int = 20, category: str | None = None
    ) -> models.Recommendations:
        out: models.Recommendations = await self._run(ops.recommendations(member_id, n, category))
        return out

    async def create_campaign(self, definition: Mapping[str, Any]) -> models.Campaign:
        out: models.Campaign = await self._run(ops.create_campaign(definition))
        return out

    async def launch_campaign(self, campaign_id: str) -> models.Campaign:
        out: models.Campaign = await self._run(ops.launch_campaign(campaign_id))
        return out

    async def campaign(self, campaign_id: str) -> models.Campaign:
        out: models.Campaign = await self._run(ops.campaign(campaign_id))
        return out

    async def campaign_results(self, campaign_id: str) -> models.CampaignResults:
        out: models.CampaignResults = await self._run(ops.campaign_results(campaign_id))
        return out

    async def member_center_link(
        self, member_id: str, *, ttl_seconds: int | None = None, lang: str | None = None
    ) -> models.MemberCenterLink:
        """A signed, short-lived link to the member's member center (open it in a web view)."""
        out: models.MemberCenterLink = await self._run(
            ops.member_center_link(member_id, ttl_seconds, lang)
        )
        return out
