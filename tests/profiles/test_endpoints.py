from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from memberwise.kit.db import transaction
from memberwise.privacy.schemas import Role
from memberwise.profiles import service
from memberwise.profiles.fields import FIELD_NAMES
from memberwise.runtime import Runtime
from tests.profiles.factories import FakeMember, write_build

Auth = Callable[[Role], dict[str, str]]

MEMBERS = [
    FakeMember(
        "m1",
        "active",
        persona=0,
        tags=("night_owl", "big_spender"),
        fields={"region": "浙江", "events_30d": 42, "refund_rate_365d": 0.25},
        details={"top_brands": [("花王", 0.6), ("Apple", 0.4)]},
    ),
    FakeMember("m2", "active", persona=1, tags=("night_owl",)),
    FakeMember("m3", "new"),
    FakeMember("m4", "at_risk", persona=0),
    FakeMember("m5", "active", persona=1),
]


@pytest.fixture
def published(runtime: Runtime) -> None:
    """The fixture build, published and committed (the API reads with its own connections)."""
    with transaction(runtime.engine) as conn:
        service.publish_build(conn, write_build(runtime.settings.home, "b1", MEMBERS))


@pytest.mark.usefixtures("published")
def test_a_member_profile_over_http(client: TestClient, auth: Auth) -> None:
    response = client.get("/v1/members/m1/profile", headers=auth(Role.platform))
    assert response.status_code == 200
    body = response.json()
    published_at = body.pop("published_at")
    assert published_at.endswith("Z")
    assert body == {
        "member_id": "m1",
        "build_id": "b1",
        "as_of": "2026-11-20T00:00:00Z",
        "segment": "active",
        "persona": 0,
        "tags": ["big_spender", "night_owl"],
        "fields": dict.fromkeys(FIELD_NAMES)
        | {"region": "浙江", "events_30d": 42, "refund_rate_365d": 0.25},
        "details": {
            "top_categories": [],
            "top_brands": [{"key": "花王", "value": 0.6}, {"key": "Apple", "value": 0.4}],
            "price_bands": [],
            "channel_mix": [],
        },
    }
    missing = client.get("/v1/members/nobody/profile", headers=auth(Role.service))
    assert (missing.status_code, missing.json()["code"]) == (404, "profile_not_found")


@pytest.mark.usefixtures("published")
def test_segments_and_tags_over_http(client: TestClient, auth: Auth) -> None:
    segments = client.get("/v1/segments", headers=auth(Role.operator))
    assert segments.status_code == 200
    body = segments.json()
    assert (body["build_id"], body["as_of"]) == ("b1", "2026-11-20T00:00:00Z")
    assert [(s["name"], s["members"]) for s in body["segments"]] == [
        ("new", 1),
        ("active", 3),
        ("at_risk", 1),
        ("churned", 0),
    ]
    assert body["segments"][0] == {
        "name": "new",
        "members": 1,
        "rule": "tenure_days <= 30",
        "description": "joined in the last 30 days",
    }
    assert body["personas"][0] == {
        "name": "persona-0",
        "id": 0,
        "label": "Night-owl gamers",
        "members": 2,
        "description": "late, loyal, electronics",
        "top_features": [{"field": "share_events_22_to_02", "z": 2.5}],
    }
    tags = client.get("/v1/tags", headers=auth(Role.analyst)).json()
    assert tags["build_id"] == "b1"
    assert tags["tags"] == [
        {
            "name": "night_owl",
            "members": 2,
            "rule": "share_events_22_to_02 >= 0.4",
            "description": "shops at night",
        },
        {
            "name": "big_spender",
            "members": 1,
            "rule": "spend_365d >= 1000000",
            "description": "spends a lot",
        },
        {
            "name": "bargain_hunter",
            "members": 0,
            "rule": "price_band <= 1",
            "description": "buys cheap",
        },
    ]


@pytest.mark.usefixtures("published")
def test_segment_members_page_by_cursor(client: TestClient, auth: Auth) -> None:
    headers = auth(Role.analyst)
    first = client.get("/v1/segments/active/members?limit=2", headers=headers).json()
    second = client.get(
        f"/v1/segments/active/members?limit=2&after={first['next_cursor']}", headers=headers
    ).json()
    assert first["items"] == [
        {
            "member_id": "m1",
            "segment": "active",
            "persona": 0,
            "tags": ["big_spender", "night_owl"],
        },
        {"member_id": "m2", "segment": "active", "persona": 1, "tags": ["night_owl"]},
    ]
    assert ([m["member_id"] for m in second["items"]], second["next_cursor"]) == (["m5"], None)
    persona = client.get("/v1/segments/persona-0/members", headers=headers).json()
    assert [m["member_id"] for m in persona["items"]] == ["m1", "m4"]
    unknown = client.get("/v1/segments/vip/members", headers=headers)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "segment_not_found")
    bad_cursor = client.get("/v1/segments/active/members?after=_w", headers=headers)
    assert (bad_cursor.status_code, bad_cursor.json()["code"]) == (422, "invalid_cursor")
    too_many = client.get("/v1/segments/active/members?limit=5000", headers=headers)
    assert (too_many.status_code, too_many.json()["code"]) == (422, "invalid_request")


def test_before_any_publish_lists_are_empty(client: TestClient, auth: Auth) -> None:
    segments = client.get("/v1/segments", headers=auth(Role.admin)).json()
    assert segments == {"build_id": None, "as_of": None, "segments": [], "personas": []}
    tags = client.get("/v1/tags", headers=auth(Role.admin)).json()
    assert tags == {"build_id": None, "as_of": None, "tags": []}


def test_the_profile_routes_are_documented(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    profile = spec["paths"]["/v1/members/{member_id}/profile"]["get"]
    schema = profile["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ProfileOut"}
    properties = spec["components"]["schemas"]["ProfileOut"]["properties"]
    assert {"fields", "details", "tags", "segment", "persona", "as_of"} <= set(properties)
    assert "top_categories" in properties["details"]["description"]
    for path in ("/v1/segments", "/v1/segments/{name}/members", "/v1/tags"):
        assert "200" in spec["paths"][path]["get"]["responses"], path
