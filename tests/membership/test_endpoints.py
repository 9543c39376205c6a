"""The membership API end to end over HTTP: membership view, joining and paying, cancelling,
invitations and managers, with their refusal codes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from memberwise.kit.db import transaction
from memberwise.membership import managers as membership_managers
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import Role, StaffCreate
from memberwise.program.service import parse_program
from memberwise.runtime import Runtime
from tests.membership.test_stage import PROGRAM, apply
from tests.membership.test_stage import build_dir as build_dir  # the fixture

Auth = Callable[[Role], dict[str, str]]
PLANS = """plans:
  88vip:
    fee: 88800
    prices: [{rule: "score >= 5000", fee: 8800}]
    refund: {policy: full_within_days, days: 7}
"""


@pytest.fixture
def program_file(runtime: Runtime, tmp_path: Path, build_dir: Path) -> Path:
    text = PROGRAM.replace("GOLD", "1000").replace("PLAT", "5000").replace("QUOTA", "2") + PLANS
    path = tmp_path / "program.yaml"
    path.write_text(text, encoding="utf-8")
    runtime.settings.program_file = path
    apply(runtime, parse_program(text), build_dir)
    return path


def test_a_members_membership_shows_tier_score_and_what_is_missing(
    client: TestClient, auth: Auth, program_file: Path
) -> None:
    body = client.get("/v1/members/m03/membership", headers=auth(Role.platform)).json()
    assert body["tier"]["name"] == "gold"
    assert body["score"] == {
        "name": "score",
        "value": 3000,
        "max": 100000,
        "parts": [
            {
                "name": "spend",
                "field": "spend_365d",
                "value": 300000.0,
                "points": 3000.0,
                "max": 100000.0,
            }
        ],
    }
    assert body["next_tier"] == {
        "name": "platinum",
        "any_of": [
            {
                "metric": "score",
                "unit": "points",
                "need": 5000,
                "have": 3000,
                "missing": 2000,
                "rule": None,
                "text": "2,000 more score",
            }
        ],
    }
    missing = client.get("/v1/members/nobody/membership", headers=auth(Role.platform))
    assert (missing.status_code, missing.json()["code"]) == (404, "membership_not_found")


def test_joining_paying_and_cancelling_over_http(
    client: TestClient, auth: Auth, program_file: Path
) -> None:
    platform = auth(Role.platform)
    # m06 has score 6,000: the member price applies.
    joined = client.post(
        "/v1/members/m06/subscriptions",
        json={"plan": "88vip"},
        headers={**platform, "Idempotency-Key": "join-1"},
    )
    assert joined.status_code == 201
    sub = joined.json()
    assert (sub["status"], sub["fee"]) == ("pending", 8800)
    retry = client.post(
        "/v1/members/m06/subscriptions",
        json={"plan": "88vip"},
        headers={**platform, "Idempotency-Key": "join-1"},
    )
    assert retry.json()["subscription_id"] == sub["subscription_id"]
    # Everyone else pays the base fee.
    other = client.post("/v1/members/m01/subscriptions", json={"plan": "88vip"}, headers=platform)
    assert other.json()["fee"] == 88800
    url = f"/v1/subscriptions/{sub['subscription_id']}"
    wrong = client.post(f"{url}/payments", json={"payment_id": "p0", "amount": 1}, headers=platform)
    assert (wrong.status_code, wrong.json()["code"]) == (422, "amount_mismatch")
    paid = client.post(
        f"{url}/payments", json={"payment_id": "p1", "amount": 8800}, headers=platform
    )
    again = client.post(
        f"{url}/payments", json={"payment_id": "p1", "amount": 8800}, headers=platform
    )
    assert paid.status_code == again.status_code == 200
    assert paid.json() == again.json()
    membership = client.get("/v1/members/m06/membership", headers=platform).json()
    assert [s["status"] for s in membership["subscriptions"]] == ["active"]
    cancelled = client.post(f"{url}/cancel", json={"reason": "changed my mind"}, headers=platform)
    assert cancelled.json()["refund"] == 8800
    twice = client.post(f"{url}/cancel", json={}, headers=platform)
    assert (twice.status_code, twice.json()["code"]) == (409, "subscription_not_cancellable")
    unknown = client.post("/v1/members/m06/subscriptions", json={"plan": "gold"}, headers=platform)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "plan_not_found")


def test_invitations_and_managers_over_http(
    client: TestClient, auth: Auth, program_file: Path, runtime: Runtime
) -> None:
    with transaction(runtime.engine) as conn:
        privacy.create_staff(conn, StaffCreate(staff_id="am1", name="Li Na", role=Role.service))

    with transaction(runtime.engine) as conn:
        membership_managers.add_manager(conn, parse_program(program_file.read_text()), "am1", 10)
    staff = auth(Role.service)
    page = client.get("/v1/invitations?status=pending", headers=staff).json()
    # Quota 2: the two best-ranked eligible members, each with the reason.
    invited = {i["member_id"]: i for i in page["items"]}
    assert set(invited) == {"m10", "m11"}
    assert invited["m11"]["rank"] == 1
    first = invited["m11"]["invitation_id"]
    accepted = client.post(f"/v1/invitations/{first}/accept", headers=auth(Role.platform))
    assert accepted.json()["status"] == "accepted"
    member = accepted.json()["member_id"]
    body = client.get(f"/v1/members/{member}/membership", headers=staff).json()
    assert (body["tier"]["name"], body["tier"]["source"]) == ("black", "invitation")
    assert body["manager"] == {"staff_id": "am1", "name": "Li Na"}
    managed = client.get("/v1/managers/am1/members", headers=staff).json()
    assert [m["member_id"] for m in managed["members"]] == [member]
    closed = client.post(f"/v1/invitations/{first}/decline", headers=auth(Role.platform))
    assert (closed.status_code, closed.json()["code"]) == (409, "invitation_not_pending")
    nobody = client.get("/v1/managers/nobody/members", headers=staff)
    assert (nobody.status_code, nobody.json()["code"]) == (404, "manager_not_found")


def test_subscriptions_are_listed_filtered_and_paged(
    client: TestClient, auth: Auth, program_file: Path
) -> None:
    platform = auth(Role.platform)
    made = [
        client.post(f"/v1/members/{m}/subscriptions", json={"plan": "88vip"}, headers=platform)
        for m in ("m01", "m06", "m07")
    ]
    ids = sorted(r.json()["subscription_id"] for r in made)
    first = client.get("/v1/subscriptions?limit=2", headers=auth(Role.analyst)).json()
    assert [s["subscription_id"] for s in first["items"]] == ids[:2]
    rest = client.get(
        f"/v1/subscriptions?limit=2&after={first['next_cursor']}", headers=platform
    ).json()
    assert ([s["subscription_id"] for s in rest["items"]], rest["next_cursor"]) == (ids[2:], None)
    of_m06 = client.get("/v1/subscriptions?member_id=m06", headers=platform).json()["items"]
    assert [(s["member_id"], s["fee"], s["status"]) for s in of_m06] == [("m06", 8800, "pending")]
    assert client.get("/v1/subscriptions?status=active", headers=platform).json()["items"] == []
    assert client.get("/v1/subscriptions?plan=other", headers=platform).json()["items"] == []
    bad = client.get("/v1/subscriptions?status=lost", headers=platform)
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_request")


def test_a_members_account_manager_is_reassigned_through_the_api(
    client: TestClient, auth: Auth, program_file: Path, runtime: Runtime
) -> None:
    program = parse_program(program_file.read_text())
    with transaction(runtime.engine) as conn:
        for staff_id, name in (("am1", "Li Na"), ("am2", "Wang Fang"), ("am3", "Zhao Lei")):
            privacy.create_staff(conn, StaffCreate(staff_id=staff_id, name=name, role=Role.service))
        membership_managers.add_manager(conn, program, "am1", 10)
        membership_managers.add_manager(conn, program, "am2", 10)
        membership_managers.add_manager(conn, program, "am3", 1)
    staff = auth(Role.service)
    invited = client.get("/v1/invitations?status=pending", headers=staff).json()["items"]
    members = []
    for inv in invited:
        client.post(f"/v1/invitations/{inv['invitation_id']}/accept", headers=auth(Role.platform))
        members.append(inv["member_id"])
    member = members[0]
    before = client.get(f"/v1/members/{member}/membership", headers=staff).json()["manager"]
    target = "am2" if before["staff_id"] != "am2" else "am1"

    moved = client.put(
        f"/v1/members/{member}/manager",
        json={"staff_id": target, "reason": "speaks the member's dialect"},
        headers=auth(Role.operator),
    )

    assert moved.status_code == 200, moved.text
    assert (moved.json()["staff_id"], moved.json()["reason"]) == (
        target,
        "speaks the member's dialect",
    )
    after = client.get(f"/v1/members/{member}/membership", headers=staff).json()["manager"]
    assert after["staff_id"] == target
    again = client.put(
        f"/v1/members/{member}/manager",
        json={"staff_id": target, "reason": "speaks the member's dialect"},
        headers=staff,
    )
    assert again.json() == moved.json()
    audit = client.get("/v1/audit?limit=50", headers=auth(Role.admin)).json()["items"]
    assert [a["details"]["to"] for a in audit if a["action"] == "manager.reassign"] == [target]
    # am3 is full once it holds one member; an ordinary member has no manager to change.
    holder = members[1]
    current = client.get(f"/v1/members/{holder}/membership", headers=staff).json()["manager"]
    if current["staff_id"] != "am3":
        assert (
            client.put(
                f"/v1/members/{holder}/manager",
                json={"staff_id": "am3", "reason": "fill"},
                headers=staff,
            ).status_code
            == 200
        )
    full = client.put(
        f"/v1/members/{member}/manager", json={"staff_id": "am3", "reason": "try"}, headers=staff
    )
    assert (full.status_code, full.json()["code"]) == (409, "manager_at_capacity")
    plain = client.put(
        "/v1/members/m01/manager", json={"staff_id": "am1", "reason": "try"}, headers=staff
    )
    assert (plain.status_code, plain.json()["code"]) == (422, "member_not_managed")
    gone = client.put(
        f"/v1/members/{member}/manager", json={"staff_id": "nobody", "reason": "try"}, headers=staff
    )
    assert (gone.status_code, gone.json()["code"]) == (404, "manager_not_found")
