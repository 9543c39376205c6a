"""Signing member-center links on the platform's side (scheme ``v1``, docs/member-center.md),
for a platform that shares the secret (``MEMBERWISE_MEMBER_CENTER_SECRET``) instead of asking
``POST /v1/member-center/links`` for each link."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

SCHEME = "memberwise-member-center/v1"


def sign_member_center_link(
    secret: str,
    base_url: str,
    member_id: str,
    *,
    ttl_seconds: int = 600,
    lang: str | None = None,
    now: float | None = None,
) -> str:
    """The URL of ``member_id``'s member center under ``base_url`` (the server's address,
    e.g. ``https://members.example.com``), working for ``ttl_seconds`` (the server refuses links
    lasting longer than its ``member_center_max_link_seconds``)."""
    expires = int(now if now is not None else time.time()) + ttl_seconds
    message = f"{SCHEME}\n{member_id}\n{expires}".encode()
    sig = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    query = {"member": member_id, "expires": str(expires), "sig": sig}
    if lang:
        query["lang"] = lang
    return f"{base_url.rstrip('/')}/member-center?{urlencode(query)}"
