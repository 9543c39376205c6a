"""The console in headless Chromium on a small demo: sign in with each role, open every page the
role may open, click the main actions, check accessibility with axe-core, and check nothing is
fetched from off the machine.

``MEMBERWISE_CONSOLE_SCREENSHOTS=1`` also saves each page to docs/console/<page>.png
(``python benchmarks/console_screenshots.py`` does just that).
"""

from __future__ import annotations

import os
import re

import pytest

from memberwise.console.nav import entries
from memberwise.privacy.schemas import Role
from tests.console.conftest import ROOT, LiveConsole, Tab, axe_violations, browser_sign_in

pytestmark = pytest.mark.xdist_group("console-browser")

SHOTS = os.environ.get("MEMBERWISE_CONSOLE_SCREENSHOTS") == "1"


def shot(tab: Tab, name: str) -> None:
    """Save the page as docs/console/<name>.png when screenshots are asked for."""
    if SHOTS:
        out = ROOT / "docs" / "console"
        out.mkdir(parents=True, exist_ok=True)
        tab.page.screenshot(path=str(out / f"{name}.png"), full_page=True)


def _clean(tab: Tab) -> None:
    assert tab.off_machine == []
    assert tab.errors == []


@pytest.mark.parametrize("role", list(Role))
def test_each_role_sees_its_pages_and_nothing_leaves_the_machine(
    tab: Tab, live_console: LiveConsole, role: Role
) -> None:
    browser_sign_in(tab, live_console, role)
    page = tab.page
    allowed = [e for e in entries() if role is Role.admin or role in e.roles]
    hrefs = (
        page.get_by_role("navigation")
        .locator("a")
        .evaluate_all("els => els.map(e => e.getAttribute('href'))")
    )
    assert hrefs == [f"/console{e.path}" for e in allowed]
    for entry in allowed:
        page.goto(f"{live_console.base}/console{entry.path}")
        page.wait_for_load_state("networkidle")
        assert page.locator("main h1").count() == 1
        assert page.locator("main h1").is_visible()
        assert page.locator(".error").count() == 0, page.content()
    _clean(tab)


def test_overview_draws_every_chart_with_a_table(tab: Tab, live_console: LiveConsole) -> None:
    browser_sign_in(tab, live_console, Role.analyst)
    page = tab.page
    page.goto(f"{live_console.base}/console/")
    page.wait_for_load_state("networkidle")
    drawn = page.locator(".plot").count()
    assert drawn >= 8
    # Locator waits, not wait_for_function: the console's CSP (rightly) forbids eval.
    for i in range(drawn):
        page.locator(".plot").nth(i).locator(".main-svg").first.wait_for()
    # Numbers on hover: Plotly's hover layer is there for each chart.
    assert page.locator(".plot .hoverlayer").count() == drawn
    # The table view of the first chart opens from the keyboard.
    summary = page.locator("details summary").first
    summary.focus()
    page.keyboard.press("Enter")
    assert page.locator("details table").first.is_visible()
    shot(tab, "overview")
    _clean(tab)


def test_sign_in_page_and_one_time_link(tab: Tab, live_console: LiveConsole) -> None:
    page = tab.page
    page.goto(f"{live_console.base}/console/")
    assert "/console/sign-in" in page.url
    shot(tab, "sign-in")
    page.get_by_label(re.compile("Staff id|员工账号")).fill(live_console.staff[Role.admin])
    page.get_by_label(re.compile("Password|密码")).fill("wrong password, surely")
    page.get_by_role("button", name=re.compile("Sign in|登录")).click()
    assert page.get_by_role("alert").is_visible()
    page.goto(live_console.link(Role.operator))
    page.get_by_role("button").click()
    page.wait_for_url("**/console/")
    page.get_by_role("button", name=re.compile("Sign out|退出")).click()
    page.wait_for_url("**/console/sign-in")
    assert tab.off_machine == []


