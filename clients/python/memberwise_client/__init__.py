"""memberwise-client: a typed client of the memberwise HTTP API (sync and async)."""

from memberwise_client.client import AsyncClient, Client, RetryPolicy
from memberwise_client.errors import ApiError, TransportError
from memberwise_client.member_center import sign_member_center_link
from memberwise_client.models import (
    Balance,
    Coupon,
    IngestResult,
    Issued,
    Member,
    MemberCenterLink,
    Order,
    PointsChange,
    Recommendation,
    Recommendations,
    WebhookEndpoint,
)
from memberwise_client.webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "ApiError",
    "AsyncClient",
    "Balance",
    "Client",
    "Coupon",
    "IngestResult",
    "Issued",
    "Member",
    "MemberCenterLink",
    "Order",
    "PointsChange",
    "Recommendation",
    "Recommendations",
    "RetryPolicy",
    "TransportError",
    "WebhookEndpoint",
    "WebhookVerificationError",
    "sign_member_center_link",
    "verify_webhook",
]
