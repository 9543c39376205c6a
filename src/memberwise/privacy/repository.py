"""Every query of the privacy domain: staff, API keys, audit log, consent ledger, member keys,
erasures, data-subject requests, merges."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    RowMapping,
    Table,
    Text,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)

from memberwise.kit.db import insert_ignore, string_values
from memberwise.privacy.tables import (
    api_keys,
    audit_log,
    consent_records,
    data_requests,
    erasures,
    member_keys,
    member_merges,
    staff,
)


def insert_key(conn: Connection, **values: Any) -> None:
    conn.execute(insert(api_keys).values(**values))


def get_key(conn: Connection, key_id: str) -> RowMapping | None:
    return conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()


def list_keys(conn: Connection) -> Sequence[RowMapping]:
    return conn.execute(select(api_keys).order_by(api_keys.c.created_at)).mappings().all()


def revoke_key(conn: Connection, key_id: str, when: datetime) -> bool:
    result = conn.execute(
        update(api_keys)
        .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=when)
    )
    return result.rowcount == 1


def lock_active_keys(conn: Connection, role: str) -> list[str]:
    """The ids of the active keys of ``role``, locked until the transaction ends."""
    query = (
        select(api_keys.c.key_id)
        .where(api_keys.c.role == role, api_keys.c.revoked_at.is_(None))
        .order_by(api_keys.c.key_id)  # one lock order for every caller
        .with_for_update()
    )
    return list(conn.execute(query).scalars())


def count_active_keys(conn: Connection, role: str) -> int:
    query = select(func.count()).where(api_keys.c.role == role, api_keys.c.revoked_at.is_(None))
    return int(conn.execute(query).scalar_one())


def get_staff(conn: Connection, staff_id: str) -> RowMapping | None:
    return conn.execute(select(staff).where(staff.c.staff_id == staff_id)).mappings().first()


def insert_staff(conn: Connection, **values: Any) -> None:
    conn.execute(insert(staff).values(**values))


def list_staff(conn: Connection) -> Sequence[RowMapping]:
    return conn.execute(select(staff).order_by(staff.c.staff_id)).mappings().all()


def insert_audit(conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
    batch = list(rows)
    if batch:
        conn.execute(insert(audit_log), batch)


def list_audit(
    conn: Connection,
    *,
    limit: int,
    before: str | None,
    member_id: str | None,
    action: str | None,
) -> Sequence[RowMapping]:
    """Newest first; ``before`` is the audit_id to continue after (ids are time-ordered)."""
    query = select(audit_log).order_by(audit_log.c.audit_id.desc()).limit(limit)
    if before is not None:
        query = query.where(audit_log.c.audit_id < before)
    if member_id is not None:
        query = query.where(audit_log.c.member_id == member_id)
    if action is not None:
        query = query.where(audit_log.c.action == action)
    return conn.execute(query).mappings().all()


# -- consent ledger -------------------------------------------------------------------------


def insert_consent(conn: Connection, values: dict[str, Any]) -> bool:
    """Append a consent record; False when (member, request, purpose) is recorded already."""
    # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT DO NOTHING.
    stmt = (
        insert_ignore(conn, consent_records).values(**values).returning(consent_records.c.record_id)
    )
    return conn.execute(stmt).first() is not None


def get_consent_by_request(
    conn: Connection, member_id: str, request_id: str, purpose: str
) -> RowMapping | None:
    query = select(consent_records).where(
        consent_records.c.member_id == member_id,
        consent_records.c.request_id == request_id,
        consent_records.c.purpose == purpose,
    )
    return conn.execute(query).mappings().first()


def consent_history(conn: Connection, member_id: str) -> Sequence[RowMapping]:
    """A member's consent records, oldest first."""
    query = (
        select(consent_records)
        .where(consent_records.c.member_id == member_id)
        .order_by(consent_records.c.record_id)
    )
    return conn.execute(query).mappings().all()


