"""Finding a member by id, phone or email through keyed hashes (the console's search)."""

from __future__ import annotations

from sqlalchemy import Connection, select, update

from memberwise.members import service
from memberwise.members.schemas import MemberUpdate
from memberwise.members.tables import members
from memberwise.privacy.schemas import SYSTEM
from memberwise.runtime import Runtime
from tests.members.factories import create_member


def test_a_member_is_found_by_id_phone_and_email_in_any_spelling(
    conn: Connection, runtime: Runtime
) -> None:
    create_member(conn, runtime.cipher, "m1", phone="13912345678", email="WF@example.com")
    create_member(conn, runtime.cipher, "m2", phone="13800000000", email="other@example.com")
    for query in ("m1", "13912345678", "+86 139-1234-5678", "wf@EXAMPLE.com ", "8613912345678"):
        assert service.find_member(conn, runtime.cipher, query) == "m1", query
    assert service.find_member(conn, runtime.cipher, "13999999999") is None
    assert service.find_member(conn, runtime.cipher, "") is None


def test_the_store_keeps_hashes_never_the_values(conn: Connection, runtime: Runtime) -> None:
    create_member(conn, runtime.cipher, "m1", phone="13912345678", email="wf@example.com")
    row = conn.execute(select(members).where(members.c.member_id == "m1")).mappings().one()
    assert len(row["phone_hash"]) == len(row["email_hash"]) == 64
    assert "13912345678" not in str(dict(row)) and "wf@example.com" not in str(dict(row))


def test_a_changed_phone_is_found_by_its_new_value_only(conn: Connection, runtime: Runtime) -> None:
    create_member(conn, runtime.cipher, "m1", phone="13912345678")
    service.update_member(
        conn, runtime.cipher, "m1", MemberUpdate(phone="13700000000"), actor=SYSTEM
    )
    assert service.find_member(conn, runtime.cipher, "13700000000") == "m1"
    assert service.find_member(conn, runtime.cipher, "13912345678") is None


def test_two_members_sharing_a_phone_are_not_guessed_between(
    conn: Connection, runtime: Runtime
) -> None:
    create_member(conn, runtime.cipher, "m1", phone="13912345678", email="a@example.com")
    create_member(conn, runtime.cipher, "m2", phone="13912345678", email="b@example.com")
    assert service.find_member(conn, runtime.cipher, "13912345678") is None
    assert service.find_member(conn, runtime.cipher, "b@example.com") == "m2"


def test_members_registered_before_the_hashes_are_indexed_once(
    conn: Connection, runtime: Runtime
) -> None:
    create_member(conn, runtime.cipher, "m1", phone="13912345678", email="wf@example.com")
    create_member(conn, runtime.cipher, "m2", phone=None, email=None, name=None)
    conn.execute(update(members).values(phone_hash=None, email_hash=None))
    assert service.find_member(conn, runtime.cipher, "13912345678") is None
    assert service.index_contacts(conn, runtime.cipher) == 1
    assert service.index_contacts(conn, runtime.cipher) == 0
    assert service.find_member(conn, runtime.cipher, "wf@example.com") == "m1"
