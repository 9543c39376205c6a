"""The SDK's member-center links: asked of the API, or signed by the platform itself with the
shared secret; both open the member's page, and the SDK signs exactly as the server checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from pydantic import SecretStr

from memberwise.console import member_links
from memberwise.privacy.schemas import Role
from memberwise.runtime import Runtime
from memberwise_client import Client, RetryPolicy, sign_member_center_link
from tests.console.member_factories import seed_member, use_program

Auth = Callable[[Role], dict[str, str]]
FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05)


def test_the_client_asks_for_a_link_that_opens(
    client: TestClient, auth: Auth, runtime: Runtime, tmp_path: Path
) -> None:
    seed_member(runtime, use_program(runtime, tmp_path))
    key = auth(Role.platform)["Authorization"].removeprefix("Bearer ")
    link = Client("http://testserver", key, http=client, retry=FAST).member_center_link(
        "m1", ttl_seconds=300, lang="en"
    )
    assert link.member_id == "m1" and link.url.startswith("http://testserver/member-center?")
    page = client.get(link.url)
    assert page.status_code == 200 and "Tier" in page.text and "silver" in page.text


def test_a_link_the_platform_signs_itself_opens(
    client: TestClient, runtime: Runtime, tmp_path: Path
) -> None:
    seed_member(runtime, use_program(runtime, tmp_path))
    secret = "platform-shared-secret-0123456789abcdef"
    runtime.settings.member_center_secret = SecretStr(secret)
    url = sign_member_center_link(secret, "http://testserver/", "m1", ttl_seconds=120, now=1.0e9)
    expected = member_links.signature(secret.encode(), "m1", 1_000_000_120)
    assert url.endswith(f"&sig={expected}")
    fresh = sign_member_center_link(secret, "http://testserver", "m1", ttl_seconds=120)
    assert client.get(fresh).status_code == 200
    assert client.get(url).status_code == 410  # signed in 2001: long expired
    wrong = sign_member_center_link("another-secret-of-enough-length-000000", "", "m1")
    assert client.get(wrong).status_code == 403
