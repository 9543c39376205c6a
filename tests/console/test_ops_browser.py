"""The operations pages in headless Chromium on the small demo home: each role that may open a
page sees its content, the main action of each page is clicked, and no request leaves
127.0.0.1. ``MEMBERWISE_CONSOLE_SCREENSHOTS=1`` saves each page to docs/console/<page>.png."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlalchemy import Connection, text

from memberwise.console import member_links
from memberwise.console import service as console
from memberwise.console.member_center import link_secret
from memberwise.kit.db import transaction
from memberwise.kit.outbox import emit
from memberwise.kit.time import utcnow
from memberwise.privacy import rights
from memberwise.privacy.schemas import SYSTEM, DataRequestIn, RequestKind, Role
from memberwise.program.desk import Channel, TicketKind
from memberwise.runtime import Runtime
from memberwise.service import service as desk
from memberwise.service.schemas import TicketOpen
from memberwise.webhooks import service as webhooks
from memberwise.webhooks.schemas import EndpointCreate
from tests.console.conftest import PASSWORD, LiveConsole, Tab, axe_violations, browser_sign_in
from tests.console.test_browser import shot
from tests.webhooks.receiver import receiver
from tests.webhooks.test_endpoints import send_once

pytestmark = pytest.mark.xdist_group("console-browser")


@contextmanager
def store(live: LiveConsole) -> Iterator[tuple[Runtime, Connection]]:
    rt = Runtime.open(live.settings)
    try:
        with transaction(rt.engine) as conn:
            yield rt, conn
    finally:
        rt.close()


def in_thread(work: Callable[[Runtime], None], rt: Runtime) -> None:
    """Run ``work`` (it runs its own event loop) off the thread Playwright's loop is on."""
    thread = threading.Thread(target=work, args=(rt,))
    thread.start()
    thread.join(timeout=60)


def first_member(conn: Connection) -> str:
    member: str = conn.execute(text("SELECT min(member_id) FROM members")).scalar_one()
    return member


def test_desk_queue_ticket_and_reply(tab: Tab, live_console: LiveConsole) -> None:
    with store(live_console) as (rt, conn):
        member = first_member(conn)
        data = TicketOpen(member_id=member, channel=Channel.app, kind=TicketKind.inquiry,
                          subject="快递三天没有更新", body="请帮我查一下")  # fmt: skip
        ticket = desk.open_ticket(conn, rt.program(), data, actor=SYSTEM, key="browser-desk")
        # Routing gives it to an agent of the demo's desk, or leaves it in the queue: sign in
        # as that agent (or as a service staff member, who sees the queue).
        agent = ticket.assignee or live_console.staff[Role.service]
        console.set_password(conn, agent, PASSWORD)
    page = tab.page
    page.goto(f"{live_console.base}/console/sign-in")
    page.get_by_label(re.compile("Staff id|员工账号")).fill(agent)
    page.get_by_label(re.compile("Password|密码")).fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Sign in|登录")).click()
    page.goto(f"{live_console.base}/console/desk")
    row = page.locator("tr", has_text=ticket.ticket_id)
    assert "快递三天没有更新" in row.inner_text()
    assert re.search(r"\d+h \d\dm|\d+d \d+h", row.get_by_test_id("sla").inner_text())
    shot(tab, "desk")
    row.get_by_role("link", name=ticket.ticket_id).click()
    page.get_by_label(re.compile("回复|Reply")).fill("已为您联系快递公司")
    page.get_by_role("button", name=re.compile("^(回复|Reply)$")).click()
    page.wait_for_url(re.compile(r"saved=true"))
    assert "已为您联系快递公司" in page.locator("main").inner_text()
    page.get_by_label(re.compile("^(状态|State)$")).select_option("resolved")
    page.get_by_label(re.compile("^(原因|Reason)$")).fill("已查到物流")
    page.get_by_role("button", name=re.compile("变更状态|Move to")).click()
    page.wait_for_url(re.compile(r"saved=true"))
    assert page.get_by_test_id("state").inner_text() == "resolved"
    shot(tab, "desk-ticket")
    assert tab.off_machine == []


def test_merchants_scorecards_and_a_penalty(tab: Tab, live_console: LiveConsole) -> None:
    browser_sign_in(tab, live_console, Role.operator)
    page = tab.page
    page.goto(f"{live_console.base}/console/merchants")
    page.wait_for_load_state("networkidle")
    links = page.locator("#scorecards tbody a")
    assert links.count() > 0
    page.wait_for_function("document.querySelectorAll('.plot .main-svg').length >= 1")
    shot(tab, "merchants")
    merchant = links.first.inner_text()
    links.first.click()
    before = int(page.get_by_test_id("penalty-points").inner_text())
    page.get_by_label(re.compile("^(原因|Reason)$")).fill("虚假发货")
    page.get_by_role("button", name=re.compile("记录违规|Record a violation")).click()
    page.wait_for_url(re.compile(r"saved=true"))
    after = int(page.get_by_test_id("penalty-points").inner_text())
    assert after > before and merchant in page.locator("h1").inner_text()
    shot(tab, "merchant")
    assert tab.off_machine == []


