"""Member 360 on both stores: search, PII read only by PII roles and audited, actions only by
the API's roles, idempotent on a double submit."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from memberwise.kit.db import transaction
from memberwise.ledger import service as ledger
from memberwise.ledger.tables import coupons, points_balances
from memberwise.membership.tables import member_tiers
from memberwise.predict import service as predict
from memberwise.privacy.schemas import Role
from memberwise.privacy.tables import audit_log
from memberwise.recommend import catalog as recommend_catalog
from memberwise.runtime import Runtime
from tests.console.conftest import SignIn
from tests.console.member_factories import PROGRAM, seed_member, use_program
from tests.members.factories import create_member
from tests.predict.test_endpoints import ROWS, write_predictions
from tests.recommend.build_factory import catalog_table, publish, write_build


def _member(runtime: Runtime, member_id: str = "m00000042") -> str:
    with transaction(runtime.engine) as conn:
        create_member(conn, runtime.cipher, member_id)
    return member_id


def _pii_reads(engine: Engine, member_id: str) -> list[str]:
    with transaction(engine) as conn:
        return list(
            conn.execute(
                select(audit_log.c.actor).where(
                    audit_log.c.member_id == member_id, audit_log.c.action == "member.pii_read"
                )
            ).scalars()
        )


def _idem(html: str, suffix: str) -> str:
    found = re.search(rf'name="idem" value="([^"]+-{suffix})"', html)
    assert found is not None
    return found.group(1)


def test_search_by_id_opens_the_member_and_an_unknown_id_says_so(
    signed_in: SignIn, runtime: Runtime
) -> None:
    client, _ = signed_in(Role.analyst)
    mid = _member(runtime)
    found = client.get(f"/console/members?q={mid}", follow_redirects=False)
    assert (found.status_code, found.headers["location"]) == (303, f"/console/members/{mid}")
    missing = client.get("/console/members?q=m99999999")
    assert missing.status_code == 404
    assert 'role="alert"' in missing.text and "m99999999" in missing.text


def test_service_staff_see_pii_and_the_read_is_audited_as_the_api_does(
    signed_in: SignIn, runtime: Runtime
) -> None:
    client, _ = signed_in(Role.service)
    mid = _member(runtime)
    page = client.get(f"/console/members/{mid}")
    assert page.status_code == 200
    assert "13912345678" in page.text and "王芳" in page.text
    assert "<dt>手机号</dt><dd>13912345678</dd>" in page.text
    readers = _pii_reads(runtime.engine, mid)
    assert len(readers) == 1 and readers[0].startswith("staff:service-")


def test_an_analyst_sees_no_pii_and_writes_no_pii_audit(
    signed_in: SignIn, runtime: Runtime
) -> None:
    client, _ = signed_in(Role.analyst)
    mid = _member(runtime)
    page = client.get(f"/console/members/{mid}")
    assert page.status_code == 200
    assert "13912345678" not in page.text
    assert 'data-testid="pii"' not in page.text
    assert _pii_reads(runtime.engine, mid) == []
    # No action forms for an analyst.
    assert "hx-post" not in page.text


def test_the_audit_section_is_for_admins_only(signed_in: SignIn, runtime: Runtime) -> None:
    mid = _member(runtime)
    client, _ = signed_in(Role.operator)
    assert 'id="sec-audit"' not in client.get(f"/console/members/{mid}").text
    client, _ = signed_in(Role.admin)
    page = client.get(f"/console/members/{mid}")
    assert 'id="sec-audit"' in page.text and "member.pii_read" in page.text


def test_service_adjusts_points_once_per_form(signed_in: SignIn, runtime: Runtime) -> None:
    client, csrf = signed_in(Role.service)
    mid = _member(runtime)
    idem = _idem(client.get(f"/console/members/{mid}").text, "p")
    form = {"amount": "120", "reason": "goodwill for a late parcel", "idem": idem}
    headers = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    first = client.post(f"/console/members/{mid}/points", data=form, headers=headers)
    again = client.post(f"/console/members/{mid}/points", data=form, headers=headers)
    assert first.status_code == again.status_code == 200
    assert "+120" in first.text and first.text == again.text
    with transaction(runtime.engine) as conn:
        balance = conn.execute(
            select(points_balances.c.available).where(points_balances.c.member_id == mid)
        ).scalar_one()
    assert balance == 120
    history = client.get(f"/console/members/{mid}").text
    assert "<td>+120</td>" in history and "goodwill for a late parcel" in history


def test_an_action_without_the_csrf_token_or_the_role_changes_nothing(
    signed_in: SignIn, runtime: Runtime
) -> None:
    client, csrf = signed_in(Role.operator)
    mid = _member(runtime)
    form = {"amount": "50", "reason": "not allowed", "idem": "abcdefgh-p"}
    no_token = client.post(f"/console/members/{mid}/points", data=form)
    assert no_token.status_code == 403 and "csrf_failed" in no_token.text
    wrong_role = client.post(f"/console/members/{mid}/points", data={**form, "csrf_token": csrf})
    assert wrong_role.status_code == 403 and "role_not_allowed" in wrong_role.text
    with transaction(runtime.engine) as conn:
        assert ledger.member_exists(conn, mid) is None
        rows = conn.execute(select(points_balances).where(points_balances.c.member_id == mid))
        assert rows.first() is None


def test_operator_issues_a_coupon_and_grants_a_tier(signed_in: SignIn, runtime: Runtime) -> None:
    client, csrf = signed_in(Role.operator)
    mid = _member(runtime)
    idem = _idem(client.get(f"/console/members/{mid}").text, "c")
    headers = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    issued = client.post(
        f"/console/members/{mid}/coupons",
        data={"template": "welcome_10", "idem": idem},
        headers=headers,
    )
    assert issued.status_code == 200 and "welcome_10 × 1" in issued.text
    granted = client.post(
        f"/console/members/{mid}/tier",
        data={"tier": "gold", "reason": "key account"},
        headers=headers,
    )
    assert granted.status_code == 200 and "gold" in granted.text
    refused = client.post(
        f"/console/members/{mid}/tier", data={"tier": "nope", "reason": "x"}, headers=headers
    )
    assert refused.status_code == 422 and 'role="alert"' in refused.text
    with transaction(runtime.engine) as conn:
        held = conn.execute(select(coupons.c.template).where(coupons.c.member_id == mid)).all()
        tier = conn.execute(
            select(member_tiers.c.tier, member_tiers.c.source).where(
                member_tiers.c.member_id == mid
            )
        ).one()
    assert [h[0] for h in held] == ["welcome_10"]
    assert tuple(tier) == ("gold", "manual")


def test_a_bad_member_id_is_a_clear_page(signed_in: SignIn) -> None:
    client, _ = signed_in(Role.analyst)
    assert client.get("/console/members/m99999999").status_code == 404
    bad = client.get("/console/members/%20bad%20")
    assert bad.status_code == 422 and 'role="alert"' in bad.text


def test_pages_render_without_a_build(signed_in: SignIn, runtime: Runtime) -> None:
    client: TestClient
    client, _ = signed_in(Role.admin)
    mid = _member(runtime)
    for path in ("/console/", f"/console/members/{mid}", "/console/program"):
        page = client.get(path)
        assert page.status_code == 200, (path, page.text[-500:])


def test_search_by_phone_or_email_opens_the_member(signed_in: SignIn, runtime: Runtime) -> None:
    client, _ = signed_in(Role.service)
    mid = _member(runtime)
    for query in ("139 1234 5678", "WF@example.com"):
        found = client.get("/console/members", params={"q": query}, follow_redirects=False)
        assert (found.status_code, found.headers["location"]) == (303, f"/console/members/{mid}")


def test_member_360_says_the_engines_codes_in_the_programs_language(
    signed_in: SignIn, runtime: Runtime, tmp_path: Path
) -> None:
    """Reasons, what is missing for the next tier and the predictions' explanations are worded
    from the engines' codes in the program's language (they showed the engines' English on the
    Chinese page); the English page keeps the engines' sentences."""
    program = use_program(runtime, tmp_path)
    seed_member(runtime, program)  # m1: silver, 800 CNY and 1,000 points of the year
    lists = {
        "m1": [
            ("toy-1", 9.0, "members with tastes like yours like this", "als"),
            ("snack-1", 6.0, "people who viewed 纸尿裤 L also viewed this", "cooc"),
        ]
    }
    with transaction(runtime.engine) as conn:
        recommend_catalog.import_items(conn, catalog_table())
        publish(conn, write_build(tmp_path / "b1", lists=lists, fallbacks={}))
        predict.publish_build(conn, write_predictions(tmp_path, "p1", ROWS))
    client, _ = signed_in(Role.analyst)

    zh = client.get("/console/members/m1").text
    assert re.findall(r"<li>([^<]+?) <progress", zh) == [
        "再消费 ¥1,200.00（净额）",
        "再获得 4,000 积分",
    ]
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", zh)
    history = "复购 3 次，共 4 天有购买，平均每 12 天一次"
    assert [r for r in rows if r[0] in ("clv_12m", "p_alive", "churn_risk")] == [
        ("clv_12m", "¥123.46", f"BG/NBD + Gamma-Gamma：{history}"),
        ("p_alive", "0.90", f"BG/NBD：{history}"),
        ("churn_risk", "0.20", "倾向模型：依据最近一次购买、购买频次与活跃度"),
    ]
    assert ("expected_purchases_90d", "1.50", "预计消费 ¥88.80") in rows
    assert ("next_purchase_date", "2026-11-28", "最佳触达时间：星期日 21:00") in rows
    assert ("1", "积木", "与该会员喜好相似的会员也喜欢") in rows
    assert ("2", "薯片", "常与该会员看过或买过的商品一起被选购") in rows
    four = re.findall(r"<tr>((?:<td>[^<]*</td>){4})</tr>", zh)
    cells = [tuple(re.findall(r"<td>([^<]*)</td>", row)) for row in four]
    assert [c[:2] for c in cells if c[0] == "ten_off"] == [("ten_off", "未使用")]  # issued
    assert [c[1:3] for c in cells if c[2] == "+500"] == [("人工调整", "+500")]  # adjust
    assert ("500", "500", "可用") in [c[:3] for c in cells]  # an available lot
    assert "<dd>正常 · " in zh and "silver</strong> · 自动评定" in zh  # active; auto

    use_program(runtime, tmp_path, PROGRAM.replace("locale: zh-CN", "locale: en"))
    en = client.get("/console/members/m1").text
    assert re.findall(r"<li>([^<]+?) <progress", en) == [
        "1,200.00 CNY more net spend",
        "4,000 more points earned",
    ]
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", en)
    assert ("1", "积木", "members with tastes like yours like this") in rows
    assert ("next_purchase_date", "2026-11-28", "best time to reach them: Sunday 21:00") in rows