def latest_consents(conn: Connection, member_id: str) -> dict[str, RowMapping]:
    """Purpose -> the member's newest record for it."""
    latest: dict[str, RowMapping] = {}
    for row in consent_history(conn, member_id):
        latest[row["purpose"]] = row
    return latest


def members_by_latest_status(conn: Connection, purpose: str, granted: bool) -> set[str]:
    """Members whose newest record for ``purpose`` is (``granted``) or is not a grant."""
    newest = (
        select(
            consent_records.c.member_id,
            func.max(consent_records.c.record_id).label("record_id"),
        )
        .where(consent_records.c.purpose == purpose)
        .group_by(consent_records.c.member_id)
        .subquery()
    )
    status = consent_records.c.status == "granted"
    query = (
        select(consent_records.c.member_id)
        .join(newest, consent_records.c.record_id == newest.c.record_id)
        .where(status if granted else ~status)
    )
    return set(conn.execute(query).scalars())


def rekey_consents(conn: Connection, old: str, new: str) -> int:
    stmt = update(consent_records).where(consent_records.c.member_id == old).values(member_id=new)
    return int(conn.execute(stmt).rowcount)


# -- member keys ----------------------------------------------------------------------------


def get_member_keys(conn: Connection, member_ids: Sequence[str]) -> dict[str, bytes]:
    query = select(member_keys.c.member_id, member_keys.c.key_enc).where(
        member_keys.c.member_id.in_(member_ids)
    )
    return {m: bytes(k) for m, k in conn.execute(query)}


def insert_member_keys(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert_ignore(conn, member_keys), rows)


def delete_member_key(conn: Connection, member_id: str) -> int:
    return int(
        conn.execute(delete(member_keys).where(member_keys.c.member_id == member_id)).rowcount
    )


# -- erasures -------------------------------------------------------------------------------


def get_erasure(conn: Connection, member_hash: str) -> RowMapping | None:
    query = select(erasures).where(erasures.c.member_hash == member_hash)
    return conn.execute(query).mappings().first()


def erased_hashes(conn: Connection, hashes: Sequence[str]) -> set[str]:
    if not hashes:
        return set()
    query = select(erasures.c.member_hash).where(erasures.c.member_hash.in_(hashes))
    return set(conn.execute(query).scalars())


def insert_erasure(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert_ignore(conn, erasures).values(**values))


def unscrubbed_erasures(conn: Connection) -> Sequence[RowMapping]:
    query = select(erasures).where(erasures.c.files_scrubbed_at.is_(None))
    return conn.execute(query).mappings().all()


def all_erased_hashes(conn: Connection) -> list[str]:
    return list(conn.execute(select(erasures.c.member_hash)).scalars())


def mark_scrubbed(conn: Connection, member_hashes: Sequence[str], when: datetime) -> None:
    if member_hashes:
        conn.execute(
            update(erasures)
            .where(erasures.c.member_hash.in_(member_hashes))
            .values(files_scrubbed_at=when)
        )


# -- generic member rows (for the holders other domains register) -----------------------------


def rows_of(conn: Connection, table: Table, column: str, member_id: str) -> list[dict[str, Any]]:
    query = select(table).where(table.c[column] == member_id)
    return [dict(r) for r in conn.execute(query).mappings()]


def delete_rows(conn: Connection, table: Table, column: str, member_id: str) -> int:
    return int(conn.execute(delete(table).where(table.c[column] == member_id)).rowcount)


def rekey_rows(conn: Connection, table: Table, column: str, old: str, new: str) -> int:
    stmt = update(table).where(table.c[column] == old).values({column: new})
    return int(conn.execute(stmt).rowcount)


# -- data-subject requests --------------------------------------------------------------------


def insert_request(conn: Connection, values: dict[str, Any]) -> bool:
    stmt = insert_ignore(conn, data_requests).values(**values).returning(data_requests.c.request_id)
    return conn.execute(stmt).first() is not None


