"""The member center in headless Chromium, from a link the platform asked for: the member sees
their tier, benefits and points, changes a consent by keyboard, and no request leaves
127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page

from memberwise.app import create_app
from memberwise.kit.db import transaction
from memberwise.privacy.schemas import Role
from memberwise.recommend.catalog import import_items
from memberwise.runtime import Runtime
from tests.console.browser import Requests, serve
from tests.console.member_factories import seed_member, use_program
from tests.recommend.build_factory import catalog_table, publish, write_build

pytestmark = pytest.mark.xdist_group("console-browser")
Auth = Callable[[Role], dict[str, str]]
ROOT = Path(__file__).resolve().parents[2]
#: The member's published list (the demo's sources: ALS and co-occurrence lead).
LISTS = {
    "m1": [
        ("toy-1", 9.0, "members with tastes like yours like this", "als"),
        ("snack-1", 6.0, "people who viewed 纸尿裤 L also viewed this", "cooc"),
        ("milk-1", 3.0, "bought every 25 days", "repeat"),
    ]
}


def shot(page: Page, name: str) -> None:
    """docs/console/<name>.png when MEMBERWISE_CONSOLE_SCREENSHOTS=1 (as the console's tests)."""
    if os.environ.get("MEMBERWISE_CONSOLE_SCREENSHOTS") == "1":
        (ROOT / "docs" / "console").mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ROOT / "docs" / "console" / f"{name}.png"), full_page=True)


def test_a_member_opens_the_center_and_withdraws_a_consent(
    client: TestClient, auth: Auth, runtime: Runtime, tmp_path: Path, browser: Browser
) -> None:
    seed_member(runtime, use_program(runtime, tmp_path))
    with transaction(runtime.engine) as conn:  # a published list, as a build leaves one
        import_items(conn, catalog_table())
        publish(conn, write_build(tmp_path / "b1", lists=LISTS))
    made = client.post(
        "/v1/member-center/links", json={"member_id": "m1"}, headers=auth(Role.platform)
    )
    query = made.json()["url"].split("?", 1)[1]
    seen = Requests()
    with serve(create_app(runtime=runtime)) as base:
        page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
        page.on("request", lambda r: seen.urls.append(r.url))
        page.goto(f"{base}/member-center?{query}")
        assert page.get_by_test_id("tier-name").inner_text() == "silver"
        assert page.get_by_test_id("points-available").inner_text() == "500"
        express = page.get_by_test_id("benefit-express_refund").inner_text()
        assert "极速退款额度" in express and "¥10,000" in express
        assert page.get_by_test_id("coupon").count() == 2
        recs = page.get_by_test_id("rec")
        assert [recs.nth(i).inner_text() for i in range(2)] == [
            "积木\n与您喜好相似的会员也喜欢",
            "薯片\n常与您看过或买过的商品一起被选购",
        ]
        # The stylesheet applied (no CDN, no inline style): the header is the accent colour.
        colour = page.locator(".mc-head").evaluate("e => getComputedStyle(e).backgroundColor")
        assert colour == "rgb(180, 35, 42)"
        # Narrow screen: nothing wider than the viewport.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shot(page, "member-center")
        page.get_by_role("link", name="隐私与授权").click()
        row = page.get_by_test_id("consent-personalization")
        assert "已允许" in row.inner_text()
        row.get_by_role("button", name="撤回").focus()
        page.keyboard.press("Enter")
        page.wait_for_url("**/member-center/privacy?*saved=1")
        assert page.get_by_role("status").inner_text() == "已保存。"
        assert "未允许" in page.get_by_test_id("consent-personalization").inner_text()
        shot(page, "member-center-privacy")
        page.get_by_role("link", name="我的会员").click()
        assert "您已关闭个性化推荐" in page.locator("#recs-h + p").inner_text()
        # An expired or changed link is a page, not an error dump.
        page.goto(f"{base}/member-center?{query.replace('sig=', 'sig=0')}")
        assert page.get_by_role("alert").inner_text().startswith("无法打开会员中心")
        page.close()
    assert seen.urls and seen.off_machine() == []
