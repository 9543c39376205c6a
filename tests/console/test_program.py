"""The Program page on both stores: the active file, the preview's refusals, the ranking's
roles."""

from __future__ import annotations

from sqlalchemy import Engine, select

from memberwise.kit.db import transaction
from memberwise.privacy.schemas import Role
from memberwise.privacy.tables import audit_log
from memberwise.runtime import Runtime
from tests.console.conftest import DEMO_PROGRAM, SignIn


def test_the_page_shows_the_active_file(signed_in: SignIn) -> None:
    client, _ = signed_in(Role.analyst)
    page = client.get("/console/program")
    assert page.status_code == 200
    assert str(DEMO_PROGRAM) in page.text
    assert "name: demo" in page.text  # the file's text, ready to edit
    assert 'id="sec-ranking"' not in page.text  # GET /v1/invitations is not the analyst's


def test_operators_see_the_black_card_ranking(signed_in: SignIn) -> None:
    client, _ = signed_in(Role.operator)
    assert 'id="sec-ranking"' in client.get("/console/program").text


def test_a_program_that_does_not_load_is_refused_with_its_line(signed_in: SignIn) -> None:
    client, csrf = signed_in(Role.analyst)
    response = client.post(
        "/console/program/preview",
        data={"program_text": "name: x\ntiers: [oops"},
        headers={"X-CSRF-Token": csrf, "HX-Request": "true"},
    )
    assert response.status_code == 422
    assert "invalid_program" in response.text and "the edited program:2" in response.text


def test_a_preview_before_any_build_says_to_build_first(signed_in: SignIn) -> None:
    client, csrf = signed_in(Role.operator)
    response = client.post(
        "/console/program/preview",
        data={"program_text": DEMO_PROGRAM.read_text(encoding="utf-8")},
        headers={"X-CSRF-Token": csrf, "HX-Request": "true"},
    )
    assert response.status_code == 404
    assert "no_build" in response.text


def test_service_staff_may_not_preview(signed_in: SignIn) -> None:
    client, csrf = signed_in(Role.service)
    response = client.post(
        "/console/program/preview",
        data={"program_text": "name: x", "csrf_token": csrf},
    )
    assert response.status_code == 403


def test_an_operator_applies_an_edited_program_and_the_console_follows_it(
    signed_in: SignIn, runtime: Runtime, engine: Engine
) -> None:
    client, csrf = signed_in(Role.operator)
    edited = DEMO_PROGRAM.read_text(encoding="utf-8").replace(
        "name: demo", "name: demo\nlocale: en", 1
    )
    headers = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    done = client.post("/console/program/apply", data={"program_text": edited}, headers=headers)
    assert done.status_code == 200 and "Applied" in done.text
    applied = runtime.settings.program_file
    assert applied is not None and applied.parent == runtime.settings.home / "programs"
    assert applied.read_text(encoding="utf-8") == edited
    assert runtime.settings.home_settings()["program_file"] == str(applied)
    assert "<h1>Program: demo</h1>" in client.get("/console/program").text  # now in English
    with transaction(engine) as conn:
        actions = conn.execute(
            select(audit_log.c.action).where(audit_log.c.action == "program.apply")
        ).all()
    assert len(actions) == 1


def test_a_broken_program_is_not_applied_and_analysts_may_not_apply(
    signed_in: SignIn, runtime: Runtime
) -> None:
    client, csrf = signed_in(Role.operator)
    headers = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    broken = client.post(
        "/console/program/apply", data={"program_text": "name: x\ntiers: [oops"}, headers=headers
    )
    assert broken.status_code == 422
    assert runtime.settings.program_file == DEMO_PROGRAM
    client, csrf = signed_in(Role.analyst)
    refused = client.post(
        "/console/program/apply",
        data={"program_text": DEMO_PROGRAM.read_text(encoding="utf-8")},
        headers={"X-CSRF-Token": csrf, "HX-Request": "true"},
    )
    assert refused.status_code == 403
    assert runtime.settings.program_file == DEMO_PROGRAM