def get_request(conn: Connection, request_id: str) -> RowMapping | None:
    query = select(data_requests).where(data_requests.c.request_id == request_id)
    return conn.execute(query).mappings().first()


def get_request_by_key(conn: Connection, member_id: str, key: str) -> RowMapping | None:
    query = select(data_requests).where(
        data_requests.c.member_id == member_id, data_requests.c.idempotency_key == key
    )
    return conn.execute(query).mappings().first()


def list_requests(
    conn: Connection, *, status: str | None, member_id: str | None, limit: int
) -> Sequence[RowMapping]:
    """Requests by due date (the queue's order), oldest deadline first."""
    query = select(data_requests).order_by(data_requests.c.due_at, data_requests.c.request_id)
    if status is not None:
        query = query.where(data_requests.c.status == status)
    if member_id is not None:
        query = query.where(data_requests.c.member_id == member_id)
    return conn.execute(query.limit(limit)).mappings().all()


def close_request(conn: Connection, request_id: str, values: dict[str, Any]) -> bool:
    stmt = (
        update(data_requests)
        .where(data_requests.c.request_id == request_id, data_requests.c.status == "open")
        .values(**values)
    )
    return conn.execute(stmt).rowcount == 1


# -- merges ---------------------------------------------------------------------------------


def get_merge(conn: Connection, source_id: str) -> RowMapping | None:
    query = select(member_merges).where(member_merges.c.source_id == source_id)
    return conn.execute(query).mappings().first()


def insert_merge(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(member_merges).values(**values))


def merged_into(conn: Connection, target_id: str) -> list[str]:
    query = select(member_merges.c.source_id).where(member_merges.c.target_id == target_id)
    return list(conn.execute(query).scalars())


def all_merges(conn: Connection) -> dict[str, str]:
    return dict(conn.execute(select(member_merges.c.source_id, member_merges.c.target_id)).all())


def rows_quoting(
    conn: Connection, table: Table, columns: Sequence[str], needle: str
) -> list[dict[str, Any]]:
    """Rows whose text/JSON ``columns`` contain ``needle`` (compared as text)."""
    pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    condition = or_(*(cast(table.c[name], Text).like(pattern, escape="\\") for name in columns))
    return [dict(r) for r in conn.execute(select(table).where(condition)).mappings()]


def update_by_key(
    conn: Connection, table: Table, key: dict[str, Any], values: dict[str, Any]
) -> None:
    if values:
        conn.execute(
            update(table).where(*(table.c[k] == v for k, v in key.items())).values(**values)
        )


def pseudonymise_requests(conn: Connection, member_id: str, pseudonym: str) -> int:
    stmt = (
        update(data_requests)
        .where(data_requests.c.member_id == member_id)
        .values(member_id=pseudonym, payload_enc=None)
    )
    return int(conn.execute(stmt).rowcount)


def any_erasure(conn: Connection) -> bool:
    return conn.execute(select(erasures.c.member_hash).limit(1)).first() is not None


def insert_member_audits(
    conn: Connection, keyed_ids: Sequence[str], values: dict[str, Any]
) -> None:
    """One audit row per member in ONE statement: ``keyed_ids`` are each row's 32-character
    audit id followed by its member id (subject and member of the row); ``values`` are the
    columns every row shares. Set-based, because a bulk ingest audits 100,000s at once."""
    if not keyed_ids:
        return
    ids = string_values(conn, keyed_ids)
    member = func.substr(ids.c.value, 33)
    shared = ("ts", "actor", "actor_role", "action", "subject_type", "reason", "details")
    rows = select(
        func.substr(ids.c.value, 1, 32),
        *(literal(values[name], audit_log.c[name].type) for name in shared),
        member,
        member,
    ).where(true())
    conn.execute(
        insert(audit_log).from_select(["audit_id", *shared, "subject_id", "member_id"], rows)
    )
