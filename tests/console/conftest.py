"""Console fixtures: staff accounts with passwords, a signed-in TestClient, and (for the browser
tests) a small demo home served by uvicorn on a free port with headless Chromium."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from memberwise.app import create_app
from memberwise.config import Settings
from memberwise.console import service as console
from memberwise.kit.db import transaction
from memberwise.ledger.tables import orders
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import Role, StaffCreate
from memberwise.runtime import Runtime
from tests.conftest import TEST_PII_KEY

PASSWORD = "correct horse battery staple"
ROOT = Path(__file__).resolve().parents[2]

StaffFactory = Callable[..., str]
DEMO_PROGRAM = ROOT / "programs" / "demo.yaml"


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    """The shared settings with the demo program (tiers, coupons, black card) as the program."""
    return Settings(
        home=tmp_path / "home",
        database_url=db_url,
        pii_key=TEST_PII_KEY,  # type: ignore[arg-type]
        program_file=DEMO_PROGRAM,
    )


@pytest.fixture
def make_staff(engine: Engine) -> StaffFactory:
    """``make_staff(Role.operator)`` -> the id of a new active staff account with password
    :data:`PASSWORD` (``password=None`` leaves it without one)."""

    def make(role: Role, *, staff_id: str | None = None, password: str | None = PASSWORD) -> str:
        sid = staff_id or f"{role.value}-1"
        with transaction(engine) as conn:
            privacy.create_staff(
                conn, StaffCreate(staff_id=sid, name=f"Test {role.value}", role=role)
            )
            if password is not None:
                console.set_password(conn, sid, password)
        return sid

    return make


@pytest.fixture
def web(runtime: Runtime) -> Iterator[TestClient]:
    """A client of the whole app (the console is mounted at /console), not yet signed in."""
    with TestClient(create_app(runtime=runtime), base_url="http://127.0.0.1") as c:
        yield c


def pre_token(html: str) -> str:
    """The CSRF value of a page's form (the sign-in forms' or a signed-in page's)."""
    found = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert found is not None, "no csrf_token field on the page"
    return found.group(1)


