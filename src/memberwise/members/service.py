"""Register, update, read and list members; create records for members first seen in events.

PII (name, phone, email) is sealed with the runtime's cipher before it reaches the store and
opened only for principals allowed to read it, each such read leaving an audit row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
from sqlalchemy import Connection, RowMapping

from memberwise.kit.cache import BoundedSet
from memberwise.kit.errors import Conflict, NotFound
from memberwise.kit.ids import is_valid_id
from memberwise.kit.pagination import Page, decode_cursor, encode_cursor
from memberwise.kit.time import as_utc, utcnow
from memberwise.members import repository
from memberwise.members.schemas import (
    PII_FIELDS,
    ImportResult,
    MemberCreate,
    MemberFields,
    MemberOut,
    MemberPII,
    MemberSource,
    MemberStatus,
    MemberUpdate,
)
from memberwise.privacy import keys
from memberwise.privacy import service as privacy
from memberwise.privacy.crypto import FieldCipher
from memberwise.privacy.schemas import Principal

#: Ids per statement when creating members seen in events (bounds one statement's work).
_CHUNK = 10_000


class MemberNotFound(NotFound):
    code = "member_not_found"


class MemberExists(Conflict):
    code = "member_exists"


class ConcurrentUpdate(Conflict):
    code = "concurrent_update"


def _context(member_id: str, field: str) -> str:
    return f"members.{field}:{member_id}"


def _seal_fields(cipher: FieldCipher, member_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """Column values for ``data``: PII sealed into ``<field>_enc``, the rest as given."""
    values: dict[str, Any] = {}
    for field, value in data.items():
        if field in PII_FIELDS:
            values[f"{field}_enc"] = (
                None if value is None else cipher.seal(value, context=_context(member_id, field))
            )
        elif field == "registered_at" and value is not None:
            values[field] = as_utc(value)
        else:
            values[field] = value
    return values


#: The PII fields a member can be found by, each with its normaliser.
CONTACT_FIELDS = ("phone", "email")


def normalise_contact(kind: str, value: str) -> str:
    """The form a phone or email is hashed in: digits only for a phone, lower case for an
    email (so ``+86 139-1234-5678`` and ``8613912345678`` match)."""
    if kind == "phone":
        digits = "".join(ch for ch in value if ch.isdigit())
        return digits[2:] if len(digits) == 13 and digits.startswith("86") else digits
    return value.strip().lower()


def _contact_hashes(master: FieldCipher, data: dict[str, Any]) -> dict[str, str | None]:
    """``phone_hash``/``email_hash`` for the contact fields present in ``data``, under the PII
    key itself (one key for everyone: a lookup must not need to know the member first)."""
    return {
        f"{kind}_hash": None
        if data[kind] is None
        else master.lookup(normalise_contact(kind, data[kind]), kind=kind)
        for kind in CONTACT_FIELDS
        if kind in data
    }


def _open_pii(cipher: FieldCipher, row: RowMapping) -> MemberPII:
    member_id = row["member_id"]
    opened: dict[str, str | None] = {}
    for field in PII_FIELDS:
        sealed = row[f"{field}_enc"]
        opened[field] = (
            None if sealed is None else cipher.open(sealed, context=_context(member_id, field))
        )
    return MemberPII(**opened)


def _no_pii(row: RowMapping) -> bool:
    """True when the row holds no sealed PII yet (so it may get a key of its own: PII sealed
    earlier under the PII key itself stays readable)."""
    return all(row[f"{field}_enc"] is None for field in PII_FIELDS)


def _out(row: RowMapping, pii: MemberPII | None = None) -> MemberOut:
    fields = {k: row[k] for k in MemberOut.model_fields if k != "pii"}
    return MemberOut(**fields, pii=pii)


def _same(cipher: FieldCipher, row: RowMapping, data: MemberFields) -> bool:
    """True when every field the request sets already has that value (an idempotent replay)."""
    pii = _open_pii(cipher, row)
    for field in data.model_fields_set:
        wanted = getattr(data, field)
        have = getattr(pii, field) if field in PII_FIELDS else row[field]
        if isinstance(wanted, datetime) and wanted is not None:
            wanted = as_utc(wanted)
        if wanted != have:
            return False
    return True


def create_member(
    conn: Connection, cipher: FieldCipher, data: MemberCreate, *, actor: Principal
) -> tuple[MemberOut, bool]:
    """Register a member; returns it and whether anything changed.

    A member first seen in events becomes registered. Repeating a registration with the same
    values changes nothing (safe to retry). Raises MemberExists when the member is registered
    already with different values (use PATCH to change them).
    """
    fields = data.model_dump(exclude={"member_id"}, exclude_unset=True)
    row = repository.get(conn, data.member_id)
    now = utcnow()
    hashes = _contact_hashes(cipher, fields)
    # The member's PII is sealed under their own key (shredded when they are erased).
    cipher = keys.member_cipher(conn, cipher, data.member_id, create=row is None or _no_pii(row))
    if row is None:
        values = {
            "member_id": data.member_id,
            "status": MemberStatus.active.value,
            "source": MemberSource.registered.value,
            "created_at": now,
            "updated_at": now,
            "version": 1,
            **_seal_fields(cipher, data.member_id, fields),
            **hashes,
        }
        values.setdefault("registered_at", now)
        repository.insert_one(conn, values)
        privacy.audit(
            conn,
            actor,
            "member.create",
            "member",
            data.member_id,
            member_id=data.member_id,
            details={"fields": sorted(fields)},
        )
        created = repository.get(conn, data.member_id)
        assert created is not None
        return _out(created), True
    if row["source"] == MemberSource.registered.value:
        if _same(cipher, row, data):
            return _out(row), False
        raise MemberExists(
            f"member {data.member_id!r} is already registered with other values; "
            "use PATCH /v1/members/{member_id} to change them"
        )
    values = {"source": MemberSource.registered.value, "updated_at": now, **hashes}
    values.update(_seal_fields(cipher, data.member_id, fields))
    values.setdefault("registered_at", now)
    if not repository.update_one(conn, data.member_id, row["version"], values):
        raise ConcurrentUpdate(f"member {data.member_id!r} changed meanwhile; retry")
    privacy.audit(
        conn,
        actor,
        "member.register",
        "member",
        data.member_id,
        member_id=data.member_id,
        details={"fields": sorted(fields)},
    )
    updated = repository.get(conn, data.member_id)
    assert updated is not None
    return _out(updated), True


def update_member(
    conn: Connection, cipher: FieldCipher, member_id: str, data: MemberUpdate, *, actor: Principal
) -> MemberOut:
    """Change the fields present in ``data``. Raises MemberNotFound, ConcurrentUpdate."""
    row = repository.get(conn, member_id)
    if row is None:
        raise MemberNotFound(f"no member {member_id!r}")
    master = cipher
    cipher = keys.member_cipher(conn, cipher, member_id, create=_no_pii(row))
    fields = data.model_dump(exclude_unset=True)
    if not fields or _same(cipher, row, data):
        return _out(row)
    if "status" in fields and fields["status"] is None:
        fields.pop("status")
    values = {**_seal_fields(cipher, member_id, fields), **_contact_hashes(master, fields)}
    values["updated_at"] = utcnow()
    if not repository.update_one(conn, member_id, row["version"], values):
        raise ConcurrentUpdate(f"member {member_id!r} changed meanwhile; retry")
    # The audit names the changed fields, never their values: the log must not leak PII.
    privacy.audit(
        conn,
        actor,
        "member.update",
        "member",
        member_id,
        member_id=member_id,
        details={"fields": sorted(fields)},
    )
    updated = repository.get(conn, member_id)
    assert updated is not None
    return _out(updated)


def get_member(
    conn: Connection, cipher: FieldCipher, member_id: str, *, actor: Principal
) -> MemberOut:
    """A member, with PII when the caller may read it (and an audit row for that read).

    Raises MemberNotFound.
    """
    row = repository.get(conn, member_id)
    if row is None:
        raise MemberNotFound(f"no member {member_id!r}")
    if not actor.can_read_pii:
        return _out(row)
    privacy.audit(conn, actor, "member.pii_read", "member", member_id, member_id=member_id)
    return _out(row, _open_pii(keys.member_cipher(conn, cipher, member_id), row))


def find_member(conn: Connection, cipher: FieldCipher, query: str) -> str | None:
    """The id of the member ``query`` names: their member id, or their phone or email found
    through its keyed hash (the value itself is never searched for in clear); None when no
    member, or more than one, matches. ``cipher`` is the PII key's."""
    query = query.strip()
    if is_valid_id(query) and repository.exists(conn, query):
        return query
    kind = "email" if "@" in query else "phone"
    value = normalise_contact(kind, query)
    if not value:
        return None
    found = repository.find_by_hash(conn, kind, cipher.lookup(value, kind=kind))
    return found[0] if len(found) == 1 else None


