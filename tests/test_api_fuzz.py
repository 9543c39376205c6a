"""A bounded property-based fuzz of the whole API (schemathesis over the app's own OpenAPI).

Every operation gets generated requests, valid and invalid, sent with an admin or a platform
key, and with path ids that half the time name real rows of a small seeded store (members, an
order, an item, a subscription, staff). A request fails the test when the app answers 5xx or
when its answer does not match the schema the app documents for that status. It runs in the
normal suite (SQLite) with derandomized, bounded examples, so a failure is reproducible and the
whole fuzz takes about a minute.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import response_schema_conformance

from memberwise.app import create_app
from memberwise.config import Settings
from memberwise.kit.db import transaction
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import KeyCreate, Role
from memberwise.runtime import Runtime
from tests.conftest import TEST_PII_KEY

PROGRAM = Path(__file__).resolve().parents[1] / "programs" / "demo.yaml"
#: Examples per operation (each of ~50 operations); derandomized, so CI sees the same ones.
EXAMPLES = 30

#: Path parameters that name real rows of the seeded store, filled in by ``fuzz_app``.
REAL_IDS: dict[str, list[str]] = {}
KEYS: dict[Role, str] = {}


def _seed(client: TestClient, admin: dict[str, str], platform: dict[str, str]) -> None:
    """A few members, an item, orders (one refunded in part), a subscription and staff."""
    members = ["m_1", "m_2", "vip.3"]
    for member_id in members:
        body = {"member_id": member_id, "name": "王芳", "phone": "13912345678", "region": "浙江"}
        assert client.post("/v1/members", json=body, headers=platform).status_code == 201
    item = {"title": "tea", "category_id": "food", "price": 3900, "brand": "b1"}
    assert client.put("/v1/items/i_1", json=item, headers=platform).status_code == 200
    for n, member_id in enumerate(members):
        order = {
            "order_id": f"o_{n}",
            "member_id": member_id,
            "items": [{"item_id": "i_1", "category": "food", "price": 3900, "quantity": 2}],
        }
        assert client.post("/v1/orders", json=order, headers=platform).status_code == 201
    refund = {"refund_id": "r_0", "amount": 1000}
    assert client.post("/v1/orders/o_0/refunds", json=refund, headers=platform).status_code in (
        200,
        201,
    )
    sub = client.post("/v1/members/m_2/subscriptions", json={"plan": "88vip"}, headers=platform)
    assert sub.status_code in (200, 201), sub.text
    staff = {"staff_id": "s_1", "name": "Li Lei", "role": "service"}
    assert client.post("/v1/staff", json=staff, headers=admin).status_code in (200, 201)
    REAL_IDS.update(
        member_id=members,
        order_id=["o_0", "o_1", "o_2"],
        item_id=["i_1"],
        refund_id=["r_0"],
        subscription_id=[sub.json()["subscription_id"]],
        staff_id=["s_1"],
    )


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Any]:
    """A client of the app on a seeded SQLite store, with an admin, a platform and a spare key."""
    home = tmp_path_factory.mktemp("fuzz")
    shutil.copy(sqlite_template, home / "store.sqlite")
    rt = Runtime.open(
        Settings(
            home=home,
            database_url=f"sqlite:///{home / 'store.sqlite'}",
            pii_key=TEST_PII_KEY,  # type: ignore[arg-type]
            program_file=PROGRAM,
        )
    )
    with transaction(rt.engine) as conn:
        for role in (Role.admin, Role.platform):
            KEYS[role] = privacy.create_key(conn, KeyCreate(role=role, name="fuzz")).key
        spare = privacy.create_key(conn, KeyCreate(role=Role.operator, name="spare"))
    app = create_app(runtime=rt)
    with TestClient(app) as seeder:
        _seed(
            seeder,
            {"Authorization": f"Bearer {KEYS[Role.admin]}"},
            {"Authorization": f"Bearer {KEYS[Role.platform]}"},
        )
    REAL_IDS["key_id"] = [spare.key_id]
    with asgi.get_client(app) as client:
        yield client
    rt.close()


def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
    """Half of the time, a path id names a real row, so the deeper code paths run too."""
    if not path_parameters:
        return st.just(path_parameters)
    choices = {
        name: st.sampled_from([value, *REAL_IDS[name]]) if name in REAL_IDS else st.just(value)
        for name, value in path_parameters.items()
    }
    return st.fixed_dictionaries(choices)


#: Body fields that name rows; a generated body names a real one half of the time.
BODY_IDS = {"member_id": "member_id", "order_id": "order_id", "item_id": "item_id"}


def _real(value: Any, kind: str) -> Any:
    return st.sampled_from([value, *REAL_IDS[kind]]) if kind in REAL_IDS else st.just(value)


def flatmap_body(context: Any, body: Any) -> Any:
    """Half of the time, a body's ``member_id`` (or order, item) names a real row, so orders,
    quotes and awards get past "no such member" and into the ledgers."""
    if not isinstance(body, dict):
        return st.just(body)
    fields = {
        name: _real(value, BODY_IDS[name])
        if name in BODY_IDS and isinstance(value, str)
        else st.just(value)
        for name, value in body.items()
    }
    return st.fixed_dictionaries(fields)


def _spec() -> dict[str, Any]:
    """The app's OpenAPI document (it does not depend on the store or the program)."""
    with tempfile.TemporaryDirectory() as home:
        rt = Runtime.open(Settings(home=Path(home), database_url="sqlite://", pii_key=TEST_PII_KEY))  # type: ignore[arg-type]
        try:
            return create_app(runtime=rt).openapi()
        finally:
            rt.close()


# Loaded at import (not from a fixture: schemathesis' lazy loader does not run on pytest 9);
# requests go to the seeded app through the fixture's client.
schema = schemathesis.openapi.from_dict(_spec())
schema.hook(flatmap_path_parameters)
schema.hook(flatmap_body)


def _key_for(case: Any) -> str:
    """An admin key or a platform key, chosen by the case's content (reproducible)."""
    seed = repr((case.path_parameters, case.query, case.body)).encode()
    role = Role.admin if hashlib.sha256(seed).digest()[0] % 2 else Role.platform
    return KEYS[role]


def _operations() -> dict[str, Any]:
    found = {}
    for result in schema.get_all_operations():
        operation = result.ok()  # raises on an operation the schema cannot describe
        found[f"{operation.method.upper()} {operation.path}"] = operation
    return found


#: Every operation of the API, by "METHOD /path". A plain parametrize (not schemathesis'
#: pytest plugin), so each operation is its own test under xdist and a failure fails the suite.
OPERATIONS = _operations()


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_no_request_gets_a_5xx_or_an_undocumented_answer(operation: str, fuzz_client: Any) -> None:
    api = OPERATIONS[operation]
    cases = st.one_of(
        api.as_strategy(GenerationMode.POSITIVE, hooks=schema.hooks),
        api.as_strategy(GenerationMode.NEGATIVE, hooks=schema.hooks),
    )

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def no_5xx(case: Any) -> None:
        case.call_and_validate(
            session=fuzz_client,
            base_url="http://localhost",
            headers={"Authorization": f"Bearer {_key_for(case)}"},
            checks=[not_a_server_error, response_schema_conformance],
        )

    no_5xx()
