"""The console in headless Chromium on a small demo: sign in with each role, open every page the
role may open, click the main actions, and check nothing is fetched from off the machine.

``MEMBERWISE_CONSOLE_SCREENSHOTS=1`` also saves each page to docs/console/<page>.png.
"""

from __future__ import annotations

import os
import re

import pytest

from memberwise.console.nav import entries
from memberwise.privacy.schemas import Role
from tests.console.conftest import ROOT, LiveConsole, Tab, browser_sign_in

pytestmark = pytest.mark.xdist_group("console-browser")

SHOTS = os.environ.get("MEMBERWISE_CONSOLE_SCREENSHOTS") == "1"


def shot(tab: Tab, name: str) -> None:
    if SHOTS:
        out = ROOT / "docs" / "console"
        out.mkdir(parents=True, exist_ok=True)
        tab.page.screenshot(path=str(out / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("role", list(Role))
def test_each_role_sees_its_pages_and_nothing_leaves_the_machine(
    tab: Tab, live_console: LiveConsole, role: Role
) -> None:
    browser_sign_in(tab, live_console, role)
    page = tab.page
    nav = page.get_by_role("navigation")
    allowed = [e for e in entries() if role is Role.admin or role in e.roles]
    hrefs = nav.locator("a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    assert hrefs == [f"/console{e.path}" for e in allowed]
    for entry in allowed:
        page.goto(f"{live_console.base}/console{entry.path}")
        page.wait_for_load_state("networkidle")
        assert page.locator("main h1").first.is_visible()
        assert page.locator(".error").count() == 0, page.content()
    assert tab.off_machine == []


def test_overview_draws_every_chart_with_a_table(tab: Tab, live_console: LiveConsole) -> None:
    browser_sign_in(tab, live_console, Role.analyst)
    page = tab.page
    page.goto(f"{live_console.base}/console/")
    page.wait_for_load_state("networkidle")
    plots = page.locator(".plot")
    assert plots.count() >= 8
    page.wait_for_function("document.querySelectorAll('.plot .main-svg').length >= 8")
    # The table view of the first chart opens from the keyboard.
    summary = page.locator("details summary").first
    summary.focus()
    page.keyboard.press("Enter")
    assert page.locator("details table").first.is_visible()
    shot(tab, "overview")
    assert tab.off_machine == []


def test_sign_in_page_and_one_time_link(tab: Tab, live_console: LiveConsole) -> None:
    page = tab.page
    page.goto(f"{live_console.base}/console/")
    assert "/console/sign-in" in page.url
    shot(tab, "sign-in")
    page.goto(live_console.link(Role.operator))
    page.get_by_role("button").click()
    page.wait_for_load_state("networkidle")
    assert page.url.rstrip("/").endswith("/console")
    page.get_by_role("button", name=re.compile("Sign out|退出")).click()
    assert "/console/sign-in" in page.url
    assert tab.off_machine == []