def test_member_360_search_and_actions(tab: Tab, live_console: LiveConsole) -> None:
    mid = live_console.member_id
    browser_sign_in(tab, live_console, Role.admin)
    page = tab.page
    page.goto(f"{live_console.base}/console/members")
    search = page.get_by_role("searchbox").or_(page.locator("#q"))
    search.first.fill(mid)
    search.first.press("Enter")
    page.wait_for_url(f"**/console/members/{mid}")
    assert page.locator("[data-testid=pii]").is_visible()
    assert page.locator("section[aria-labelledby=sec-orders] table").is_visible()
    before = int(page.locator("[data-testid=points-available]").inner_text().replace(",", ""))
    shot(tab, "member")
    page.locator("#adjust-amount").fill("25")
    page.locator("#adjust-reason").fill("goodwill for a late parcel")
    page.locator("#adjust-reason").press("Enter")
    status = page.locator("#action-result [role=status]")
    status.wait_for()
    assert f"{before + 25:,}" in status.inner_text()
    page.locator("#grant-tier").select_option(label="gold")
    page.locator("#grant-reason").fill("key account")
    page.locator("#grant-reason").press("Enter")
    page.locator("#action-result [role=status]").filter(has_text="gold").wait_for()
    page.reload()
    assert page.locator("[data-testid=tier]").inner_text() == "gold"
    assert f"{before + 25:,}" == page.locator("[data-testid=points-available]").inner_text()
    _clean(tab)


def test_service_staff_adjust_points_but_cannot_grant(tab: Tab, live_console: LiveConsole) -> None:
    browser_sign_in(tab, live_console, Role.service)
    page = tab.page
    assert page.url.endswith("/console/members")
    page.goto(f"{live_console.base}/console/members/{live_console.member_id}")
    assert page.locator("#adjust-amount").is_visible()
    assert page.locator("#grant-tier").count() == 0
    assert page.locator("#issue-template").count() == 0
    _clean(tab)


def test_program_preview_draws_the_transition_heat_map(tab: Tab, live_console: LiveConsole) -> None:
    browser_sign_in(tab, live_console, Role.operator)
    page = tab.page
    page.goto(f"{live_console.base}/console/program")
    assert page.locator("#program-text").input_value().startswith("#") or "name:" in (
        page.locator("#program-text").input_value()
    )
    page.get_by_role("button", name=re.compile("Preview|预演")).click()
    page.locator("#preview-result .plot .main-svg").first.wait_for(timeout=60_000)
    assert page.locator("#preview-result .heatmaplayer").count() == 1
    assert page.locator("#sec-ranking").is_visible()
    shot(tab, "program")
    # A broken edit is refused in place, with the line that is wrong.
    page.locator("#program-text").fill("name: x\ntiers: [oops")
    page.get_by_role("button", name=re.compile("Preview|预演")).click()
    alert = page.locator("#preview-result [role=alert]")
    alert.wait_for()
    assert "invalid_program" in alert.inner_text()
    assert tab.off_machine == []
    # The browser logs the refused preview's 422 (and htmx says so); nothing else went wrong.
    assert [e for e in tab.errors if "422" not in e] == []


def test_keyboard_reaches_the_skip_link_and_nav_with_visible_focus(
    tab: Tab, live_console: LiveConsole
) -> None:
    browser_sign_in(tab, live_console, Role.admin)
    page = tab.page
    page.goto(f"{live_console.base}/console/members")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.className")
    assert focused == "skip"
    assert page.locator(".skip").is_visible()  # shown while focused
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    order = []
    for _ in range(5):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.getAttribute('href')"))
    assert order[:4] == ["/console/", "/console/", "/console/members", "/console/program"]


@pytest.mark.parametrize("path", ["/sign-in", "/", "/members", "/members/{member}", "/program"])
def test_axe_finds_no_wcag_a_or_aa_violation(
    a11y_tab: Tab, live_console: LiveConsole, path: str
) -> None:
    if path != "/sign-in":
        browser_sign_in(a11y_tab, live_console, Role.admin)
    page = a11y_tab.page
    page.goto(f"{live_console.base}/console{path.format(member=live_console.member_id)}")
    page.wait_for_load_state("networkidle")
    assert axe_violations(a11y_tab) == []
