"""`memberwise console passwd|link`: set a password, print a one-time link that signs in."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from memberwise.cli import app
from memberwise.config import Settings
from memberwise.privacy.schemas import Role
from tests.conftest import TEST_PII_KEY
from tests.console.conftest import StaffFactory, pre_token, sign_in

runner = CliRunner()


@pytest.fixture(autouse=True)
def _env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMBERWISE_HOME", str(settings.home))
    monkeypatch.setenv("MEMBERWISE_DATABASE_URL", settings.db_url)
    monkeypatch.setenv("MEMBERWISE_PII_KEY", TEST_PII_KEY)


def test_passwd_sets_a_password_that_signs_in(web: TestClient, make_staff: StaffFactory) -> None:
    sid = make_staff(Role.operator, password=None)
    done = runner.invoke(
        app, ["console", "passwd", "--staff", sid, "--password", "a long new secret"]
    )
    assert done.exit_code == 0, done.output
    sign_in(web, sid, "a long new secret")
    short = runner.invoke(app, ["console", "passwd", "--staff", sid, "--password", "short"])
    assert short.exit_code == 2 and "weak_password" in short.output


def test_link_prints_a_url_that_signs_in_once(web: TestClient, make_staff: StaffFactory) -> None:
    sid = make_staff(Role.analyst, password=None)
    done = runner.invoke(app, ["console", "link", "--staff", sid])
    assert done.exit_code == 0, done.output
    url = done.output.strip()
    assert url.startswith("http://127.0.0.1:8000/console/link?token=")
    path = url.removeprefix("http://127.0.0.1:8000")
    page = web.get(path)
    token = path.split("token=")[1]
    used = web.post(
        "/console/link",
        data={"token": token, "csrf_token": pre_token(page.text)},
        follow_redirects=False,
    )
    assert used.status_code == 303
    assert web.get("/console/").status_code == 200


def test_link_for_an_unknown_staff_member_says_so() -> None:
    done = runner.invoke(app, ["console", "link", "--staff", "nobody"])
    assert done.exit_code == 2 and "staff_not_found" in done.output
