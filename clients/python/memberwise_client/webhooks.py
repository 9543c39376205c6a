"""Verifying a webhook from memberwise: the Standard Webhooks signature and timestamp."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

#: Deliveries older or newer than this (seconds) are refused, against replays.
TOLERANCE = 5 * 60


class WebhookVerificationError(Exception):
    """The delivery is not from memberwise, was changed, or is too old."""


def verify_webhook(
    secret: str,
    body: bytes | str,
    headers: Mapping[str, str],
    *,
    tolerance: int = TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """The delivery's JSON payload, once its ``webhook-signature`` matches ``secret``
    (``whsec_...``) over ``webhook-id.webhook-timestamp.body`` and its timestamp is within
    ``tolerance`` seconds. Deduplicate by ``headers["webhook-id"]``: a delivery may come twice.

    Raises WebhookVerificationError otherwise."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, stamp, signatures = (
            lower["webhook-id"],
            lower["webhook-timestamp"],
            lower["webhook-signature"],
        )
        timestamp = int(stamp)
    except (KeyError, ValueError) as exc:
        raise WebhookVerificationError("missing or malformed webhook headers") from exc
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        raise WebhookVerificationError("the delivery's timestamp is outside the tolerance")
    raw = body.encode() if isinstance(body, str) else body
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()
    ).decode()
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            payload: dict[str, Any] = json.loads(raw)
            return payload
    raise WebhookVerificationError("no signature matches the secret")
