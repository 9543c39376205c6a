"""Signed, short-lived links to a member's member center (scheme ``v1``, docs/member-center.md).

A link names one member and the moment it stops working, and carries an HMAC-SHA256 of both
under a secret the server and the platform share::

    message = "memberwise-member-center/v1\\n" + member_id + "\\n" + str(expires)
    sig     = hex(HMAC-SHA256(secret, UTF-8(message)))
    URL     = BASE/member-center?member=<member_id>&expires=<unix seconds>&sig=<sig>

The platform either asks ``POST /v1/member-center/links`` (its API key) or computes the same
with the secret it configured (``MEMBERWISE_MEMBER_CENTER_SECRET``). Links are stateless: one
may be opened again (a reload) until it expires, which is why its lifetime is capped
(``member_center_max_link_seconds``): a link expiring later than that is refused, so no one can
mint a link that works for a week. The signature is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from memberwise.kit.errors import Forbidden, MemberwiseError

SCHEME = "memberwise-member-center/v1"
#: Seconds a link's ``expires`` may lie past the cap, for the platform's clock running ahead.
CLOCK_SKEW = 60
#: The shortest shared secret accepted (HMAC-SHA256 wants at least 32 bytes of key).
MIN_SECRET = 32


class LinkMalformed(MemberwiseError):
    code = "link_malformed"


class LinkInvalid(Forbidden):
    code = "link_invalid"


class LinkExpired(MemberwiseError):
    status_code = 410
    code = "link_expired"


class LinkTooLong(MemberwiseError):
    code = "link_lifetime_too_long"


@dataclass(frozen=True)
class SignedLink:
    """The parts of a link: whose center, until when (unix seconds), and the signature."""

    member_id: str
    expires: int
    sig: str

    def query(self) -> dict[str, str]:
        return {"member": self.member_id, "expires": str(self.expires), "sig": self.sig}


def derive_secret(pii_key: bytes) -> bytes:
    """The default link secret: HKDF-SHA256 of the PII key with its own label, so the PII key
    itself never signs anything and a leaked link secret reveals nothing of it."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SCHEME.encode()).derive(
        pii_key
    )


def shared_secret(configured: str | None, pii_key: bytes) -> bytes:
    """The secret links are signed with. Raises ValueError when a configured one is too short."""
    if configured is None:
        return derive_secret(pii_key)
    if len(configured.encode()) < MIN_SECRET:
        raise ValueError(f"the member-center secret must have at least {MIN_SECRET} characters")
    return configured.encode()


def signature(secret: bytes, member_id: str, expires: int) -> str:
    message = f"{SCHEME}\n{member_id}\n{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(secret: bytes, member_id: str, expires: int) -> SignedLink:
    return SignedLink(member_id, expires, signature(secret, member_id, expires))


def verify(
    secret: bytes,
    member: str | None,
    expires: str | None,
    sig: str | None,
    *,
    now: datetime,
    max_seconds: int,
) -> str:
    """The member id of a valid link.

    Raises LinkMalformed (a part missing or not a number), LinkInvalid (signature wrong),
    LinkExpired (``expires`` passed), LinkTooLong (expiring later than the cap allows).
    """
    if not member or not expires or not sig or len(member) > 128 or len(sig) > 128:
        raise LinkMalformed("the link is incomplete: it needs member, expires and sig")
    if not expires.isascii() or not expires.isdigit() or len(expires) > 12:
        raise LinkMalformed("the link's expiry is not a time")
    until = int(expires)
    # Checked before the clock: a forged link learns nothing about whether it had expired.
    if not hmac.compare_digest(signature(secret, member, until), sig.lower()):
        raise LinkInvalid("the link's signature does not match; ask the app for a new link")
    left = until - int(now.timestamp())
    if left <= 0:
        raise LinkExpired("the link has expired; open the member center from the app again")
    if left > max_seconds + CLOCK_SKEW:
        raise LinkTooLong(f"a link may last at most {max_seconds} seconds")
    return member