def index_contacts(conn: Connection, cipher: FieldCipher, *, batch: int = 1000) -> int:
    """Give members registered before contact hashes existed their ``phone_hash`` and
    ``email_hash`` (idempotent); returns how many members were indexed."""
    done = 0
    while rows := repository.unindexed_contacts(conn, limit=batch):
        for row in rows:
            pii = _open_pii(keys.member_cipher(conn, cipher, row["member_id"]), row)
            hashes = _contact_hashes(cipher, {"phone": pii.phone, "email": pii.email})
            # A member without either still gets a marker, so the loop moves past them.
            repository.set_contact_hashes(
                conn,
                row["member_id"],
                phone_hash=hashes["phone_hash"] or "-",
                email_hash=hashes["email_hash"] or "-",
            )
            done += 1
    return done


def list_members(
    conn: Connection,
    *,
    limit: int,
    after: str | None = None,
    source: MemberSource | None = None,
    region: str | None = None,
) -> Page[MemberOut]:
    """Members ordered by id, one page at a time, without PII."""
    rows = repository.page(
        conn,
        limit=limit + 1,
        after=decode_cursor(after),
        source=source.value if source else None,
        region=region,
    )
    items = [_out(r) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].member_id) if len(rows) > limit else None
    return Page[MemberOut](items=items, next_cursor=next_cursor)


