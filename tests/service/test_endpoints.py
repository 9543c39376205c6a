"""The desk over HTTP: the platform opens and writes for the member (internal notes hidden),
staff reply, compensate once per key and report; refusals have stable codes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from memberwise.kit.db import transaction
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import KeyCreate, Role
from memberwise.runtime import Runtime
from tests.service.factories import PROGRAM, add_agent, add_members, make_program

Auth = Callable[[Role], dict[str, str]]


def test_a_ticket_over_http(
    client: TestClient, runtime: Runtime, auth: Auth, tmp_path: Path
) -> None:
    path = tmp_path / "program.yaml"
    path.write_text(PROGRAM)
    runtime.settings.program_file = path
    program = make_program()
    with transaction(runtime.engine) as conn:
        add_members(conn, program, m1="member")
        add_agent(conn, program, "a1")
        agent_key = privacy.create_key(conn, KeyCreate(role=Role.service, staff_id="a1")).key
    staff = {"Authorization": f"Bearer {agent_key}"}
    platform = auth(Role.platform)
    body = {"member_id": "m1", "channel": "app", "kind": "inquiry", "subject": "发票", "body": "?"}
    opened = client.post(
        "/v1/service/tickets", json=body, headers={**platform, "Idempotency-Key": "x"}
    )
    assert opened.status_code == 201, opened.text
    ticket = opened.json()
    assert (ticket["assignee"], ticket["state"], ticket["policy"]) == ("a1", "open", "standard")
    again = client.post(
        "/v1/service/tickets", json=body, headers={**platform, "Idempotency-Key": "x"}
    )
    assert again.json()["ticket_id"] == ticket["ticket_id"]
    url = f"/v1/service/tickets/{ticket['ticket_id']}"
    note = client.post(f"{url}/messages", json={"body": "VIP", "internal": True}, headers=staff)
    assert note.status_code == 200
    reply = client.post(f"{url}/messages", json={"body": "您好"}, headers=staff)
    assert reply.json()["first_response_at"] is not None
    seen = client.get(url, headers=platform).json()
    assert [m["body"] for m in seen["messages"]] == ["?", "您好"]
    assert len(client.get(url, headers=staff).json()["messages"]) == 3
    pay = {"kind": "points", "amount": 500, "reason": "sorry for the wait"}
    headers = {**staff, "Idempotency-Key": "c1"}
    first = client.post(f"{url}/compensations", json=pay, headers=headers)
    second = client.post(f"{url}/compensations", json=pay, headers=headers)
    assert first.status_code == 201 and first.json() == second.json()
    assert first.json()["status"] == "paid"
    points = client.get("/v1/members/m1/points", headers=platform).json()
    assert points["balance"]["available"] == 500
    done = client.post(f"{url}/state", json={"state": "resolved"}, headers=staff)
    assert done.json()["state"] == "resolved"
    rated = client.post(f"{url}/csat", json={"score": 5}, headers=platform)
    assert rated.json()["csat"] == 5
    report = client.get("/v1/service/reports?by=agent", headers=auth(Role.analyst)).json()
    row = next(r for r in report["rows"] if r["key"] == "a1")
    assert (row["tickets"], row["resolved"], row["csat"], row["compensation_paid"]) == (
        1,
        1,
        5.0,
        500,
    )
    assert row["first_contact_resolution"] == 1.0 and row["sla_attainment"] == 1.0
    missing = client.get("/v1/service/tickets/nope", headers=staff)
    assert (missing.status_code, missing.json()["code"]) == (404, "ticket_not_found")
    wrong = client.post(f"{url}/state", json={"state": "open"}, headers=staff)
    assert (wrong.status_code, wrong.json()["code"]) == (409, "invalid_transition")
    bad = client.post("/v1/service/tickets", json={**body, "channel": "fax"}, headers=platform)
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_request")
