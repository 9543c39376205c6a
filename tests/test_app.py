"""The API shell: every route authenticates and authorizes; errors have one shape; docs are
served without any CDN."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from memberwise.privacy.schemas import Role

Auth = Callable[[Role], dict[str, str]]


ALL = frozenset(Role)
READERS = frozenset({Role.platform, Role.operator, Role.analyst, Role.service})
ADMIN = frozenset({Role.admin})
PLATFORM = frozenset({Role.admin, Role.platform})
ANALYSTS = frozenset({Role.admin, Role.operator, Role.analyst})

#: Who may call what. A route missing here fails the test, so every new route states its roles.
POLICY: dict[tuple[str, str], frozenset[Role]] = {
    ("POST", "/v1/events"): PLATFORM,
    ("POST", "/v1/members"): PLATFORM,
    ("GET", "/v1/members"): READERS | ADMIN,
    ("GET", "/v1/members/x"): READERS | ADMIN,
    ("PATCH", "/v1/members/x"): PLATFORM,
    ("GET", "/v1/members/x/profile"): READERS | ADMIN,
    ("GET", "/v1/members/x/membership"): READERS | ADMIN,
    ("GET", "/v1/members/x/tier-notices"): READERS | ADMIN,
    ("POST", "/v1/members/x/tier"): ADMIN | {Role.operator},
    ("POST", "/v1/members/x/subscriptions"): PLATFORM,
    ("GET", "/v1/subscriptions"): READERS | ADMIN,
    ("GET", "/v1/subscriptions/x"): READERS | ADMIN,
    ("PUT", "/v1/members/x/manager"): ADMIN | {Role.operator, Role.service},
    ("GET", "/v1/members/x/orders"): READERS | ADMIN,
    ("POST", "/v1/subscriptions/x/payments"): PLATFORM,
    ("POST", "/v1/subscriptions/x/cancel"): PLATFORM | {Role.service},
    ("GET", "/v1/invitations"): ADMIN | {Role.operator, Role.service},
    ("POST", "/v1/invitations/x/accept"): PLATFORM | {Role.service},
    ("POST", "/v1/invitations/x/decline"): PLATFORM | {Role.service},
    ("GET", "/v1/managers/x/members"): ADMIN | {Role.operator, Role.service},
    ("GET", "/v1/members/x/predictions"): READERS | ADMIN,
    ("GET", "/v1/predictions/models"): ANALYSTS,
    ("GET", "/v1/members/x/benefits"): READERS | ADMIN,
    ("POST", "/v1/members/x/benefits/express-refunds"): PLATFORM | {Role.service},
    ("POST", "/v1/members/x/benefits/express-refunds/x/restore"): PLATFORM | {Role.service},
    ("POST", "/v1/members/x/benefits/return-cards"): PLATFORM,
    ("POST", "/v1/members/x/benefits/partner-perks"): PLATFORM,
    ("POST", "/v1/members/x/benefits/monthly-coupons"): PLATFORM | {Role.operator},
    ("POST", "/v1/checkout/quote"): PLATFORM,
    ("POST", "/v1/orders"): PLATFORM,
    ("GET", "/v1/orders/x"): READERS | ADMIN,
    ("POST", "/v1/orders/x/refunds"): PLATFORM,
    ("POST", "/v1/orders/x/complete"): PLATFORM,
    ("GET", "/v1/members/x/points"): READERS | ADMIN,
    ("POST", "/v1/members/x/points/awards"): PLATFORM,
    ("POST", "/v1/members/x/points/adjustments"): ADMIN | {Role.service},
    ("POST", "/v1/members/x/points/redemptions"): PLATFORM,
    ("GET", "/v1/members/x/coupons"): READERS | ADMIN,
    ("POST", "/v1/coupons/issuances"): ADMIN | {Role.operator},
    ("GET", "/v1/coupons/templates"): ANALYSTS,
    ("GET", "/v1/segments"): ANALYSTS,
    ("GET", "/v1/segments/x/members"): ANALYSTS,
    ("GET", "/v1/tags"): ANALYSTS,
    ("GET", "/v1/me"): ALL,
    ("POST", "/v1/staff"): ADMIN,
    ("GET", "/v1/staff"): ADMIN,
    ("POST", "/v1/keys"): ADMIN,
    ("GET", "/v1/keys"): ADMIN,
    ("DELETE", "/v1/keys/x"): ADMIN,
    ("GET", "/v1/audit"): ADMIN,
    ("GET", "/v1/members/x/recommendations"): READERS | ADMIN,
    ("GET", "/v1/members/x/coupons/suggested"): ANALYSTS | PLATFORM,
    ("GET", "/v1/items/x/similar"): READERS | ADMIN,
    ("GET", "/v1/items/x"): READERS | ADMIN,
    ("GET", "/v1/recommendations/models"): ANALYSTS,
    ("GET", "/v1/webhooks/event-types"): PLATFORM,
    ("POST", "/v1/webhooks/endpoints"): PLATFORM,
    ("GET", "/v1/webhooks/endpoints"): PLATFORM,
    ("GET", "/v1/webhooks/endpoints/x"): PLATFORM,
    ("PATCH", "/v1/webhooks/endpoints/x"): PLATFORM,
    ("DELETE", "/v1/webhooks/endpoints/x"): PLATFORM,
    ("POST", "/v1/webhooks/endpoints/x/rotate-secret"): PLATFORM,
    ("POST", "/v1/webhooks/endpoints/x/replay"): PLATFORM,
    ("GET", "/v1/webhooks/deliveries"): PLATFORM,
    ("GET", "/v1/webhooks/deliveries/x/attempts"): PLATFORM,
    ("POST", "/v1/webhooks/deliveries/x/replay"): PLATFORM,
    ("POST", "/v1/campaigns"): ADMIN | {Role.operator},
    ("GET", "/v1/campaigns"): ANALYSTS,
    ("GET", "/v1/campaigns/x"): ANALYSTS,
    ("POST", "/v1/campaigns/x/launch"): ADMIN | {Role.operator},
    ("POST", "/v1/campaigns/send-due"): ADMIN | {Role.operator},
    ("GET", "/v1/campaigns/x/members"): ANALYSTS,
    ("GET", "/v1/campaigns/x/results"): ANALYSTS,
    ("POST", "/v1/journeys"): ADMIN | {Role.operator},
    ("GET", "/v1/journeys"): ANALYSTS,
    ("GET", "/v1/journeys/x"): ANALYSTS,
    ("POST", "/v1/journeys/run"): ADMIN | {Role.operator},
    ("GET", "/v1/journeys/x/enrollments"): ANALYSTS,
    ("PUT", "/v1/items/x"): PLATFORM,
    # consent and data rights (privacy)
    ("GET", "/v1/members/x/consents"): PLATFORM | {Role.service},
    ("POST", "/v1/members/x/consents"): PLATFORM,
    ("GET", "/v1/members/x/consents/history"): PLATFORM | {Role.service},
    ("POST", "/v1/members/x/data-requests"): PLATFORM,
    ("GET", "/v1/members/x/data-requests"): PLATFORM | {Role.service},
    ("GET", "/v1/data-requests"): ADMIN | {Role.service},
    ("POST", "/v1/data-requests/x/decision"): ADMIN | {Role.service},
    ("GET", "/v1/data-requests/x/archive"): PLATFORM | {Role.service},
    ("POST", "/v1/merges"): PLATFORM,
    # the service desk: the platform acts for members, staff work tickets, operators run it
    ("POST", "/v1/service/tickets"): PLATFORM | {Role.service},
    ("GET", "/v1/service/tickets/x"): PLATFORM | {Role.service},
    ("PATCH", "/v1/service/tickets/x"): ADMIN | {Role.service},
    ("GET", "/v1/members/x/tickets"): PLATFORM | {Role.service},
    ("POST", "/v1/service/tickets/x/messages"): PLATFORM | {Role.service},
    ("POST", "/v1/service/tickets/x/state"): ADMIN | {Role.service},
    ("POST", "/v1/service/tickets/x/reopen"): PLATFORM | {Role.service},
    ("POST", "/v1/service/tickets/x/merge"): ADMIN | {Role.service},
    ("POST", "/v1/service/tickets/x/csat"): PLATFORM | {Role.service},
    ("POST", "/v1/service/tickets/x/compensations"): ADMIN | {Role.service},
    ("GET", "/v1/service/queue"): ADMIN | {Role.service},
    ("GET", "/v1/service/agents"): ANALYSTS | {Role.service},
    ("GET", "/v1/service/agents/x/tickets"): ADMIN | {Role.service},
    ("PUT", "/v1/service/agents/x"): ADMIN | {Role.operator},
    ("DELETE", "/v1/service/agents/x"): ADMIN | {Role.operator},
    ("GET", "/v1/service/approvals"): ADMIN | {Role.service},
    ("POST", "/v1/service/approvals/x"): ADMIN | {Role.service},
    ("POST", "/v1/service/after-sales"): PLATFORM | {Role.service},
    ("GET", "/v1/service/after-sales/x"): PLATFORM | {Role.service},
    ("POST", "/v1/service/after-sales/x/x"): PLATFORM | {Role.service},
    ("POST", "/v1/service/sweep"): ADMIN | {Role.operator},
    ("GET", "/v1/service/reports"): ANALYSTS | {Role.service},
    # feedback and merchants
    ("POST", "/v1/feedback/analyze"): READERS | ADMIN,
    ("GET", "/v1/feedback/topics"): READERS | ADMIN,
    ("GET", "/v1/feedback/rising"): READERS | ADMIN,
    ("GET", "/v1/merchants/scorecards"): READERS | ADMIN,
    ("GET", "/v1/merchants/x"): READERS | ADMIN,
    ("GET", "/v1/merchants/x/penalties"): READERS | ADMIN,
    ("POST", "/v1/merchants/x/penalties"): ADMIN | {Role.operator},
    ("POST", "/v1/penalties/x/appeal"): ADMIN | {Role.operator},
    ("POST", "/v1/appeals/x/decision"): ADMIN | {Role.operator},
    # the member center's signed links (console/member_endpoints.py)
    ("POST", "/v1/member-center/links"): PLATFORM,
}


def _operations(client: TestClient) -> list[tuple[str, str]]:
    """Every operation the API publishes (the OpenAPI spec is the route table's public face)."""
    spec = client.get("/openapi.json").json()
    return sorted(
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, item in spec["paths"].items()
        for method in item
    )


def test_every_route_but_health_has_a_stated_policy(client: TestClient) -> None:
    assert set(_operations(client)) == set(POLICY) | {("GET", "/health")}


def test_every_route_refuses_missing_bad_and_wrong_role_keys(
    client: TestClient, auth: Auth
) -> None:
    for method, path in _operations(client):
        if path == "/health":
            continue
        no_key = client.request(method, path, json={})
        assert (no_key.status_code, no_key.json()["code"]) == (401, "missing_api_key"), path
        bad_key = client.request(method, path, json={}, headers={"Authorization": "Bearer mw_0_x"})
        assert (bad_key.status_code, bad_key.json()["code"]) == (401, "invalid_api_key"), path
        basic = client.request(method, path, json={}, headers={"Authorization": "Basic eDp5"})
        assert basic.status_code == 401, path
        for role in Role:
            response = client.request(method, path, json={}, headers=auth(role))
            if role in POLICY[(method, path)]:
                assert response.status_code not in (401, 403), (method, path, role)
            else:
                assert (response.status_code, response.json()["code"]) == (
                    403,
                    "role_not_allowed",
                ), (method, path, role)


def test_health_needs_no_key(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_the_favicon_is_served_without_a_key_and_outside_the_api(client: TestClient) -> None:
    """Browsers ask every site's root for /favicon.ico (a 404 logged an error on every first
    page); the console's pages link the same file under their static path."""
    from memberwise.console.favicon import ICON

    icon = ICON.read_bytes()
    for path in ("/favicon.ico", "/console/static/favicon.ico"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.content == icon, path
    assert client.get("/favicon.ico").headers["content-type"] == "image/x-icon"
    assert icon[:6] == b"\x00\x00\x01\x00\x01\x00"  # an ICO file holding one image
    assert ("GET", "/favicon.ico") not in _operations(client)
    page = client.get("/console/sign-in")
    assert '<link rel="icon" href="/console/static/favicon.ico">' in page.text


def test_unknown_routes_and_bad_queries_answer_in_the_error_format(
    client: TestClient, auth: Auth
) -> None:
    missing = client.get("/v1/nothing-here", headers=auth(Role.admin))
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    # Without a key nothing under /v1 is told apart, a route or not.
    anonymous = client.get("/v1/nothing-here")
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "missing_api_key")
    bad = client.get("/v1/members?limit=0", headers=auth(Role.admin))
    assert bad.status_code == 422
    assert bad.json()["code"] == "invalid_request"
    assert bad.json()["message"].startswith("query.limit:")


def test_docs_are_served_from_bundled_assets(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn.jsdelivr.net" not in page.text and "unpkg.com" not in page.text
    spec = client.get("/openapi.json").json()
    assert "/v1/events" in spec["paths"]
    body = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["events"]["maxItems"] == 10_000


@pytest.mark.parametrize("role", [Role.operator, Role.platform])
def test_me_tells_the_caller_who_they_are(client: TestClient, auth: Auth, role: Role) -> None:
    response = client.get("/v1/me", headers=auth(role))
    assert response.status_code == 200
    assert response.json()["role"] == role.value
