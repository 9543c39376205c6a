"""The member center through its signed links, on both stores: what a member sees, in their
language; refusals as 4xx pages; consent changes that land in the consent ledger."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from memberwise.console import member_links
from memberwise.console.member_center import link_secret
from memberwise.kit.db import transaction
from memberwise.kit.time import utcnow
from memberwise.membership import subscriptions
from memberwise.privacy import consent
from memberwise.privacy.schemas import SYSTEM, Role
from memberwise.privacy.tables import audit_log, consent_records
from memberwise.program.schemas import Program
from memberwise.runtime import Runtime
from tests.console.member_factories import PROGRAM, seed_member, use_program

Auth = Callable[[Role], dict[str, str]]


@pytest.fixture
def program(runtime: Runtime, tmp_path: Path) -> Program:
    program = use_program(runtime, tmp_path)
    seed_member(runtime, program)
    return program


def _link(client: TestClient, auth: Auth, member: str = "m1", **more: object) -> str:
    made = client.post(
        "/v1/member-center/links", json={"member_id": member, **more}, headers=auth(Role.platform)
    )
    assert made.status_code == 201, made.text
    url: str = made.json()["url"]
    parts = urlsplit(url)
    assert parts.path == "/member-center"
    return f"{parts.path}?{parts.query}"


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_member_sees_tier_progress_benefits_points_coupons_in_chinese(
    client: TestClient, auth: Auth, program: Program
) -> None:
    page = client.get(_link(client, auth))
    assert page.status_code == 200, page.text
    text = _text(page.text)
    assert '<html lang="zh-CN">' in page.text
    assert "会员等级 silver" in text
    assert "距离下一等级: gold 满足其一即可 再消费 ¥1,200（净额） 40% 再获得 4,000 积分 20%" in text
    assert "极速退款额度 退款秒到账" in text and "剩余 ¥10,000 / 共 ¥10,000" in text
    assert "退货卡" in text and "今日剩余 2 / 共 2" in text
    assert "可用 500" in text
    assert re.search(r"500 到期 \d{4}年\d{1,2}月\d{1,2}日", text)
    assert "减¥10 全场通用" in text and "满 ¥300 减¥50 big" in text
    assert "为您推荐" in text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'self'" in csp
    assert "script-src" not in csp and "<script" not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"


def test_english_by_link_and_frame_ancestors_from_the_settings(
    client: TestClient, auth: Auth, program: Program, runtime: Runtime
) -> None:
    runtime.settings.member_center_frame_ancestors = "'self' https://app.example.com"
    page = client.get(_link(client, auth, lang="en"))
    text = _text(page.text)
    assert '<html lang="en">' in page.text
    assert "Tier silver" in text and "1,200.00 CNY more net spend" in text
    assert "Express-refund credit" in text and "left ¥10,000 / of ¥10,000" in text
    assert "¥10 off" in text and "on orders from ¥300 ¥50 off" in text
    assert page.headers["content-security-policy"].endswith(
        "frame-ancestors 'self' https://app.example.com"
    )
    css = client.get("/member-center/static/member.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_broken_links_are_pages_with_4xx_never_500(
    client: TestClient, auth: Auth, program: Program, runtime: Runtime
) -> None:
    good = _link(client, auth)
    query = parse_qs(urlsplit(good).query)
    sig, expires = query["sig"][0], int(query["expires"][0])
    tampered = client.get(f"/member-center?member=m2&expires={expires}&sig={sig}")
    assert tampered.status_code == 403 and "link_invalid" in tampered.text
    assert "无法打开会员中心" in tampered.text
    secret = link_secret(runtime)
    past = int(utcnow().timestamp()) - 1
    old = member_links.sign(secret, "m1", past)
    expired = client.get("/member-center", params=old.query())
    assert expired.status_code == 410 and "link_expired" in expired.text
    far = member_links.sign(secret, "m1", past + 10 * 86_400)
    assert client.get("/member-center", params=far.query()).status_code == 400
    assert client.get("/member-center").status_code == 400
    assert client.get("/member-center?member=m1&expires=x&sig=y").status_code == 400
    nobody = member_links.sign(secret, "nobody", past + 300)
    unknown = client.get("/member-center", params=nobody.query())
    assert unknown.status_code == 404 and "没有找到该会员" in unknown.text
    assert client.get("/member-center/privacy", params=old.query()).status_code == 410
    for page in (tampered, expired, unknown):
        assert "default-src 'none'" in page.headers["content-security-policy"]


def test_the_platform_can_sign_links_itself_with_a_configured_secret(
    client: TestClient, program: Program, runtime: Runtime
) -> None:
    runtime.settings.member_center_secret = SecretStr("p" * 40)
    expires = int(utcnow().timestamp()) + 300
    link = member_links.sign(b"p" * 40, "m1", expires)
    page = client.get("/member-center", params=link.query())
    assert page.status_code == 200 and "silver" in page.text


def test_the_link_api_refuses_unknown_members_and_long_lifetimes(
    client: TestClient, auth: Auth, program: Program
) -> None:
    platform = auth(Role.platform)
    unknown = client.post("/v1/member-center/links", json={"member_id": "x"}, headers=platform)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "member_not_found")
    long = client.post(
        "/v1/member-center/links", json={"member_id": "m1", "ttl_seconds": 7200}, headers=platform
    )
    assert (long.status_code, long.json()["code"]) == (400, "link_lifetime_too_long")
    made = client.post(
        "/v1/member-center/links", json={"member_id": "m1", "ttl_seconds": 120}, headers=platform
    ).json()
    left = datetime.fromisoformat(made["expires_at"]) - datetime.now(UTC)
    assert 100 < left.total_seconds() <= 120


def _consent_form(client: TestClient, link: str, purpose: str) -> dict[str, str]:
    page = client.get(link.replace("/member-center?", "/member-center/privacy?"))
    assert page.status_code == 200
    start = page.text.index(f'data-testid="consent-{purpose}"')
    form = page.text[start : page.text.index("</form>", start)]
    fields = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', form))
    return fields


def test_a_member_changes_a_consent_from_the_page(
    client: TestClient, auth: Auth, program: Program, runtime: Runtime
) -> None:
    link = _link(client, auth)
    fields = _consent_form(client, link, "marketing_sms")
    assert fields["status"] == "granted"  # not allowed by default: the button allows
    posted = client.post("/member-center/consents", data=fields, follow_redirects=False)
    assert posted.status_code == 303
    assert posted.headers["location"].startswith("/member-center/privacy?")
    shown = client.get(posted.headers["location"])
    assert "已保存" in shown.text
    row = shown.text[shown.text.index('data-testid="consent-marketing_sms"') :]
    assert "已允许" in row[: row.index("</li>")]
    with transaction(runtime.engine) as conn:
        assert consent.allows(conn, program.privacy, "m1", "marketing_sms")
        records = conn.execute(select(func.count()).select_from(consent_records)).scalar_one()
        actor = conn.execute(
            select(audit_log.c.actor).where(audit_log.c.action == "consent.record")
        ).scalar_one()
    assert (records, actor) == (1, "member-center")
    # The same form again (a double tap) records nothing new.
    again = client.post("/member-center/consents", data=fields, follow_redirects=False)
    assert again.status_code == 303
    # A form whose token belongs to no page of this link is refused, and nothing changes.
    forged = client.post("/member-center/consents", data=fields | {"csrf": "0" * 32})
    assert forged.status_code == 403 and "link_invalid" in forged.text
    bad = client.post("/member-center/consents", data=fields | {"purpose": "nope"})
    assert bad.status_code == 422 and "unknown_purpose" in bad.text
    with transaction(runtime.engine) as conn:
        assert conn.execute(select(func.count()).select_from(consent_records)).scalar_one() == 1


def test_a_member_without_tier_or_lists_still_gets_a_page(
    client: TestClient, auth: Auth, runtime: Runtime, tmp_path: Path
) -> None:
    program = use_program(runtime, tmp_path, PROGRAM.replace("locale: zh-CN", "locale: en"))
    with transaction(runtime.engine) as conn:
        from memberwise.members.repository import insert_seen

        insert_seen(conn, ["fresh"], utcnow())
    del program
    page = client.get(_link(client, auth, "fresh"))
    assert page.status_code == 200
    text = _text(page.text)
    assert "No tier yet" in text and "No coupons to use." in text
    assert "No points expire in the next 90 days." in text


def test_a_program_that_no_longer_loads_is_a_page_not_a_500(
    client: TestClient, auth: Auth, program: Program, runtime: Runtime
) -> None:
    link = _link(client, auth)
    assert runtime.settings.program_file is not None
    runtime.settings.program_file.write_text("name: [broken", encoding="utf-8")
    page = client.get(link)
    assert 400 <= page.status_code < 500 and "无法打开会员中心" in page.text


def test_every_source_the_engine_names_has_a_chinese_reason() -> None:
    """The member center translates reasons by the engine's source names: a source missing
    from the table showed the English sentence on the Chinese page (``als``, ``cooc``)."""
    from memberwise.console.member_i18n import Words
    from memberwise.recommend.ranker import SOURCES

    zh = Words("zh-CN", "Asia/Shanghai")
    named = [*SOURCES, "early_access", "session", "fallback"]
    assert [zh.reason(s, "english") for s in named] == [
        "您常买的商品",
        "与您喜好相似的会员也喜欢",
        "常与您看过或买过的商品一起被选购",
        "热卖商品",
        "新品上架",
        "购物习惯与您相似的会员常买",
        "会员抢先购",
        "与您刚刚浏览的商品相关",
        "热卖商品",
    ]
    assert Words("en", "UTC").reason("als", "members with tastes like yours like this") == (
        "members with tastes like yours like this"
    )


def test_published_recommendations_show_with_chinese_reasons(
    client: TestClient, auth: Auth, program: Program, runtime: Runtime, tmp_path: Path
) -> None:
    """A member with a published list sees it, each reason in Chinese (the demo's lists are
    mostly ``als`` and ``cooc``, which showed in English)."""
    from memberwise.recommend.catalog import import_items
    from tests.recommend.build_factory import catalog_table, publish, write_build

    lists = {
        "m1": [
            ("toy-1", 9.0, "members with tastes like yours like this", "als"),
            ("snack-1", 6.0, "people who viewed 纸尿裤 L also viewed this", "cooc"),
            ("phone-1", 3.0, "members who shop like you buy this", "neighbours"),
            ("new-1", 1.5, "new in 食品", "new"),
        ]
    }
    with transaction(runtime.engine) as conn:
        import_items(conn, catalog_table())
        publish(conn, write_build(tmp_path / "b1", lists=lists, fallbacks={}))
    page = client.get(_link(client, auth))
    assert page.status_code == 200, page.text
    shown = re.findall(
        r'<li data-testid="rec"><strong>([^<]*)</strong>\s*<span class="muted small">([^<]*)',
        page.text,
    )
    assert shown[:4] == [
        ("积木", "与您喜好相似的会员也喜欢"),
        ("薯片", "常与您看过或买过的商品一起被选购"),
        ("手机 Pro", "购物习惯与您相似的会员常买"),
        ("新品饼干", "新品上架"),
    ]
    assert "members" not in _text(page.text)


def test_the_programs_descriptions_and_statuses_in_the_members_language(
    client: TestClient, auth: Auth, runtime: Runtime, tmp_path: Path
) -> None:
    """A program gives a description in English and, with ``description_zh``, in Chinese (as
    programs/demo.yaml does): the Chinese page shows the Chinese one, the English page the
    English one; a plan's status is a word of the page's language (the API's code is
    ``pending``)."""
    text = (
        PROGRAM.replace(
            "description: 全场通用", "description: any order, description_zh: 全场通用"
        ).replace(
            "  - name: silver\n",
            "  - name: silver\n    description: a steady buyer\n"
            "    description_zh: 稳定购物的会员\n",
        )
        + "plans:\n  vip:\n    fee: 8800\n    description: VIP -- 88 CNY a year\n"
        + "    description_zh: VIP：每年 88 元\n"
    )
    program = use_program(runtime, tmp_path, text)
    seed_member(runtime, program)
    with transaction(runtime.engine) as conn:
        subscriptions.join(conn, program, "m1", "vip", at=utcnow(), key="j1", actor=SYSTEM)
    zh = client.get(_link(client, auth))
    assert zh.status_code == 200, zh.text
    assert '<p class="muted" data-testid="tier-description">稳定购物的会员</p>' in zh.text
    assert "极速退款额度 退款秒到账" in _text(zh.text) and "减¥10 全场通用" in _text(zh.text)
    plan = re.findall(r'<li data-testid="plan">([^<]*)</li>', zh.text)
    assert plan == ["vip · VIP：每年 88 元 · 待支付"]
    en = client.get(_link(client, auth, lang="en"))
    assert '<p class="muted" data-testid="tier-description">a steady buyer</p>' in en.text
    assert "¥10 off any order" in _text(en.text)
    assert re.findall(r'<li data-testid="plan">([^<]*)</li>', en.text) == [
        "vip · VIP -- 88 CNY a year · pending"
    ]
