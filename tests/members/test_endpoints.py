from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select, text

from memberwise.kit.db import transaction
from memberwise.privacy.schemas import Role
from memberwise.privacy.tables import audit_log
from memberwise.runtime import Runtime

Auth = Callable[[Role], dict[str, str]]
ALICE = {
    "member_id": "alice",
    "name": "陈静怡",
    "phone": "13612345678",
    "email": "alice.chen@example.com",
    "region": "广东",
    "city": "深圳",
    "birth_year": 1992,
}


def test_register_then_read_with_and_without_pii(client: TestClient, auth: Auth) -> None:
    created = client.post("/v1/members", json=ALICE, headers=auth(Role.platform))
    assert created.status_code == 201
    assert created.json()["pii"] is None
    replay = client.post("/v1/members", json=ALICE, headers=auth(Role.platform))
    assert (replay.status_code, replay.json()["version"]) == (200, 1)

    as_service = client.get("/v1/members/alice", headers=auth(Role.service)).json()
    assert as_service["pii"] == {
        "name": "陈静怡",
        "phone": "13612345678",
        "email": "alice.chen@example.com",
    }
    as_analyst = client.get("/v1/members/alice", headers=auth(Role.analyst)).json()
    assert as_analyst["pii"] is None
    assert (as_analyst["region"], as_analyst["city"], as_analyst["birth_year"]) == (
        "广东",
        "深圳",
        1992,
    )


def test_conflicting_registration_and_unknown_member(client: TestClient, auth: Auth) -> None:
    client.post("/v1/members", json=ALICE, headers=auth(Role.platform))
    conflict = client.post(
        "/v1/members", json={**ALICE, "name": "别人"}, headers=auth(Role.platform)
    )
    assert (conflict.status_code, conflict.json()["code"]) == (409, "member_exists")
    missing = client.get("/v1/members/bob", headers=auth(Role.service))
    assert (missing.status_code, missing.json()["code"]) == (404, "member_not_found")
    bad = client.post(
        "/v1/members", json={"member_id": "x", "phone": "call me"}, headers=auth(Role.platform)
    )
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_request")


def test_patch_and_list(client: TestClient, auth: Auth) -> None:
    for i in range(5):
        client.post(
            "/v1/members",
            json={"member_id": f"m{i}", "region": "江苏"},
            headers=auth(Role.platform),
        )
    patched = client.patch("/v1/members/m3", json={"region": "上海"}, headers=auth(Role.platform))
    assert (patched.status_code, patched.json()["region"], patched.json()["version"]) == (
        200,
        "上海",
        2,
    )
    page1 = client.get("/v1/members?limit=2", headers=auth(Role.operator)).json()
    page2 = client.get(
        f"/v1/members?limit=2&after={page1['next_cursor']}", headers=auth(Role.operator)
    ).json()
    assert [m["member_id"] for m in page1["items"]] == ["m0", "m1"]
    assert [m["member_id"] for m in page2["items"]] == ["m2", "m3"]
    only = client.get("/v1/members?region=上海", headers=auth(Role.operator)).json()
    assert [m["member_id"] for m in only["items"]] == ["m3"]
    bad_cursor = client.get("/v1/members?after=_w", headers=auth(Role.operator))
    assert (bad_cursor.status_code, bad_cursor.json()["code"]) == (422, "invalid_cursor")


def test_every_pii_read_and_change_is_audited(
    client: TestClient, auth: Auth, runtime: Runtime
) -> None:
    client.post("/v1/members", json=ALICE, headers=auth(Role.platform))
    client.get("/v1/members/alice", headers=auth(Role.service))
    client.get("/v1/members/alice", headers=auth(Role.operator))  # no PII shown: no PII read
    client.patch("/v1/members/alice", json={"city": "广州"}, headers=auth(Role.platform))
    with transaction(runtime.engine) as conn:
        actions = conn.execute(
            select(audit_log.c.action, audit_log.c.actor_role)
            .where(audit_log.c.member_id == "alice")
            .order_by(audit_log.c.audit_id)
        ).all()
    assert [tuple(a) for a in actions] == [
        ("member.create", "platform"),
        ("member.pii_read", "service"),
        ("member.update", "platform"),
    ]
    log = client.get("/v1/audit?member_id=alice", headers=auth(Role.admin)).json()
    assert [e["action"] for e in log["items"]] == [
        "member.update",
        "member.pii_read",
        "member.create",
    ]


def test_pii_is_not_readable_in_the_database(
    client: TestClient, auth: Auth, runtime: Runtime
) -> None:
    client.post("/v1/members", json=ALICE, headers=auth(Role.platform))
    secrets = [ALICE["name"], ALICE["phone"], ALICE["email"]]
    if runtime.engine.dialect.name == "sqlite":
        runtime.engine.dispose()  # checkpoint nothing pending: read the file and its WAL
        db_file = Path(runtime.engine.url.database or "")
        raw = b"".join(
            p.read_bytes() for p in db_file.parent.glob(db_file.name + "*") if p.is_file()
        )
    else:
        with transaction(runtime.engine) as conn:
            dump = conn.execute(text("SELECT members::text FROM members")).scalars().all()
        raw = "\n".join(dump).encode()
    assert raw  # the member row really is there
    for secret in secrets:
        assert str(secret).encode() not in raw, secret
    assert b"alice" in raw
