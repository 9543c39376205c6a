"""The Program page on both stores: the active file, the preview's refusals, the ranking's
roles."""

from __future__ import annotations

import json
import re
from datetime import timedelta

from sqlalchemy import Engine, insert, select

from memberwise.console import engine_words
from memberwise.kit.db import transaction
from memberwise.kit.time import utcnow
from memberwise.membership.invitations import Pick, invitations_table
from memberwise.membership.tables import invitations
from memberwise.privacy.schemas import Role
from memberwise.privacy.tables import audit_log
from memberwise.program.service import load_program
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


def test_an_invitation_is_explained_in_the_programs_words(
    signed_in: SignIn, runtime: Runtime
) -> None:
    """The ranking's why: the hard criteria, then the three ranking fields that weighed most by
    the program's descriptions in the page's language (it showed the raw rule alone), and the
    status in words (the API's code is pending)."""
    program = load_program(DEMO_PROGRAM)
    card = program.black_card
    assert card is not None
    fields = [c.field for c in card.ranking]
    pct = dict(zip(fields, [0.99, 0.5, 0.2, 0.1, 0.3, 0.05, 0.875, 0.4], strict=True))
    pick = Pick("m1", 0.7, dict.fromkeys(fields, 1.0), pct)
    table = invitations_table(card, [pick], {"eligible": 10})
    now = utcnow()
    with transaction(runtime.engine) as conn:
        conn.execute(
            insert(invitations),
            {
                "invitation_id": "i1", "member_id": "m1", "tier": card.tier, "status": "pending",
                "rank": 1, "score": 0.7, "build_id": "b1", "created_at": now,
                "expires_at": now + timedelta(days=30), "decided_at": None,
                "explanation": json.loads(table.column("explanation")[0].as_py()),
            },
        )  # fmt: skip
    client, _ = signed_in(Role.operator)
    page = client.get("/console/program").text
    rows = re.findall(r"<tr>((?:<td>[^<]*</td>)+)</tr>", page)
    assert rows == [
        "<td>1</td><td>m1</td><td>待接受</td><td>0.700</td>"
        "<td>硬性条件：spend_365d &gt;= 3000000 and credit_stars &gt;= 4；排名主要依据："
        "一年消费金额（候选会员第 99 百分位），信用（候选会员第 88 百分位），"
        "一年订单数（候选会员第 50 百分位）</td>"
    ]
    english = engine_words.invitation_reason(
        json.loads(table.column("explanation")[0].as_py()), {}, "en"
    )
    assert english == (
        "criteria: spend_365d >= 3000000 and credit_stars >= 4; ranked by money spent in a year "
        "(percentile 99 of the eligible), credit (percentile 88 of the eligible), orders in a "
        "year (percentile 50 of the eligible)"
    )


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