def sign_in(client: TestClient, staff_id: str, password: str = PASSWORD) -> str:
    """Sign ``client`` in with a password; returns the session's CSRF token."""
    page = client.get("/console/sign-in")
    done = client.post(
        "/console/sign-in",
        data={"staff_id": staff_id, "password": password, "csrf_token": pre_token(page.text)},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    home = client.get("/console/")
    return pre_token(home.text)


SignIn = Callable[[Role], tuple[TestClient, str]]


@pytest.fixture
def signed_in(web: TestClient, make_staff: StaffFactory) -> SignIn:
    """``signed_in(Role.service)`` -> (the client signed in as a new staff member of that role,
    the session's CSRF token). One client: signing in again replaces the session."""

    def go(role: Role) -> tuple[TestClient, str]:
        sid = make_staff(role, staff_id=f"{role.value}-{len(web.cookies)}-{time.monotonic_ns()}")
        return web, sign_in(web, sid)

    return go


# -- the browser tests: a small demo served for real ----------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveConsole:
    """A served demo home: its base URL, settings and one staff id per role."""

    base: str
    settings: Settings
    staff: dict[Role, str] = field(default_factory=dict)
    #: A demo member with orders (so every Member 360 section has something).
    member_id: str = ""

    def link(self, role: Role) -> str:
        """A fresh one-time sign-in link for the role's staff account."""
        rt = Runtime.open(self.settings)
        try:
            with transaction(rt.engine) as conn:
                token = console.create_link(conn, self.staff[role], minutes=5)
        finally:
            rt.close()
        return f"{self.base}/console/link?token={token}"


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread may not install them
        pass


@pytest.fixture(scope="session")
def live_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    """`memberwise run` on a 200-member demo (SQLite), then the app under uvicorn in a thread."""
    home = tmp_path_factory.mktemp("console-demo")
    env = {
        **os.environ,
        "MEMBERWISE_HOME": str(home),
        "MEMBERWISE_PII_KEY": TEST_PII_KEY,
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
        ),
    }
    env.pop("MEMBERWISE_DATABASE_URL", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "memberwise.cli",
            "run",
            "--members",
            "200",
            "--days",
            "30",
            "--no-serve",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    settings = Settings(
        home=home, pii_key=TEST_PII_KEY, program_file=ROOT / "programs" / "demo.yaml"
    )  # type: ignore[arg-type]
    port = free_port()
    live = LiveConsole(base=f"http://127.0.0.1:{port}", settings=settings)
    rt = Runtime.open(settings)
    with transaction(rt.engine) as conn:
        for role in Role:
            sid = f"{role.value}-staff"
            privacy.create_staff(
                conn, StaffCreate(staff_id=sid, name=f"{role.value.title()} Staff", role=role)
            )
            console.set_password(conn, sid, PASSWORD)
            live.staff[role] = sid
        live.member_id = conn.execute(
            select(orders.c.member_id).order_by(orders.c.member_id).limit(1)
        ).scalar_one()
    server = _Server(
        uvicorn.Config(create_app(runtime=rt), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the console server did not start"
        time.sleep(0.05)
    yield live
    server.should_exit = True
    thread.join(timeout=10)
    rt.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (the system's), shared by a module's browser tests.

    Module-scoped on purpose: Playwright's sync API keeps an asyncio loop marked as running in
    its thread while it is started, so a session-long browser would make every later
    ``asyncio.run`` on the same xdist worker (the webhook sender's tests) fail."""
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = os.environ.get("MEMBERWISE_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        pytest.skip(f"no Chromium at {chromium} (CI installs it: apt-get install chromium)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@dataclass
class Tab:
    """A browser page, every request it made that left 127.0.0.1 (aborted), and the errors its
    console printed (a script blocked by the Content-Security-Policy shows there)."""

    page: Any
    off_machine: list[str]
    errors: list[str]


def _open_tab(browser: Any, live: LiveConsole, *, bypass_csp: bool) -> tuple[Any, Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=bypass_csp)
    off: list[str] = []
    errors: list[str] = []

    def guard(route: Any) -> None:
        url: str = route.request.url
        if url.startswith((live.base + "/", "data:", "blob:")):
            route.continue_()
        else:
            off.append(url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return context, Tab(page=page, off_machine=off, errors=errors)


@pytest.fixture
def tab(browser: Any, live_console: LiveConsole) -> Iterator[Tab]:
    """A fresh browser context and page under the console's own CSP; requests to anything but
    the console are aborted and recorded, so a test can assert none was tried."""
    context, opened = _open_tab(browser, live_console, bypass_csp=False)
    yield opened
    context.close()


@pytest.fixture
def a11y_tab(browser: Any, live_console: LiveConsole) -> Iterator[Tab]:
    """Like :func:`tab`, with the CSP relaxed only so axe-core can be injected into the page."""
    context, opened = _open_tab(browser, live_console, bypass_csp=True)
    yield opened
    context.close()


AXE = Path(__file__).parent / "vendor" / "axe-4.10.3.min.js"


def axe_violations(tab: Tab) -> list[dict[str, Any]]:
    """axe-core's WCAG 2 A/AA violations on the tab's page (labels, contrast, names, ...)."""
    page = tab.page
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(
        """async () => (await axe.run(document, {
            runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']},
        })).violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                  nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))"""
    )
    return found


def browser_sign_in(tab: Tab, live: LiveConsole, role: Role) -> None:
    """Sign in through the form, as a person would."""
    page = tab.page
    page.goto(f"{live.base}/console/sign-in")
    page.get_by_label(re.compile("Staff id|员工账号")).fill(live.staff[role])
    page.get_by_label(re.compile("Password|密码")).fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Sign in|登录")).click()
    page.wait_for_url(re.compile(r".*/console/(members)?$"))
    page.wait_for_load_state("networkidle")
