"""The link scheme: a link verifies only with its own member, expiry and secret, and only while
it lasts; every way of breaking it is a distinct refusal."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memberwise.console import member_links as links

SECRET = b"s" * 32
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())


def test_a_link_is_the_documented_hmac_and_verifies() -> None:
    link = links.sign(SECRET, "m_1", T + 600)
    message = b"memberwise-member-center/v1\nm_1\n" + str(T + 600).encode()
    assert link.sig == hmac.new(SECRET, message, hashlib.sha256).hexdigest()
    assert links.verify(SECRET, "m_1", str(T + 600), link.sig, now=NOW, max_seconds=900) == "m_1"
    # Upper-case hex is the same signature.
    upper = link.sig.upper()
    assert links.verify(SECRET, "m_1", str(T + 600), upper, now=NOW, max_seconds=900) == "m_1"


@pytest.mark.parametrize(
    ("member", "expires", "sig", "error"),
    [
        ("m_2", T + 600, None, links.LinkInvalid),  # another member
        ("m_1", T + 601, None, links.LinkInvalid),  # a later expiry
        ("m_1", T + 600, "0" * 64, links.LinkInvalid),  # a made-up signature
        ("m_1", T, "own", links.LinkExpired),  # expired now
        ("m_1", T + 900 + links.CLOCK_SKEW + 1, "own", links.LinkTooLong),
        ("", T + 600, None, links.LinkMalformed),
        ("m_1", "soon", None, links.LinkMalformed),
        ("m_1", "-5", None, links.LinkMalformed),
    ],
)
def test_broken_links_are_refused_with_their_own_code(
    member: str, expires: int | str, sig: str | None, error: type[Exception]
) -> None:
    good = links.sign(SECRET, "m_1", T + 600).sig
    if sig == "own":
        sig = links.signature(SECRET, member, int(expires))
    with pytest.raises(error):
        links.verify(SECRET, member, str(expires), sig or good, now=NOW, max_seconds=900)


def test_the_status_codes_are_4xx() -> None:
    assert (links.LinkMalformed.status_code, links.LinkInvalid.status_code) == (400, 403)
    assert (links.LinkExpired.status_code, links.LinkTooLong.status_code) == (410, 400)


def test_another_secret_does_not_verify_and_short_secrets_are_refused() -> None:
    link = links.sign(SECRET, "m_1", T + 60)
    with pytest.raises(links.LinkInvalid):
        links.verify(b"t" * 32, "m_1", str(T + 60), link.sig, now=NOW, max_seconds=900)
    with pytest.raises(ValueError, match="at least 32"):
        links.shared_secret("short", b"k" * 32)
    assert links.shared_secret("x" * 32, b"k" * 32) == b"x" * 32
    derived = links.shared_secret(None, b"k" * 32)
    assert len(derived) == 32 and derived != b"k" * 32
    assert derived == links.derive_secret(b"k" * 32) != links.derive_secret(b"j" * 32)


@given(member=st.text(min_size=1, max_size=128), flip=st.integers(min_value=0, max_value=63))
def test_any_changed_signature_character_is_refused(member: str, flip: int) -> None:
    sig = links.sign(SECRET, member, T + 60).sig
    changed = sig[:flip] + ("0" if sig[flip] != "0" else "1") + sig[flip + 1 :]
    assert links.verify(SECRET, member, str(T + 60), sig, now=NOW, max_seconds=900) == member
    with pytest.raises(links.LinkInvalid):
        links.verify(SECRET, member, str(T + 60), changed, now=NOW, max_seconds=900)
