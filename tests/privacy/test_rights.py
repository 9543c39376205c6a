"""Data-subject requests on the real stores: deadlines, the staff queue, the archive of
everything held, corrections and erasure through the API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from memberwise.jobs import holders
from memberwise.privacy.rights import due_at
from memberwise.privacy.schemas import DeadlinePreset, RequestDeadline, Role

Auth = Callable[[Role], dict[str, str]]


@pytest.mark.parametrize(
    ("received", "deadline", "due"),
    [
        # Friday 10:00 Shanghai + 15 working days = Friday three weeks later.
        (
            datetime(2026, 12, 4, 2, tzinfo=UTC),
            RequestDeadline(),
            datetime(2026, 12, 25, 2, tzinfo=UTC),
        ),
        # One month: 31 January -> 28 February (no 31st), 15 March -> 15 April.
        (
            datetime(2027, 1, 31, 2, tzinfo=UTC),
            RequestDeadline(preset=DeadlinePreset.gdpr_one_month),
            datetime(2027, 2, 28, 2, tzinfo=UTC),
        ),
        (
            datetime(2027, 3, 15, 2, tzinfo=UTC),
            RequestDeadline(preset=DeadlinePreset.gdpr_one_month),
            datetime(2027, 4, 15, 2, tzinfo=UTC),
        ),
        (
            datetime(2027, 3, 15, 2, tzinfo=UTC),
            RequestDeadline(preset=DeadlinePreset.days, days=10),
            datetime(2027, 3, 25, 2, tzinfo=UTC),
        ),
    ],
)
def test_deadlines(received: datetime, deadline: RequestDeadline, due: datetime) -> None:
    assert due_at(received, deadline, "Asia/Shanghai") == due


def _member(client: TestClient, auth: Auth, member_id: str = "m1") -> None:
    body = {"member_id": member_id, "name": "王芳", "phone": "13912345678", "region": "浙江"}
    assert client.post("/v1/members", json=body, headers=auth(Role.platform)).status_code == 201


def _file(client: TestClient, auth: Auth, kind: str, key: str, **extra: object) -> dict:  # type: ignore[type-arg]
    response = client.post(
        "/v1/members/m1/data-requests",
        json={"kind": kind, "idempotency_key": key, **extra},
        headers=auth(Role.platform),
    )
    assert response.status_code in (200, 201), response.text
    body: dict = response.json()  # type: ignore[type-arg]
    return body


def test_an_access_request_goes_through_the_queue_to_an_archive(
    client: TestClient, auth: Auth
) -> None:
    holders.install()
    _member(client, auth)
    client.post(
        "/v1/members/m1/consents",
        json={"purpose": "profiling", "status": "denied", "channel": "app", "request_id": "c1"},
        headers=auth(Role.platform),
    )
    filed = _file(client, auth, "access", "k1")
    assert _file(client, auth, "access", "k1")["request_id"] == filed["request_id"]
    assert (filed["status"], filed["deadline"], filed["overdue"]) == (
        "open",
        "pipl_15_working_days",
        False,
    )
    queue = client.get("/v1/data-requests", headers=auth(Role.service)).json()
    assert [r["request_id"] for r in queue] == [filed["request_id"]]
    early = client.get(
        f"/v1/data-requests/{filed['request_id']}/archive", headers=auth(Role.platform)
    )
    assert (early.status_code, early.json()["code"]) == (409, "data_request_closed")

    done = client.post(
        f"/v1/data-requests/{filed['request_id']}/decision",
        json={"action": "complete"},
        headers=auth(Role.service),
    ).json()
    archive = client.get(
        f"/v1/data-requests/{filed['request_id']}/archive", headers=auth(Role.platform)
    ).json()

    assert done["status"] == "completed"
    assert client.get("/v1/data-requests", headers=auth(Role.service)).json() == []
    assert archive["member_id"] == "m1" and archive["format"] == "memberwise.archive/1"
    assert archive["store"]["members"]["pii"] == {
        "name": "王芳",
        "phone": "13912345678",
        "email": None,
    }
    consents = archive["store"]["consent_records.member_id"]
    assert [(c["purpose"], c["status"]) for c in consents] == [("profiling", "denied")]
    actions = {a["action"] for a in archive["store"]["audit_log"]}
    assert {"member.create", "consent.record", "data_request.access"} <= actions
    again = client.post(
        f"/v1/data-requests/{filed['request_id']}/decision",
        json={"action": "complete"},
        headers=auth(Role.service),
    )
    assert (again.status_code, again.json()["code"]) == (409, "data_request_closed")
    assert (
        client.get("/v1/data-requests", headers=auth(Role.platform)).status_code == 403
    )  # the queue is the staff's


def test_a_correction_is_applied_when_staff_complete_it(client: TestClient, auth: Auth) -> None:
    holders.install()
    _member(client, auth)
    bad = client.post(
        "/v1/members/m1/data-requests",
        json={"kind": "correction", "idempotency_key": "x", "corrections": {"tier": "vip"}},
        headers=auth(Role.platform),
    )
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_correction")
    wrong = client.post(
        "/v1/members/m1/data-requests",
        json={"kind": "correction", "idempotency_key": "y", "corrections": {"birth_year": "old"}},
        headers=auth(Role.platform),
    )
    assert (wrong.status_code, wrong.json()["code"]) == (422, "invalid_correction")
    assert wrong.json()["message"].startswith("corrections.birth_year:")
    filed = _file(client, auth, "correction", "k2", corrections={"phone": "13700000000"})
    client.post(
        f"/v1/data-requests/{filed['request_id']}/decision",
        json={"action": "complete"},
        headers=auth(Role.service),
    )
    member = client.get("/v1/members/m1", headers=auth(Role.platform)).json()
    assert member["pii"]["phone"] == "13700000000"


def test_an_erasure_request_forgets_the_member_and_a_rejection_changes_nothing(
    client: TestClient, auth: Auth
) -> None:
    holders.install()
    _member(client, auth)
    rejected = _file(client, auth, "erasure", "k3")
    client.post(
        f"/v1/data-requests/{rejected['request_id']}/decision",
        json={"action": "reject", "reason": "identity not verified"},
        headers=auth(Role.service),
    )
    assert client.get("/v1/members/m1", headers=auth(Role.platform)).status_code == 200
    filed = _file(client, auth, "erasure", "k4")
    done = client.post(
        f"/v1/data-requests/{filed['request_id']}/decision",
        json={"action": "complete"},
        headers=auth(Role.service),
    ).json()
    assert (done["status"], done["outcome"]) == ("completed", "erased")
    assert done["member_id"].startswith("erased-")
    gone = client.get("/v1/members/m1", headers=auth(Role.platform))
    assert (gone.status_code, gone.json()["code"]) == (404, "member_not_found")
