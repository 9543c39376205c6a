"""The consent ledger on the real stores, and every place that uses data asking it first:
recommendations (personalisation), builds (profiling: profiles, predictions, segments, tiers)
and partner perks (sharing; see tests/ledger/test_benefits.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, func, select

from memberwise.jobs.build import run_build
from memberwise.kit.db import transaction
from memberwise.predict.tables import member_predictions
from memberwise.privacy import consent
from memberwise.privacy.consent import ConsentRequestReused, UnknownPurpose
from memberwise.privacy.schemas import (
    SYSTEM,
    ConsentIn,
    ConsentStatus,
    PrivacySettings,
    Purpose,
    Role,
)
from memberwise.privacy.tables import audit_log, consent_records
from memberwise.profiles.tables import member_profiles
from memberwise.program.service import parse_program
from memberwise.runtime import Runtime
from tests.jobs.test_build import AS_OF, PROGRAM
from tests.privacy.factories import taobao_runtime
from tests.recommend.test_endpoints import published  # noqa: F401 (fixture)

Auth = Callable[[Role], dict[str, str]]
SETTINGS = PrivacySettings()
T0 = datetime(2026, 12, 1, 8, tzinfo=UTC)


def _answer(
    conn: Connection,
    member: str,
    purpose: str,
    status: ConsentStatus,
    request: str,
    at: datetime = T0,
    settings: PrivacySettings = SETTINGS,
) -> bool:
    data = ConsentIn(purpose=purpose, status=status, channel="app", request_id=request)
    return consent.record(conn, settings, member, data, actor=SYSTEM, at=at)[1]


def test_the_current_state_is_the_newest_answer_or_the_programs_default(conn: Connection) -> None:
    assert consent.allows(conn, SETTINGS, "m1", "personalization") is True  # default granted
    assert consent.allows(conn, SETTINGS, "m1", "marketing_sms") is False  # default denied
    _answer(conn, "m1", "marketing_sms", ConsentStatus.granted, "r1")
    _answer(conn, "m1", "personalization", ConsentStatus.denied, "r2")
    assert consent.allows(conn, SETTINGS, "m1", "marketing_sms") is True
    _answer(conn, "m1", "marketing_sms", ConsentStatus.revoked, "r3", T0 + timedelta(days=1))

    state = {p.purpose: p for p in consent.state(conn, SETTINGS, "m1").purposes}
    assert (state["marketing_sms"].allowed, state["marketing_sms"].status) == (
        False,
        ConsentStatus.revoked,
    )
    assert (state["personalization"].allowed, state["personalization"].default) == (
        False,
        "granted",
    )
    assert (state["profiling"].allowed, state["profiling"].status) == (True, None)
    assert state["marketing_sms"].notice_version == "1"
    # Append-only: all three answers are kept as evidence, oldest first.
    assert [(r.purpose, r.status.value) for r in consent.history(conn, "m1")] == [
        ("marketing_sms", "granted"),
        ("personalization", "denied"),
        ("marketing_sms", "revoked"),
    ]


def test_a_replayed_request_changes_nothing_and_a_reused_one_is_refused(conn: Connection) -> None:
    assert _answer(conn, "m1", "profiling", ConsentStatus.denied, "r1") is True
    assert _answer(conn, "m1", "profiling", ConsentStatus.denied, "r1") is False
    with pytest.raises(ConsentRequestReused):
        _answer(conn, "m1", "profiling", ConsentStatus.granted, "r1")
    with pytest.raises(UnknownPurpose):
        _answer(conn, "m1", "telepathy", ConsentStatus.granted, "r2")
    count = select(func.count()).select_from(consent_records)
    assert conn.execute(count).scalar_one() == 1
    audits = select(func.count()).where(audit_log.c.action == "consent.record")
    assert conn.execute(audits).scalar_one() == 1


def test_purposes_and_defaults_come_from_the_program_file(conn: Connection) -> None:
    program = parse_program(
        """
name: strict
privacy:
  notice_version: "2026-12"
  purposes:
    personalization: {default: denied}
    wechat_marketing: {default: denied, description: messages on WeChat}