def ensure_members(
    conn: Connection,
    member_ids: Iterable[str],
    *,
    actor: Principal,
    known: BoundedSet | None = None,
) -> int:
    """Give every member seen in events a record; returns how many were new.

    ``known`` (optional) remembers ids already in the store so hot paths skip asking again.
    Idempotent: ids that exist are left alone. Each new record gets an audit row. A
    concurrent transaction creating the same member makes this one wait and skip it.
    """
    wanted = [m for m in dict.fromkeys(member_ids) if known is None or m not in known]
    created: list[str] = []
    now = utcnow()
    for start in range(0, len(wanted), _CHUNK):
        created += repository.insert_seen(conn, wanted[start : start + _CHUNK], now)
    if known is not None:
        # Only ids that existed before this transaction: a record created here is not certain
        # until commit (members are never deleted, so an existing id stays true).
        new = set(created)
        known.add_all(m for m in wanted if m not in new)
    privacy.audit_members(conn, actor, "member.autocreate", created)
    return len(created)


def import_members(
    conn: Connection, cipher: FieldCipher, records: Sequence[dict[str, Any]], *, actor: Principal
) -> ImportResult:
    """Register many members at once (e.g. the demo platform's members file).

    New ids are created, members known only from events become registered, and registered
    members are left unchanged, so running an import twice is a no-op.
    """
    parsed = [MemberCreate.model_validate(r) for r in records]
    existing = repository.get_many(conn, [p.member_id for p in parsed])
    fresh = [
        p.member_id
        for p in parsed
        if (row := existing.get(p.member_id)) is None
        or (row["source"] != MemberSource.registered.value and _no_pii(row))
    ]
    ciphers = keys.member_ciphers(conn, cipher, fresh, create=True)
    now = utcnow()
    inserts: list[dict[str, Any]] = []
    audits: list[dict[str, Any]] = []
    registered = unchanged = 0
    for p in parsed:
        fields = p.model_dump(exclude={"member_id"}, exclude_unset=True)
        row = existing.get(p.member_id)
        if row is not None and row["source"] == MemberSource.registered.value:
            unchanged += 1
            continue
        sealed = {
            **_seal_fields(ciphers.get(p.member_id, cipher), p.member_id, fields),
            **_contact_hashes(cipher, fields),
        }
        sealed.setdefault("registered_at", now)
        if row is None:
            inserts.append(
                {
                    "member_id": p.member_id,
                    "status": MemberStatus.active.value,
                    "source": MemberSource.registered.value,
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                    "name_enc": None,
                    "phone_enc": None,
                    "email_enc": None,
                    "gender": None,
                    "birth_year": None,
                    "region": None,
                    "city": None,
                    "credit_stars": None,
                    "phone_hash": None,
                    "email_hash": None,
                    **sealed,
                }
            )
            action = "member.create"
        else:
            values = {"source": MemberSource.registered.value, "updated_at": now, **sealed}
            if not repository.update_one(conn, p.member_id, row["version"], values):
                raise ConcurrentUpdate(f"member {p.member_id!r} changed meanwhile; retry")
            registered += 1
            action = "member.register"
        audits.append(
            privacy.audit_row(
                actor,
                action,
                "member",
                p.member_id,
                member_id=p.member_id,
                details={"fields": sorted(fields), "via": "import"},
            )
        )
    repository.insert_many(conn, inserts)
    privacy.audit_many(conn, audits)
    return ImportResult(created=len(inserts), registered=registered, unchanged=unchanged)


def analytics_attributes(conn: Connection) -> pa.Table:
    """Registered attributes the build joins to behaviour: member_id, region, credit_stars."""
    ids, regions, stars = [], [], []
    for member_id, region, credit_stars in repository.attribute_rows(conn):
        ids.append(member_id)
        regions.append(region)
        stars.append(credit_stars)
    return pa.table(
        {
            "member_id": pa.array(ids, pa.string()),
            "region": pa.array(regions, pa.string()),
            "credit_stars": pa.array(stars, pa.int32()),
        }
    )


def forget_member(conn: Connection, member_id: str) -> int:
    """Delete the member's record (erasure: their PII is shredded with their key); 1 if found."""
    return repository.delete(conn, member_id)


def export_member(conn: Connection, cipher: FieldCipher, member_id: str) -> dict[str, Any] | None:
    """The member's record with opened PII, for their own copy of their data (audited)."""
    row = repository.get(conn, member_id)
    if row is None:
        return None
    from memberwise.privacy.schemas import SYSTEM

    member = get_member(conn, cipher, member_id, actor=SYSTEM)
    return member.model_dump(mode="json")


def last_changes(conn: Connection) -> dict[str, datetime]:
    """Member id -> the last change of their record (for retention of inactive members)."""
    return dict(repository.activity_rows(conn))
