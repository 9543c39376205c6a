from __future__ import annotations

import pytest
from sqlalchemy import Connection, func, select

from memberwise.members import service
from memberwise.members.schemas import MemberCreate, MemberSource, MemberStatus, MemberUpdate
from memberwise.members.tables import members
from memberwise.privacy.schemas import SYSTEM, Principal, Role
from memberwise.privacy.tables import audit_log
from memberwise.runtime import Runtime
from tests.members.factories import create_member

OPERATOR = Principal(key_id="op", role=Role.operator, name="op")
SERVICE = Principal(key_id="sv", role=Role.service, name="sv")


def _actions(conn: Connection) -> list[tuple[str, str | None, str]]:
    rows = conn.execute(
        select(audit_log.c.action, audit_log.c.member_id, audit_log.c.actor).order_by(
            audit_log.c.audit_id
        )
    ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_registering_a_member_seals_pii_and_audits(conn: Connection, runtime: Runtime) -> None:
    member = create_member(conn, runtime.cipher, "m1")
    assert (member.member_id, member.status, member.source, member.version) == (
        "m1",
        MemberStatus.active,
        MemberSource.registered,
        1,
    )
    assert member.pii is None
    row = conn.execute(select(members)).mappings().one()
    assert "王芳".encode() not in row["name_enc"]
    assert b"13912345678" not in row["phone_enc"]
    assert _actions(conn) == [("member.create", "m1", "system")]


def test_replaying_a_registration_changes_nothing(conn: Connection, runtime: Runtime) -> None:
    first = create_member(conn, runtime.cipher, "m1")
    again, changed = service.create_member(
        conn,
        runtime.cipher,
        MemberCreate(
            member_id="m1", name="王芳", phone="13912345678", email="wf@example.com", region="浙江"
        ),
        actor=SYSTEM,
    )
    assert changed is False
    assert again == first
    assert len(_actions(conn)) == 1


def test_registering_again_with_other_values_is_a_conflict(
    conn: Connection, runtime: Runtime
) -> None:
    create_member(conn, runtime.cipher, "m1")
    with pytest.raises(service.MemberExists):
        service.create_member(
            conn, runtime.cipher, MemberCreate(member_id="m1", name="李四"), actor=SYSTEM
        )
    opened = service.get_member(conn, runtime.cipher, "m1", actor=SYSTEM).pii
    assert opened is not None and opened.name == "王芳"


def test_pii_is_shown_and_audited_only_for_pii_roles(conn: Connection, runtime: Runtime) -> None:
    create_member(conn, runtime.cipher, "m1")
    as_operator = service.get_member(conn, runtime.cipher, "m1", actor=OPERATOR)
    as_service = service.get_member(conn, runtime.cipher, "m1", actor=SERVICE)
    assert as_operator.pii is None
    assert as_service.pii is not None
    assert (as_service.pii.name, as_service.pii.phone, as_service.pii.email) == (
        "王芳",
        "13912345678",
        "wf@example.com",
    )
    assert _actions(conn) == [("member.create", "m1", "system"), ("member.pii_read", "m1", "sv")]


def test_update_changes_only_given_fields_and_bumps_version(
    conn: Connection, runtime: Runtime
) -> None:
    create_member(conn, runtime.cipher, "m1")
    updated = service.update_member(
        conn, runtime.cipher, "m1", MemberUpdate(phone="13700000000", city=None), actor=SYSTEM
    )
    assert (updated.version, updated.region, updated.city) == (2, "浙江", None)
    pii = service.get_member(conn, runtime.cipher, "m1", actor=SYSTEM).pii
    assert pii is not None and (pii.name, pii.phone) == ("王芳", "13700000000")
    audit = conn.execute(
        select(audit_log.c.details).where(audit_log.c.action == "member.update")
    ).scalar_one()
    assert audit == {"fields": ["city", "phone"]}


def test_updating_an_unknown_member_is_not_found_and_writes_nothing(
    conn: Connection, runtime: Runtime
) -> None:
    with pytest.raises(service.MemberNotFound):
        service.update_member(conn, runtime.cipher, "nope", MemberUpdate(city="杭州"), actor=SYSTEM)
    assert _actions(conn) == []


def test_members_seen_in_events_get_a_record_once(conn: Connection, runtime: Runtime) -> None:
    assert service.ensure_members(conn, ["a", "b", "a"], actor=SYSTEM) == 2
    assert service.ensure_members(conn, ["b", "c"], actor=SYSTEM) == 1
    rows = conn.execute(select(members.c.member_id, members.c.source).order_by("member_id")).all()
    assert [tuple(r) for r in rows] == [("a", "events"), ("b", "events"), ("c", "events")]
    assert [a for a, _, _ in _actions(conn)] == ["member.autocreate"] * 3


def test_members_registered_in_order_get_audit_ids_in_the_same_order(
    conn: Connection, runtime: Runtime
) -> None:
    ids = [f"m{i:03d}" for i in range(300)]
    assert service.ensure_members(conn, ids, actor=SYSTEM) == 300
    rows = conn.execute(
        select(audit_log.c.audit_id, audit_log.c.member_id).order_by(audit_log.c.audit_id)
    ).all()
    assert [m for _, m in rows] == ids  # both indexes take the rows in order
    assert len({a for a, _ in rows}) == 300
    assert all(len(a) == 32 and int(a, 16) >= 0 for a, _ in rows)  # new_id()'s shape


def test_a_member_seen_in_events_becomes_registered(conn: Connection, runtime: Runtime) -> None:
    service.ensure_members(conn, ["m9"], actor=SYSTEM)
    member = create_member(conn, runtime.cipher, "m9")
    assert (member.source, member.version) == (MemberSource.registered, 2)
    assert [a for a, _, _ in _actions(conn)] == ["member.autocreate", "member.register"]


def test_list_pages_through_members_in_id_order(conn: Connection, runtime: Runtime) -> None:
    service.ensure_members(conn, [f"m{i:02d}" for i in range(7)], actor=SYSTEM)
    first = service.list_members(conn, limit=3)
    second = service.list_members(conn, limit=3, after=first.next_cursor)
    third = service.list_members(conn, limit=3, after=second.next_cursor)
    assert [m.member_id for m in first.items] == ["m00", "m01", "m02"]
    assert [m.member_id for m in second.items] == ["m03", "m04", "m05"]
    assert [m.member_id for m in third.items] == ["m06"]
    assert third.next_cursor is None


def test_import_is_idempotent(conn: Connection, runtime: Runtime) -> None:
    service.ensure_members(conn, ["b"], actor=SYSTEM)
    records = [
        {"member_id": "a", "name": "甲", "region": "上海"},
        {"member_id": "b", "name": "乙", "phone": "13800000001"},
    ]
    first = service.import_members(conn, runtime.cipher, records, actor=SYSTEM)
    second = service.import_members(conn, runtime.cipher, records, actor=SYSTEM)
    assert (first.created, first.registered, first.unchanged) == (1, 1, 0)
    assert (second.created, second.registered, second.unchanged) == (0, 0, 2)
    assert conn.execute(select(func.count()).select_from(members)).scalar_one() == 2


def test_credit_stars_are_imported_and_read_by_the_build(
    conn: Connection, runtime: Runtime
) -> None:
    records = [
        {"member_id": "a", "region": "上海", "credit_stars": 6},
        {"member_id": "b"},
    ]
    service.import_members(conn, runtime.cipher, records, actor=SYSTEM)

    attributes = service.analytics_attributes(conn).sort_by("member_id").to_pylist()

    assert service.get_member(conn, runtime.cipher, "a", actor=SYSTEM).credit_stars == 6
    assert attributes == [
        {"member_id": "a", "region": "上海", "credit_stars": 6},
        {"member_id": "b", "region": None, "credit_stars": None},
    ]


def test_credit_stars_outside_0_to_7_are_refused() -> None:
    with pytest.raises(ValueError, match="credit_stars"):
        MemberCreate(member_id="a", credit_stars=9)