"""
    )
    settings = program.privacy
    assert consent.allows(conn, settings, "m1", "personalization") is False
    assert consent.allows(conn, settings, "m1", "profiling") is True  # built-in default kept
    _answer(conn, "m1", "wechat_marketing", ConsentStatus.granted, "r1", settings=settings)
    assert consent.allows(conn, settings, "m1", "wechat_marketing") is True
    assert consent.history(conn, "m1")[0].notice_version == "2026-12"


def test_an_audience_lists_the_exceptions_to_the_default(conn: Connection) -> None:
    _answer(conn, "a", "profiling", ConsentStatus.denied, "r1")
    _answer(conn, "b", "profiling", ConsentStatus.denied, "r2")
    _answer(conn, "b", "profiling", ConsentStatus.granted, "r3", T0 + timedelta(hours=1))
    _answer(conn, "c", "marketing_email", ConsentStatus.granted, "r4")
    profiling = consent.audience(conn, SETTINGS, "profiling")
    email = consent.audience(conn, SETTINGS, "marketing_email")
    assert (profiling.default_allowed, profiling.except_ids) == (True, frozenset({"a"}))
    assert profiling.keep(["a", "b", "c"]) == ["b", "c"]
    assert (email.default_allowed, email.except_ids) == (False, frozenset({"c"}))
    assert email.keep(["a", "b", "c"]) == ["c"]


def test_stricter_answer_wins() -> None:
    assert consent.stricter("granted", "denied") == "denied"
    assert consent.stricter("revoked", "granted") == "revoked"
    assert consent.stricter(None, "granted") == "granted"


# -- the API ---------------------------------------------------------------------------------------


def test_the_platform_records_and_reads_consent_on_the_members_behalf(
    client: TestClient, auth: Auth
) -> None:
    body = {
        "purpose": "marketing_push",
        "status": "granted",
        "channel": "app",
        "request_id": "req-1",
    }
    first = client.post("/v1/members/m1/consents", json=body, headers=auth(Role.platform))
    again = client.post("/v1/members/m1/consents", json=body, headers=auth(Role.platform))
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["record_id"] == again.json()["record_id"]
    reused = client.post(
        "/v1/members/m1/consents", json={**body, "status": "denied"}, headers=auth(Role.platform)
    )
    assert (reused.status_code, reused.json()["code"]) == (409, "consent_request_reused")
    bad = client.post(
        "/v1/members/m1/consents", json={**body, "purpose": "x"}, headers=auth(Role.platform)
    )
    assert (bad.status_code, bad.json()["code"]) == (422, "unknown_purpose")
    state = client.get("/v1/members/m1/consents", headers=auth(Role.service)).json()
    push = next(p for p in state["purposes"] if p["purpose"] == "marketing_push")
    assert (push["allowed"], push["status"], push["default"]) == (True, "granted", "denied")
    history = client.get("/v1/members/m1/consents/history", headers=auth(Role.platform)).json()
    assert [(h["purpose"], h["channel"], h["request_id"]) for h in history] == [
        ("marketing_push", "app", "req-1")
    ]
    refused = client.post("/v1/members/m1/consents", json=body, headers=auth(Role.operator))
    assert refused.status_code == 403


# -- where data is used ----------------------------------------------------------------------------


def test_without_personalisation_consent_the_member_gets_the_non_personalised_list(
    client: TestClient,
    auth: Auth,
    published: Runtime,  # noqa: F811
) -> None:
    before = client.get("/v1/members/m1/recommendations?n=3", headers=auth(Role.platform)).json()
    assert (before["personalized"], before["consent_withheld"]) == (True, False)
    refusal = {
        "purpose": "personalization",
        "status": "denied",
        "channel": "app",
        "request_id": "no-perso",
    }
    client.post("/v1/members/m1/consents", json=refusal, headers=auth(Role.platform))

    after = client.get("/v1/members/m1/recommendations?n=3", headers=auth(Role.platform)).json()
    assert (after["personalized"], after["consent_withheld"]) == (False, True)
    # The general lists only: not the member's own list, not their region's.
    assert [(i["item_id"], i["source"]) for i in after["items"]] == [
        ("new-1", "fallback"),
        ("snack-1", "fallback"),
        ("phone-1", "fallback"),
    ]


def test_a_member_who_refused_profiling_is_left_out_of_every_build_output(
    runtime: Runtime, tmp_path: Path
) -> None:
    taobao = taobao_runtime(runtime, tmp_path)
    with transaction(taobao.engine) as conn:
        _answer(conn, "1", Purpose.profiling.value, ConsentStatus.denied, "r1")

    result = run_build(taobao, PROGRAM, as_of=AS_OF)

    assert result.members == 42  # 43 members in the file, one refused
    for name in ("profiles.parquet", "segments.parquet", "predictions.parquet", "tags.parquet"):
        path = result.directory / name
        if path.exists():
            ids = set(pq.read_table(path, columns=["member_id"])["member_id"].to_pylist())
            assert "1" not in ids, name
    with transaction(taobao.engine) as conn:
        profiled = conn.execute(
            select(func.count()).where(member_profiles.c.member_id == "1")
        ).scalar_one()
        predicted = conn.execute(
            select(func.count()).where(member_predictions.c.member_id == "1")
        ).scalar_one()
        others = conn.execute(select(func.count()).select_from(member_profiles)).scalar_one()
    assert (profiled, predicted, others) == (0, 0, 42)


def test_coupon_suggestions_name_the_channels_the_member_consented_to(
    client: TestClient,
    auth: Auth,
    published: Runtime,  # noqa: F811
) -> None:
    before = client.get("/v1/members/m1/coupons/suggested", headers=auth(Role.platform)).json()
    assert before["channels"] == []  # marketing needs a yes: nothing may be sent
    grant = {
        "purpose": "marketing_push",
        "status": "granted",
        "channel": "app",
        "request_id": "push-yes",
    }
    client.post("/v1/members/m1/consents", json=grant, headers=auth(Role.platform))
    after = client.get("/v1/members/m1/coupons/suggested", headers=auth(Role.platform)).json()
    assert after["channels"] == ["marketing_push"]
    assert [s["campaign"] for s in after["suggestions"]] == ["winback"]
