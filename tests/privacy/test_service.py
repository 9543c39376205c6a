from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Connection, Engine, func, select

from memberwise.kit.db import transaction
from memberwise.privacy import service
from memberwise.privacy.schemas import KeyCreate, Principal, Role, StaffCreate
from memberwise.privacy.tables import api_keys, audit_log


def test_a_created_key_verifies_to_its_role_and_is_stored_only_as_a_hash(engine: Engine) -> None:
    with transaction(engine) as conn:
        created = service.create_key(conn, KeyCreate(role=Role.operator, name="Ann"))
        row = conn.execute(select(api_keys)).mappings().one()
    assert created.key.startswith(f"mw_{created.key_id}_")
    assert created.key.split("_", 2)[2] not in row["secret_hash"]
    assert row["secret_hash"].startswith("$argon2id$")
    principal = service.KeyVerifier(engine, ttl=60).verify(created.key)
    assert (principal.key_id, principal.role, principal.name) == (
        created.key_id,
        Role.operator,
        "Ann",
    )


@pytest.mark.parametrize(
    ("key", "error"),
    [
        (None, service.MissingKey),
        ("", service.MissingKey),
        ("not-a-key", service.InvalidKey),
        ("mw_ffffffffffff_secret", service.InvalidKey),
    ],
)
def test_missing_malformed_and_unknown_keys_are_refused(
    engine: Engine, key: str | None, error: type[Exception]
) -> None:
    with pytest.raises(error):
        service.KeyVerifier(engine, ttl=60).verify(key)


def test_a_wrong_secret_for_a_real_key_id_is_refused(engine: Engine) -> None:
    with transaction(engine) as conn:
        created = service.create_key(conn, KeyCreate(role=Role.admin))
    with pytest.raises(service.InvalidKey):
        service.KeyVerifier(engine, ttl=60).verify(f"mw_{created.key_id}_wrong")


def test_revocation_takes_effect_at_once_in_the_process_that_revokes(engine: Engine) -> None:
    verifier = service.KeyVerifier(engine, ttl=3600)
    with transaction(engine) as conn:
        created = service.create_key(conn, KeyCreate(role=Role.platform))
    verifier.verify(created.key)  # now cached
    with transaction(engine) as conn:
        service.revoke_key(conn, created.key_id, verifier=verifier)
    with pytest.raises(service.InvalidKey):
        verifier.verify(created.key)


def test_revoking_an_unknown_or_revoked_key_is_a_not_found(engine: Engine) -> None:
    with transaction(engine) as conn:
        created = service.create_key(conn, KeyCreate(role=Role.platform))
        service.revoke_key(conn, created.key_id)
    with transaction(engine) as conn, pytest.raises(service.KeyNotFound):
        service.revoke_key(conn, created.key_id)


def test_key_creation_and_revocation_are_audited(conn: Connection) -> None:
    created = service.create_key(conn, KeyCreate(role=Role.analyst))
    service.revoke_key(conn, created.key_id)
    rows = conn.execute(
        select(audit_log.c.action, audit_log.c.subject_id).order_by(audit_log.c.audit_id)
    ).all()
    assert [tuple(r) for r in rows] == [
        ("api_key.create", created.key_id),
        ("api_key.revoke", created.key_id),
    ]


def test_unknown_staff_is_refused_and_nothing_is_written(conn: Connection) -> None:
    with pytest.raises(service.StaffNotFound):
        service.create_key(conn, KeyCreate(role=Role.service, staff_id="nobody"))
    assert conn.execute(select(func.count()).select_from(api_keys)).scalar_one() == 0


def test_admin_is_allowed_everywhere_and_other_roles_only_where_listed() -> None:
    admin = Principal(key_id="a", role=Role.admin, name="a")
    operator = Principal(key_id="o", role=Role.operator, name="o")
    service.authorize(admin, frozenset())
    service.authorize(operator, frozenset({Role.operator}))
    with pytest.raises(service.RoleNotAllowed):
        service.authorize(operator, frozenset({Role.platform}))


def test_staff_accounts_are_created_once_and_keys_can_belong_to_them(conn: Connection) -> None:
    person = service.create_staff(conn, StaffCreate(staff_id="s1", name="李娜", role=Role.service))
    again = service.create_staff(conn, StaffCreate(staff_id="s1", name="李娜", role=Role.service))
    assert again == person
    with pytest.raises(service.StaffExists):
        service.create_staff(conn, StaffCreate(staff_id="s1", name="别人", role=Role.admin))
    key = service.create_key(conn, KeyCreate(role=Role.service, staff_id="s1"))
    assert [k.staff_id for k in service.list_keys(conn)] == ["s1"]
    assert [s.staff_id for s in service.list_staff(conn)] == ["s1"]
    actions = conn.execute(select(audit_log.c.action).order_by(audit_log.c.audit_id)).scalars()
    assert list(actions) == ["staff.create", "api_key.create"]
    assert key.role is Role.service


class CountingHasher:
    """The real argon2 hasher, counting its verifications."""

    def __init__(self, hasher: PasswordHasher) -> None:
        self.hasher = hasher
        self.calls = 0

    def hash(self, secret: str) -> str:
        return self.hasher.hash(secret)

    def verify(self, stored: str, secret: str) -> bool:
        self.calls += 1
        return self.hasher.verify(stored, secret)


@pytest.fixture
def hasher(monkeypatch: pytest.MonkeyPatch) -> CountingHasher:
    counting = CountingHasher(service._hasher)
    monkeypatch.setattr(service, "_hasher", counting)
    return counting


def test_a_key_seen_before_is_checked_again_without_argon2_and_revocation_still_counts(
    engine: Engine, hasher: CountingHasher
) -> None:
    with transaction(engine) as conn:
        created = service.create_key(conn, KeyCreate(role=Role.platform))
    verifier = service.KeyVerifier(engine, ttl=0)  # trusted for no time: every call re-checks
    for _ in range(3):
        assert verifier.verify(created.key).key_id == created.key_id
    assert hasher.calls == 1
    assert verifier.cached(created.key) is None
    # Revoked by another process (this verifier is not told): the next re-check refuses it.
    with transaction(engine) as conn:
        service.revoke_key(conn, created.key_id)
    with pytest.raises(service.InvalidKey):
        verifier.verify(created.key)
    with pytest.raises(service.InvalidKey):
        verifier.verify(f"mw_{created.key_id}_wrong")


def test_concurrent_first_uses_of_a_key_verify_it_once(
    engine: Engine, hasher: CountingHasher
) -> None:
    with transaction(engine) as conn:
        created = service.create_key(conn, KeyCreate(role=Role.analyst))
    verifier = service.KeyVerifier(engine, ttl=60)
    start = threading.Barrier(16)

    def use() -> Principal:
        start.wait()
        return verifier.verify(created.key)

    with ThreadPoolExecutor(16) as pool:
        principals = list(pool.map(lambda _: use(), range(16)))
    assert {p.key_id for p in principals} == {created.key_id}
    assert hasher.calls == 1
    assert verifier.cached(created.key) == principals[0]
