"""The operations pages through the console on both stores: each shows what the domain's service
says, its actions change the domain as the API would, and each refuses the roles the API
refuses."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from memberwise.campaigns.tables import campaign_members
from memberwise.kit.db import transaction
from memberwise.kit.outbox import emit
from memberwise.ledger.tables import coupons
from memberwise.privacy.schemas import Role
from memberwise.privacy.tables import audit_log
from memberwise.profiles import service as profiles
from memberwise.runtime import Runtime
from memberwise.service import service as desk
from tests.campaigns.test_service import MEMBERS, publish_profiles
from tests.console.conftest import SignIn
from tests.ledger.factories import add_members
from tests.profiles.factories import FakeMember, write_build
from tests.service import factories as desk_factories
from tests.webhooks.receiver import receiver
from tests.webhooks.test_endpoints import send_once

Auth = Callable[[Role], dict[str, str]]


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _serve(runtime: Runtime, tmp_path: Path, text: str) -> None:
    path = tmp_path / "program.yaml"
    path.write_text(text, encoding="utf-8")
    runtime.settings.program_file = path


def _refused(client: TestClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 403 and "role_not_allowed" in page.text, (path, page.status_code)


def test_the_desk_shows_the_queue_with_sla_timers_and_works_a_ticket(
    signed_in: SignIn, runtime: Runtime, tmp_path: Path
) -> None:
    _serve(runtime, tmp_path, desk_factories.PROGRAM)
    program = desk_factories.make_program()
    with transaction(runtime.engine) as conn:
        desk_factories.add_members(conn, program, b1="black", m1="member")
        black = desk_factories.open_ticket(conn, program, "b1")
        plain = desk_factories.open_ticket(conn, program, "m1")
    web, csrf = signed_in(Role.service)
    queue = web.get("/console/desk")
    assert queue.status_code == 200
    text = _text(queue.text)
    # Highest tier first; both opened in March 2026, so both are long overdue.
    assert text.index(black.ticket_id) < text.index(plain.ticket_id)
    assert re.search(
        rf"{black.ticket_id} inquiry of b1 b1 black \S+ new -\d+d \d+h \(已超时\)", text
    )
    page = web.get(f"/console/desk/tickets/{black.ticket_id}")
    assert "SLA 计时" in page.text and "first_response" in page.text
    replied = web.post(
        f"/console/desk/tickets/{black.ticket_id}/messages",
        data={"csrf_token": csrf, "body": "我们马上处理"},
        follow_redirects=False,
    )
    assert replied.status_code == 303
    moved = web.post(
        f"/console/desk/tickets/{black.ticket_id}/state",
        data={"csrf_token": csrf, "state": "resolved", "reason": "answered"},
    )
    assert moved.status_code == 200 and "已保存" in moved.text
    with transaction(runtime.engine) as conn:
        out = desk.get_ticket(conn, program, black.ticket_id)
    assert out.state.value == "resolved"
    assert [m.body for m in out.messages if m.author_kind != "member"] == ["我们马上处理"]
    forged = web.post(
        f"/console/desk/tickets/{plain.ticket_id}/state",
        data={"csrf_token": "nope", "state": "resolved"},
    )
    assert forged.status_code == 403
    operator, _ = signed_in(Role.operator)
    _refused(operator, "/console/desk")
    _refused(operator, f"/console/desk/tickets/{plain.ticket_id}")


def test_merchants_penalty_from_the_page_once_and_only_by_operators(
    signed_in: SignIn, runtime: Runtime
) -> None:
    web, csrf = signed_in(Role.operator)
    assert web.get("/console/merchants").status_code == 200
    form = {"csrf_token": csrf, "violation": "dispute_lost", "reason": "ruled", "key": "k1"}
    first = web.post("/console/merchants/shop1/penalties", data=form)
    assert first.status_code == 200 and "已保存" in first.text
    web.post("/console/merchants/shop1/penalties", data=form)  # a double submit
    page = web.get("/console/merchants/shop1")
    assert re.search(r'data-testid="penalty-points">4<', page.text)
    assert page.text.count("<td>dispute_lost</td>") == 1
    unknown = web.post(
        "/console/merchants/shop1/penalties", data=form | {"violation": "x", "key": "k2"}
    )
    assert unknown.status_code == 422 and "unknown_violation" in unknown.text
    analyst, analyst_csrf = signed_in(Role.analyst)
    assert analyst.get("/console/merchants/shop1").status_code == 200
    refused = analyst.post(
        "/console/merchants/shop1/penalties", data=form | {"csrf_token": analyst_csrf}
    )
    assert refused.status_code == 403
    assert "记录违规" not in analyst.get("/console/merchants/shop1").text


@pytest.mark.parametrize("broken", [False, True])
def test_campaign_results_with_intervals_and_the_srm_banner(
    signed_in: SignIn, client: TestClient, auth: Auth, runtime: Runtime, broken: bool
) -> None:
    with transaction(runtime.engine) as conn:
        add_members(conn, *MEMBERS[:200])
        publish_profiles(conn, MEMBERS[:200], "new", ["first_order"])
    body = {
        "name": "welcome", "audience": {"tag": "first_order"},
        "offer": {"kind": "message", "message": "hi"}, "channels": ["app"],
        "holdout_percent": 50, "send_at_best_hour": False, "quiet_hours": [0, 0],
    }  # fmt: skip
    made = client.post("/v1/campaigns", json=body, headers=auth(Role.operator)).json()
    cid = made["campaign_id"]
    client.post(f"/v1/campaigns/{cid}/launch", headers=auth(Role.operator))
    if broken:  # an assignment bug: 60 treated members logged as held out
        with transaction(runtime.engine) as conn:
            treated = (
                select(campaign_members.c.member_id)
                .where(campaign_members.c.campaign_id == cid, campaign_members.c.arm == "treatment")
                .limit(60)
            )
            conn.execute(
                update(campaign_members)
                .where(campaign_members.c.member_id.in_(treated.scalar_subquery()))
                .values(arm="holdout")
            )
    api = client.get(f"/v1/campaigns/{cid}/results", headers=auth(Role.analyst)).json()
    web, _ = signed_in(Role.analyst)
    listed = web.get("/console/campaigns")
    assert "welcome" in listed.text and f"/console/campaigns/{cid}" in listed.text
    # Statuses in the page's language (the API says running, scheduled and held_out).
    made = client.get(f"/v1/campaigns/{cid}", headers=auth(Role.analyst)).json()
    assert made["status"] == "running" and set(made["members"]) == {"scheduled", "held_out"}
    said = {"scheduled": "待发送", "held_out": "对照组（不发送）"}
    by_status = " · ".join(f"{said[k]} {n:,}" for k, n in made["members"].items())
    assert "<td>进行中</td>" in listed.text and by_status in _text(listed.text)
    page = web.get(f"/console/campaigns/{cid}")
    assert page.status_code == 200
    assert api["srm"]["mismatch"] is broken, api["srm"]
    assert ('data-testid="srm-banner"' in page.text) is broken
    assert ('data-testid="srm-ok"' in page.text) is not broken
    for m in api["metrics"]:
        assert f"[{m['ci_low']:.4f}, {m['ci_high']:.4f}]" in page.text
    observed = api["srm"]["observed"]
    assert f'<td class="num">{observed["holdout"]:,}</td>' in page.text
    arms = {"treatment": "实验组", "holdout": "对照组"}
    heads = re.findall(r'<th scope="col" class="num">([^<]+)</th>', page.text)
    assert heads[: len(observed)] == [arms[a] for a in observed]
    service, _ = signed_in(Role.service)
    _refused(service, f"/console/campaigns/{cid}")


def test_webhooks_log_and_replay_from_the_page(
    signed_in: SignIn, client: TestClient, auth: Auth, runtime: Runtime
) -> None:
    with receiver() as rx:
        client.post("/v1/webhooks/endpoints", json={"url": rx.url}, headers=auth(Role.platform))
        with transaction(runtime.engine) as conn:
            message = emit(conn, "coupon.issued", {"coupon_id": "c1"}, member_id="m1")
        send_once(runtime)
        web, csrf = signed_in(Role.platform)
        page = web.get("/console/webhooks", params={"status": "delivered"})
        assert page.status_code == 200
        delivery = re.search(r"<code>(\w+)</code></td><td>coupon.issued</td><td>m1</td>", page.text)
        assert delivery is not None
        replay = web.post(
            f"/console/webhooks/deliveries/{delivery.group(1)}/replay", data={"csrf_token": csrf}
        )
        assert replay.status_code == 200 and "已重新排队投递" in replay.text
        again = web.post(
            f"/console/webhooks/deliveries/{delivery.group(1)}/replay", data={"csrf_token": csrf}
        )
        assert again.status_code == 409 and "webhook_delivery_pending" in again.text
        send_once(runtime)
    assert rx.ids() == [message, message]
    assert "whsec_" not in page.text
    bad = web.get("/console/webhooks", params={"after": "garbage"})
    assert bad.status_code == 422 and "invalid_cursor" in bad.text
    operator, _ = signed_in(Role.operator)
    _refused(operator, "/console/webhooks")


def test_privacy_requests_queue_and_completion(
    signed_in: SignIn, client: TestClient, auth: Auth
) -> None:
    member = {"member_id": "m1", "name": "王芳", "phone": "13912345678", "region": "浙江"}
    client.post("/v1/members", json=member, headers=auth(Role.platform))
    filed = client.post(
        "/v1/members/m1/data-requests",
        json={"kind": "access", "idempotency_key": "r1"},
        headers=auth(Role.platform),
    ).json()
    web, csrf = signed_in(Role.service)
    queue = web.get("/console/privacy")
    assert filed["request_id"] in queue.text
    # The request's kind and the status filter in the page's language (the API's codes are
    # access and open).
    assert f"<td>{filed['member_id']}</td><td>查阅</td>" in queue.text
    options = re.findall(r'<option value="(\w+)"( selected)?>([^<]+)</option>', queue.text)
    assert options == [("open", " selected", "待处理"), ("completed", "", "已完成"),
                       ("rejected", "", "已拒绝")]  # fmt: skip
    done = web.post(
        f"/console/privacy/{filed['request_id']}/decision",
        data={"csrf_token": csrf, "action": "complete"},
    )
    assert done.status_code == 200 and "已处理" in done.text
    assert filed["request_id"] not in done.text  # no longer open
    status = client.get("/v1/members/m1/data-requests", headers=auth(Role.platform)).json()
    assert [r["status"] for r in status] == ["completed"]
    closed = web.post(
        f"/console/privacy/{filed['request_id']}/decision",
        data={"csrf_token": csrf, "action": "reject"},
    )
    assert closed.status_code == 409
    analyst, _ = signed_in(Role.analyst)
    _refused(analyst, "/console/privacy")


def test_bulk_coupons_to_a_selection_and_a_segment_csv(
    signed_in: SignIn, runtime: Runtime, tmp_path: Path
) -> None:
    _serve(
        runtime,
        tmp_path,
        "name: bulk\ncoupons:\n  ten: {kind: amount_off, amount: 1000, valid_days: 30}\n",
    )
    built = [FakeMember(m, "new", persona=1, tags=("night_owl",)) for m in MEMBERS[:3]]
    built.append(FakeMember(MEMBERS[3], "active"))
    with transaction(runtime.engine) as conn:
        add_members(conn, *MEMBERS[:5])
        profiles.publish_build(conn, write_build(tmp_path, "b1", built))
    web, csrf = signed_in(Role.operator)
    page = web.get("/console/bulk")
    key = re.search(r'name="key" value="([^"]+)"', page.text)
    assert key is not None and "new (3)" in page.text
    form = {"csrf_token": csrf, "template": "ten", "key": key.group(1),
            "member_ids": "m000, m001\nm004 nobody"}  # fmt: skip
    issued = web.post("/console/bulk/coupons", data=form)
    assert issued.status_code == 200
    assert "已发放: 3 · ten" in _text(issued.text) and "member_not_found 1" in _text(issued.text)
    web.post("/console/bulk/coupons", data=form)  # the same form again issues nothing new
    by_segment = web.post(
        "/console/bulk/coupons", data=form | {"member_ids": "", "segment": "new", "key": "k2"}
    )
    assert "已发放: 3" in _text(by_segment.text)
    with transaction(runtime.engine) as conn:
        assert conn.execute(select(func.count()).select_from(coupons)).scalar_one() == 6
    both = web.post("/console/bulk/coupons", data=form | {"segment": "new", "key": "k3"})
    assert both.status_code == 422 and "selection_invalid" in both.text
    exported = web.get("/console/bulk/segments/new.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == ["member_id", "segment", "persona", "tags"]
    assert rows[1:] == [[m, "new", "1", "night_owl"] for m in MEMBERS[:3]]
    assert web.get("/console/bulk/segments/nothing.csv").status_code == 404
    with transaction(runtime.engine) as conn:
        audited = conn.execute(
            select(audit_log.c.details).where(audit_log.c.action == "segment.export")
        ).scalar_one()
    assert "3" in str(audited)
    analyst, analyst_csrf = signed_in(Role.analyst)
    assert analyst.get("/console/bulk/segments/new.csv").status_code == 200
    refused = analyst.post("/console/bulk/coupons", data=form | {"csrf_token": analyst_csrf})
    assert refused.status_code == 403
    service, _ = signed_in(Role.service)
    _refused(service, "/console/bulk")
