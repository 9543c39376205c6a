"""Every call the client makes, as data: route, method, parameters, body, the answer's model and
how a retry is made safe. ``Client`` and ``AsyncClient`` run these; the memberwise test suite
checks each against the served OpenAPI document (``OPERATIONS``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel

from memberwise_client import models


class Retry(Enum):
    """How a request may be sent again after a failure whose outcome is unknown."""

    safe = "safe"  # a read, or a write deduplicated by an id in its body (event_id, order_id)
    idempotency_key = "idempotency_key"  # the API deduplicates by the Idempotency-Key header
    never = "never"  # a write that would happen twice


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    json: Any = None
    model: type[BaseModel] | None = None
    retry: Retry = Retry.safe
    #: For list answers: the key of the items (``Page``) or None for a plain list.
    page: bool = False


def _id(value: str) -> str:
    return quote(value, safe="")


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


#: (method, OpenAPI path template, query parameters used, model) of every operation below.
OPERATIONS: list[tuple[str, str, tuple[str, ...], type[BaseModel] | None]] = [
    ("POST", "/v1/events", (), models.IngestResult),
    ("GET", "/v1/members", ("limit", "after"), models.Member),
    ("GET", "/v1/members/{member_id}", (), models.Member),
    ("GET", "/v1/members/{member_id}/membership", (), None),
    ("GET", "/v1/members/{member_id}/points", (), None),
    ("POST", "/v1/members/{member_id}/points/adjustments", (), models.PointsChange),
    ("GET", "/v1/members/{member_id}/coupons", ("status", "limit", "after"), models.Coupon),
    ("POST", "/v1/coupons/issuances", (), models.Issued),
    ("POST", "/v1/orders", (), models.Order),
    ("GET", "/v1/orders/{order_id}", (), models.Order),
    ("POST", "/v1/orders/{order_id}/refunds", (), None),
    ("GET", "/v1/members/{member_id}/recommendations", ("n", "category"), models.Recommendations),
    ("POST", "/v1/webhooks/endpoints", (), models.WebhookEndpoint),
    ("POST", "/v1/campaigns", (), models.Campaign),
    ("POST", "/v1/campaigns/{campaign_id}/launch", (), models.Campaign),
    ("GET", "/v1/campaigns/{campaign_id}", (), models.Campaign),
    ("GET", "/v1/campaigns/{campaign_id}/results", (), models.CampaignResults),
    ("POST", "/v1/member-center/links", (), models.MemberCenterLink),
]


def send_events(events: Sequence[Mapping[str, Any]]) -> Request:
    return Request("POST", "/v1/events", json={"events": list(events)}, model=models.IngestResult)


def members_page(limit: int, after: str | None) -> Request:
    return Request(
        "GET", "/v1/members", _params(limit=limit, after=after), model=models.Member, page=True
    )


def member(member_id: str) -> Request:
    return Request("GET", f"/v1/members/{_id(member_id)}", model=models.Member)


def membership(member_id: str) -> Request:
    return Request("GET", f"/v1/members/{_id(member_id)}/membership")


def points(member_id: str) -> Request:
    return Request("GET", f"/v1/members/{_id(member_id)}/points")


def adjust_points(member_id: str, points: int, reason: str) -> Request:
    return Request(
        "POST",
        f"/v1/members/{_id(member_id)}/points/adjustments",
        json={"points": points, "reason": reason},
        model=models.PointsChange,
        retry=Retry.idempotency_key,
    )


def coupons_page(member_id: str, status: str | None, limit: int, after: str | None) -> Request:
    return Request(
        "GET",
        f"/v1/members/{_id(member_id)}/coupons",
        _params(status=status, limit=limit, after=after),
        model=models.Coupon,
        page=True,
    )


def issue_coupons(template: str, member_ids: Sequence[str]) -> Request:
    return Request(
        "POST",
        "/v1/coupons/issuances",
        json={"template": template, "member_ids": list(member_ids)},
        model=models.Issued,
        retry=Retry.idempotency_key,
    )


def place_order(order: Mapping[str, Any]) -> Request:
    return Request("POST", "/v1/orders", json=dict(order), model=models.Order)


def order(order_id: str) -> Request:
    return Request("GET", f"/v1/orders/{_id(order_id)}", model=models.Order)


def refund(order_id: str, refund: Mapping[str, Any]) -> Request:
    return Request("POST", f"/v1/orders/{_id(order_id)}/refunds", json=dict(refund))


def recommendations(member_id: str, n: int, category: str | None) -> Request:
    return Request(
        "GET",
        f"/v1/members/{_id(member_id)}/recommendations",
        _params(n=n, category=category),
        model=models.Recommendations,
    )


def create_webhook_endpoint(url: str, event_types: Sequence[str]) -> Request:
    return Request(
        "POST",
        "/v1/webhooks/endpoints",
        json={"url": url, "event_types": list(event_types)},
        model=models.WebhookEndpoint,
        retry=Retry.never,
    )


def create_campaign(definition: Mapping[str, Any]) -> Request:
    """A draft campaign: one ``offer``, or ``arms`` (A/B/n) with weights, plus the holdout."""
    return Request(
        "POST", "/v1/campaigns", json=dict(definition), model=models.Campaign, retry=Retry.never
    )


def launch_campaign(campaign_id: str) -> Request:
    # Never retried blindly: a launch that did happen answers 409 the second time.
    return Request(
        "POST",
        f"/v1/campaigns/{_id(campaign_id)}/launch",
        model=models.Campaign,
        retry=Retry.never,
    )


def campaign(campaign_id: str) -> Request:
    return Request("GET", f"/v1/campaigns/{_id(campaign_id)}", model=models.Campaign)


def campaign_results(campaign_id: str) -> Request:
    return Request("GET", f"/v1/campaigns/{_id(campaign_id)}/results", model=models.CampaignResults)


def member_center_link(member_id: str, ttl_seconds: int | None, lang: str | None) -> Request:
    # Safe to send again: a link is computed, nothing is stored.
    body = {"member_id": member_id} | _params(ttl_seconds=ttl_seconds, lang=lang)
    return Request("POST", "/v1/member-center/links", json=body, model=models.MemberCenterLink)
