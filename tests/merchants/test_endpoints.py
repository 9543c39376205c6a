"""Merchant routes: roles, idempotent penalties, appeals, 4xx codes (both stores)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from memberwise.privacy.schemas import Role

Auth = Callable[[Role], dict[str, str]]


def test_a_penalty_is_recorded_once_and_its_threshold_acts(client: TestClient, auth: Auth) -> None:
    headers = {**auth(Role.operator), "Idempotency-Key": "case-1"}
    body = {"violation": "fake_orders", "reason": "刷单 detected"}
    first = client.post("/v1/merchants/s9/penalties", json=body, headers=headers)
    again = client.post("/v1/merchants/s9/penalties", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["entry"] == again.json()["entry"]
    assert first.json()["points"] == 12
    assert [a["kind"] for a in first.json()["actions"]] == ["marketing_ban"]
    merchant = client.get("/v1/merchants/s9", headers=auth(Role.analyst)).json()
    assert (merchant["points"], merchant["kept_away"], merchant["scorecard"]) == (12, True, None)


def test_refusals_have_stable_codes(client: TestClient, auth: Auth) -> None:
    op = auth(Role.operator)
    unknown = client.post(
        "/v1/merchants/s9/penalties",
        json={"violation": "nope", "reason": "x"},
        headers={**op, "Idempotency-Key": "k"},
    )
    assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_violation")
    no_key = client.post("/v1/merchants/s9/penalties", json={"violation": "x", "reason": "x"},
                         headers=op)  # fmt: skip
    assert no_key.status_code == 422
    missing = client.get("/v1/merchants/nobody", headers=op)
    assert (missing.status_code, missing.json()["code"]) == (404, "merchant_not_found")
    appeal = client.post("/v1/penalties/nope/appeal", json={"reason": "x"}, headers=op)
    assert (appeal.status_code, appeal.json()["code"]) == (404, "penalty_not_found")
    platform = client.post(
        "/v1/merchants/s9/penalties",
        json={"violation": "fake_orders", "reason": "x"},
        headers={**auth(Role.platform), "Idempotency-Key": "k2"},
    )
    assert platform.status_code == 403


def test_an_appeal_upheld_reverses_the_points(client: TestClient, auth: Auth) -> None:
    op = auth(Role.operator)
    made = client.post(
        "/v1/merchants/s9/penalties",
        json={"violation": "dispute_lost", "reason": "ruled for the member"},
        headers={**op, "Idempotency-Key": "d1"},
    ).json()
    appeal = client.post(
        f"/v1/penalties/{made['entry']['entry_id']}/appeal", json={"reason": "wrong"}, headers=op
    ).json()
    decided = client.post(
        f"/v1/appeals/{appeal['appeal_id']}/decision",
        json={"uphold": True, "decision": "evidence accepted"},
        headers=op,
    )
    assert decided.json()["status"] == "upheld"
    ledger = client.get("/v1/merchants/s9/penalties", headers=op).json()
    assert ledger["points"] == 0 and [e["points"] for e in ledger["entries"]] == [4, -4]
    twice = client.post(
        f"/v1/appeals/{appeal['appeal_id']}/decision",
        json={"uphold": False, "decision": "no"},
        headers=op,
    )
    assert (twice.status_code, twice.json()["code"]) == (409, "appeal_closed")


def test_feedback_analyze_reads_sentiment_and_aspects(client: TestClient, auth: Auth) -> None:
    answer = client.post(
        "/v1/feedback/analyze",
        json={"texts": ["物流很快，质量很好", "客服不理人，和描述不符"]},
        headers=auth(Role.service),
    )
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["sentiment"] for r in results] == ["positive", "negative"]
    assert [[a["aspect"] for a in r["aspects"]] for r in results] == [
        ["logistics", "quality"],
        ["description", "service"],
    ]
    empty = client.post("/v1/feedback/analyze", json={"texts": []}, headers=auth(Role.service))
    assert empty.status_code == 422
    long = client.post("/v1/feedback/analyze", json={"texts": ["差" * 5001]},
                       headers=auth(Role.service))  # fmt: skip
    assert (long.status_code, long.json()["code"]) == (422, "feedback_text_too_long")
    nothing = client.get("/v1/feedback/topics", headers=auth(Role.analyst)).json()
    assert nothing == {"build_id": None, "topics": []}