def test_campaign_results_with_intervals(tab: Tab, live_console: LiveConsole) -> None:
    browser_sign_in(tab, live_console, Role.analyst)
    page = tab.page
    page.goto(f"{live_console.base}/console/campaigns")
    assert page.locator("#campaigns tbody tr").count() >= 1
    shot(tab, "campaigns")
    page.locator("#campaigns tbody a").first.click()
    page.wait_for_load_state("networkidle")
    srm = page.get_by_test_id("srm-ok").or_(page.get_by_test_id("srm-banner"))
    assert srm.count() == 1
    assert re.search(r"\[-?\d+\.\d{4}, -?\d+\.\d{4}\]", page.locator("#results").inner_text())
    page.wait_for_function("document.querySelectorAll('.plot .main-svg').length >= 1")
    shot(tab, "campaign")
    assert tab.off_machine == []


def test_webhook_log_and_replay(tab: Tab, live_console: LiveConsole) -> None:
    with receiver() as rx:
        with store(live_console) as (rt, conn):
            webhooks.create_endpoint(
                conn, rt.cipher, EndpointCreate(url=rx.url, event_types=["coupon.issued"]),
                actor=SYSTEM,
            )  # fmt: skip
            # A member id of its own, so the log can be filtered to this message.
            message = emit(conn, "coupon.issued", {"coupon_id": "browser"}, member_id="hook-1")
        rt = Runtime.open(live_console.settings)
        in_thread(send_once, rt)
        browser_sign_in(tab, live_console, Role.platform)
        page = tab.page
        page.goto(f"{live_console.base}/console/webhooks")
        page.get_by_label(re.compile("^(会员|Member)$")).fill("hook-1")
        page.get_by_role("button", name=re.compile("筛选|Filter")).click()
        rows = page.locator("#deliveries tbody tr")
        assert rows.count() == 1
        assert "coupon.issued" in rows.first.inner_text()
        assert "delivered" in rows.first.inner_text()
        shot(tab, "webhooks")
        rows.first.get_by_role("button", name=re.compile("重新投递|Replay")).click()
        assert page.get_by_role("status").is_visible()
        in_thread(send_once, rt)
        rt.close()
    assert rx.ids().count(message) == 2
    assert tab.off_machine == []


def test_privacy_request_completed_from_the_queue(tab: Tab, live_console: LiveConsole) -> None:
    with store(live_console) as (rt, conn):
        program = rt.program()
        made, _ = rights.submit(
            conn, rt.cipher, first_member(conn),
            DataRequestIn(kind=RequestKind.access, idempotency_key="browser-dsr"),
            deadline=program.privacy.request_deadline, timezone=program.display_timezone,
            actor=SYSTEM,
        )  # fmt: skip
    browser_sign_in(tab, live_console, Role.service)
    page = tab.page
    page.goto(f"{live_console.base}/console/privacy")
    row = page.locator("tr", has_text=made.request_id)
    assert "查阅" in row.inner_text()  # the kind access, in the page's language
    shot(tab, "privacy-requests")
    row.get_by_role("button", name=re.compile("完成|Complete")).click()
    assert page.get_by_role("status").is_visible()
    assert page.locator("tr", has_text=made.request_id).count() == 0
    assert tab.off_machine == []


def test_bulk_issue_and_segment_export(tab: Tab, live_console: LiveConsole) -> None:
    with store(live_console) as (_, conn):
        member = first_member(conn)
    browser_sign_in(tab, live_console, Role.operator)
    page = tab.page
    page.goto(f"{live_console.base}/console/bulk")
    page.get_by_label(re.compile("会员 ID|Member ids")).fill(member)
    page.get_by_role("button", name=re.compile("向选定会员发券|Issue a coupon")).click()
    result = page.get_by_test_id("issue-result").inner_text()
    assert re.search(r"(已发放|Issued): [01]", result)
    shot(tab, "bulk")
    link = page.locator("#segments tbody a").first
    with page.expect_download() as download:
        link.click()
    lines = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
    assert lines[0] == "member_id,segment,persona,tags" and len(lines) > 1
    assert tab.off_machine == []


def _member_center_query(live: LiveConsole) -> str:
    with store(live) as (rt, conn):
        member = conn.execute(
            text("SELECT member_id FROM member_tiers ORDER BY score DESC, member_id LIMIT 1")
        ).scalar_one()
        link = member_links.sign(link_secret(rt), member, int(utcnow().timestamp()) + 600)
    return urlencode(link.query())


@pytest.mark.parametrize(
    "path",
    ["/console/desk", "/console/merchants", "/console/campaigns", "/console/campaigns/first",
     "/console/webhooks", "/console/privacy", "/console/bulk", "/member-center",
     "/member-center/privacy"],
)  # fmt: skip
def test_axe_finds_no_wcag_a_or_aa_violation_on_these_pages(
    a11y_tab: Tab, live_console: LiveConsole, path: str
) -> None:
    page = a11y_tab.page
    if path.startswith("/member-center"):
        path = f"{path}?{_member_center_query(live_console)}"
    else:
        browser_sign_in(a11y_tab, live_console, Role.admin)
    if path.endswith("/first"):
        page.goto(f"{live_console.base}/console/campaigns")
        path = page.locator("#campaigns tbody a").first.get_attribute("href") or ""
    page.goto(f"{live_console.base}{path}")
    page.wait_for_load_state("networkidle")
    assert page.locator("h1").count() >= 1
    assert axe_violations(a11y_tab) == []
