"""The campaigns API by role: operators define and launch, analysts read results."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from memberwise.kit.db import transaction
from memberwise.privacy.schemas import Role
from memberwise.runtime import Runtime
from tests.campaigns.test_service import MEMBERS, publish_profiles
from tests.ledger.factories import add_members

Auth = Callable[[Role], dict[str, str]]


def test_define_launch_send_and_read(client: TestClient, auth: Auth, runtime: Runtime) -> None:
    with transaction(runtime.engine) as conn:
        add_members(conn, *MEMBERS[:100])
        publish_profiles(conn, MEMBERS[:100], "new", ["first_order"])
    body = {
        "name": "welcome",
        "audience": {"tag": "first_order"},
        "offer": {"kind": "message", "message": "welcome to the club"},
        "channels": ["app"],
        "holdout_percent": 10,
        "send_at_best_hour": False,
        "quiet_hours": [0, 0],
    }
    assert client.post("/v1/campaigns", json=body, headers=auth(Role.analyst)).status_code == 403
    made = client.post("/v1/campaigns", json=body, headers=auth(Role.operator))
    assert made.status_code == 201
    campaign_id = made.json()["campaign_id"]
    launched = client.post(f"/v1/campaigns/{campaign_id}/launch", headers=auth(Role.operator))
    counts = launched.json()["members"]
    assert counts["held_out"] + counts["scheduled"] == 100
    again = client.post(f"/v1/campaigns/{campaign_id}/launch", headers=auth(Role.operator))
    assert (again.status_code, again.json()["code"]) == (409, "campaign_already_launched")
    sent = client.post("/v1/campaigns/send-due", headers=auth(Role.operator)).json()
    assert sent == {"sent": counts["scheduled"], "skipped": 0}
    page = client.get(
        f"/v1/campaigns/{campaign_id}/members",
        params={"arm": "holdout", "limit": 500},
        headers=auth(Role.analyst),
    ).json()
    assert len(page["items"]) == counts["held_out"]
    assert {m["status"] for m in page["items"]} == {"held_out"}
    results = client.get(f"/v1/campaigns/{campaign_id}/results", headers=auth(Role.analyst))
    assert results.status_code == 200
    assert results.json()["srm"]["observed"] == {
        "holdout": counts["held_out"],
        "treatment": counts["scheduled"],
    }
    missing = client.get("/v1/campaigns/cmp_none", headers=auth(Role.analyst))
    assert (missing.status_code, missing.json()["code"]) == (404, "campaign_not_found")
    bad = client.post(
        "/v1/campaigns",
        json={**body, "audience": {"segment": "a", "tag": "b"}},
        headers=auth(Role.operator),
    )
    assert bad.status_code == 422
