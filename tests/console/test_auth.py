"""Staff sign-in to the console: passwords, one-time links, sessions, CSRF, roles, sign-out,
idle timeout and the failure limit, on both stores."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from memberwise.console import service as console
from memberwise.console.tables import console_links, console_sessions
from memberwise.kit.db import transaction
from memberwise.kit.time import utcnow
from memberwise.privacy.schemas import Role
from memberwise.privacy.tables import audit_log
from tests.console.conftest import PASSWORD, StaffFactory, pre_token, sign_in


def _post_sign_in(web: TestClient, staff_id: str, password: str) -> object:
    page = web.get("/console/sign-in")
    return web.post(
        "/console/sign-in",
        data={"staff_id": staff_id, "password": password, "csrf_token": pre_token(page.text)},
        follow_redirects=False,
    )


def test_a_page_without_a_session_sends_to_sign_in(web: TestClient) -> None:
    response = web.get("/console/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/console/sign-in?next=/console/")


def test_password_sign_in_sets_a_strict_httponly_cookie_and_opens_the_overview(
    web: TestClient, make_staff: StaffFactory, engine: Engine
) -> None:
    sid = make_staff(Role.analyst)
    response = _post_sign_in(web, sid, PASSWORD)
    assert response.status_code == 303  # type: ignore[attr-defined]
    cookie = response.headers["set-cookie"]  # type: ignore[attr-defined]
    assert "mw_console=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = web.get("/console/")
    assert page.status_code == 200
    assert "Test analyst" in page.text
    with transaction(engine) as conn:
        actions = (
            conn.execute(select(audit_log.c.action).where(audit_log.c.subject_id == sid))
            .scalars()
            .all()
        )
    assert "console.sign_in" in actions


def test_wrong_password_and_unknown_staff_get_the_same_clear_page(
    web: TestClient, make_staff: StaffFactory
) -> None:
    sid = make_staff(Role.operator)
    wrong = _post_sign_in(web, sid, "not the password at all")
    unknown = _post_sign_in(web, "nobody", PASSWORD)
    for response in (wrong, unknown):
        assert response.status_code == 401  # type: ignore[attr-defined]
        assert "that staff id and password do not match an active account" in response.text  # type: ignore[attr-defined]
    assert "mw_console" not in web.cookies  # no session


def test_staff_without_a_password_cannot_sign_in_with_one(
    web: TestClient, make_staff: StaffFactory
) -> None:
    sid = make_staff(Role.service, password=None)
    assert _post_sign_in(web, sid, "any password at all").status_code == 401  # type: ignore[attr-defined]


def test_sign_in_without_the_form_token_is_refused(
    web: TestClient, make_staff: StaffFactory
) -> None:
    sid = make_staff(Role.admin)
    web.get("/console/sign-in")
    response = web.post(
        "/console/sign-in",
        data={"staff_id": sid, "password": PASSWORD, "csrf_token": "forged"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert web.get("/console/", follow_redirects=False).status_code == 303


def test_repeated_failures_are_limited(web: TestClient, make_staff: StaffFactory) -> None:
    sid = make_staff(Role.admin)
    codes = [_post_sign_in(web, sid, "wrong password!").status_code for _ in range(6)]  # type: ignore[attr-defined]
    assert codes == [401] * 5 + [429]
    # Even the right password waits now.
    assert _post_sign_in(web, sid, PASSWORD).status_code == 429  # type: ignore[attr-defined]


def test_a_link_signs_in_once(web: TestClient, make_staff: StaffFactory, engine: Engine) -> None:
    sid = make_staff(Role.operator, password=None)
    with transaction(engine) as conn:
        token = console.create_link(conn, sid, minutes=5)
        stored = conn.execute(select(console_links.c.token_hash)).scalars().all()
    assert token not in stored and console.digest(token) in stored  # only its hash is kept
    page = web.get(f"/console/link?token={token}")
    assert page.status_code == 200
    first = web.post(
        "/console/link",
        data={"token": token, "csrf_token": pre_token(page.text)},
        follow_redirects=False,
    )
    assert first.status_code == 303
    assert web.get("/console/").status_code == 200
    web.cookies.clear()
    page = web.get(f"/console/link?token={token}")
    again = web.post("/console/link", data={"token": token, "csrf_token": pre_token(page.text)})
    assert again.status_code == 401
    assert "already used or expired" in again.text


def test_an_expired_link_does_not_sign_in(
    web: TestClient, make_staff: StaffFactory, engine: Engine
) -> None:
    sid = make_staff(Role.operator)
    with transaction(engine) as conn:
        token = console.create_link(conn, sid, minutes=5)
        conn.execute(update(console_links).values(expires_at=utcnow() - timedelta(seconds=1)))
    page = web.get(f"/console/link?token={token}")
    response = web.post("/console/link", data={"token": token, "csrf_token": pre_token(page.text)})
    assert response.status_code == 401


def test_sign_out_needs_the_csrf_token_and_ends_the_session(
    web: TestClient, make_staff: StaffFactory
) -> None:
    csrf = sign_in(web, make_staff(Role.analyst))
    forged = web.post("/console/sign-out", data={"csrf_token": "x"}, follow_redirects=False)
    assert forged.status_code == 403
    assert web.get("/console/").status_code == 200
    cookie = web.cookies["mw_console"]
    out = web.post("/console/sign-out", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303
    web.cookies.set("mw_console", cookie, path="/console")  # replaying the old cookie
    assert web.get("/console/", follow_redirects=False).status_code == 303


def test_an_idle_session_is_closed(
    web: TestClient, make_staff: StaffFactory, engine: Engine
) -> None:
    sign_in(web, make_staff(Role.analyst))
    with transaction(engine) as conn:
        conn.execute(update(console_sessions).values(last_seen_at=utcnow() - timedelta(hours=2)))
    response = web.get("/console/", follow_redirects=False)
    assert response.status_code == 303
    assert "idle" in response.headers["location"]


def test_a_role_without_the_page_gets_a_403_page(web: TestClient, make_staff: StaffFactory) -> None:
    sign_in(web, make_staff(Role.service))
    landing = web.get("/console/", follow_redirects=False)
    assert landing.headers["location"] == "/console/members"  # the first page it may open
    response = web.get("/console/program")
    assert response.status_code == 403
    assert "role_not_allowed" in response.text


def test_an_unknown_page_is_a_404_page_not_json(web: TestClient, make_staff: StaffFactory) -> None:
    response = web.get("/console/no-such-page")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")


def test_pages_forbid_framing_and_outside_sources(web: TestClient) -> None:
    page = web.get("/console/sign-in")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["referrer-policy"] == "no-referrer"
