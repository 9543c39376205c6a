"""Erasure that really forgets, and the registry of everything held about a member.

Privacy sits low in the domain order, so it cannot know the tables of the domains above it.
They (or the job that assembles the application, :mod:`memberwise.jobs.holders`) register a
:class:`Holder` per kind of data: how to export a member's rows, how to erase them (delete, or
pseudonymise where the law keeps financial records), and how to move them to another id when
two identities merge. Erasure then:

1. destroys the member's own key (crypto-shredding: every copy of their sealed PII is dead);
2. deletes or pseudonymises every holder's rows in one transaction, and records a tombstone
   (a keyed hash of the id, never the id) so re-ingested events and new records are refused;
3. rewrites the lake's day files without the member's events (crash-safe, see
   :func:`memberwise.kit.lake.remove_rows`; on an object store by manifest, then the old files
   are deleted), and every other data file under the home (build outputs, dead letters) and,
   when the storage URI is an object store, under it (builds and models) without their rows;
4. on SQLite, checkpoints and vacuums the store so no freed page or WAL frame keeps a copy.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Connection, Engine, Table

from memberwise.kit.db import transaction
from memberwise.kit.errors import NotFound
from memberwise.kit.lake import EventLake, fsync_dir, remove_rows
from memberwise.kit.time import utcnow
from memberwise.privacy import keys, repository
from memberwise.privacy.crypto import FieldCipher
from memberwise.privacy.schemas import SYSTEM, ErasureResult, Principal
from memberwise.privacy.service import audit
from memberwise.privacy.tables import audit_log, consent_records, data_requests, member_merges


class MemberErased(NotFound):
    code = "member_erased"


Policy = Literal["delete", "pseudonymise"]


@dataclass(frozen=True)
class HolderContext:
    """What a holder may need besides the connection: the PII key (to open sealed fields)."""

    conn: Connection
    cipher: FieldCipher


@dataclass(frozen=True)
class Holder:
    """One kind of data held about members, as a higher domain registers it.

    ``export(ctx, member_id)`` returns JSON-ready rows; ``erase(ctx, member_id, pseudonym)``
    returns (policy applied, rows changed); ``merge(ctx, source, target)`` moves the source's
    rows to the target and returns how many (None: the holder is merged by its domain).
    """

    name: str
    export: Callable[[HolderContext, str], Any]
    erase: Callable[[HolderContext, str, str], tuple[Policy, int]]
    merge: Callable[[HolderContext, str, str], int] | None = None
    #: The tables it covers (for the registry's completeness check).
    tables: tuple[str, ...] = ()


_HOLDERS: dict[str, Holder] = {}


def register(holder: Holder) -> None:
    """Add (or replace, by name) a holder; idempotent, so importing twice is harmless."""
    _HOLDERS[holder.name] = holder


def holders() -> list[Holder]:
    return list(_HOLDERS.values())


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return None  # sealed values: the archive carries the opened PII instead
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def table_holder(
    table: Table,
    *,
    policy: Policy = "delete",
    column: str = "member_id",
    merge: bool = True,
    name: str | None = None,
) -> Holder:
    """A holder for a table keyed by member id: export its rows; erase by deleting them or by
    replacing the id with the erasure's pseudonym; merge by re-keying."""

    def export(ctx: HolderContext, member_id: str) -> list[dict[str, Any]]:
        rows = repository.rows_of(ctx.conn, table, column, member_id)
        return [{k: _json_value(v) for k, v in r.items()} for r in rows]

    def erase(ctx: HolderContext, member_id: str, pseudonym: str) -> tuple[Policy, int]:
        if policy == "delete":
            return "delete", repository.delete_rows(ctx.conn, table, column, member_id)
        return "pseudonymise", repository.rekey_rows(ctx.conn, table, column, member_id, pseudonym)

    def rekey(ctx: HolderContext, source: str, target: str) -> int:
        return repository.rekey_rows(ctx.conn, table, column, source, target)

    return Holder(
        name=name or f"{table.name}.{column}",
        export=export,
        erase=erase,
        merge=rekey if merge else None,
        tables=(table.name,),
    )


# -- the keyed hash of erased ids -------------------------------------------------------------


def member_hash(secret: bytes, member_id: str) -> str:
    """sha256(secret || id) as hex: a tombstone that does not reveal the id (the secret is
    derived from the PII key). DuckDB computes the same with ``sha256(? || member_id)``, so the
    lake can be searched for tombstoned members without their ids."""
    return hashlib.sha256(secret + member_id.encode()).hexdigest()


def tombstone_secret(pii_key: bytes) -> bytes:
    """A secret for :func:`member_hash`, derived from the PII key (nothing more to keep)."""
    return hmac.new(pii_key, b"memberwise erasure tombstones", hashlib.sha256).hexdigest().encode()


def is_erased(conn: Connection, secret: bytes, member_id: str) -> bool:
    return bool(repository.erased_hashes(conn, [member_hash(secret, member_id)]))


def erased_among(conn: Connection, secret: bytes, member_ids: Iterable[str]) -> set[str]:
    """The ids among ``member_ids`` that were erased (their events must not come back)."""
    by_hash = {member_hash(secret, m): m for m in dict.fromkeys(member_ids)}
    found = repository.erased_hashes(conn, list(by_hash))
    return {by_hash[h] for h in found}


# -- erasing ----------------------------------------------------------------------------------


def erase_rows(
    conn: Connection,
    cipher: FieldCipher,
    secret: bytes,
    member_id: str,
    *,
    actor: Principal = SYSTEM,
    reason: str = "request",
) -> ErasureResult:
    """Step 1 and 2 of erasure, in the caller's transaction: shred the key, delete or
    pseudonymise every holder's rows, write the tombstone and the audit row (pseudonymised).

    Raises MemberErased when the member was erased already.
    """
    digest = member_hash(secret, member_id)
    if repository.get_erasure(conn, digest) is not None:
        raise MemberErased("the member was erased already")
    pseudonym = f"erased-{uuid.uuid4().hex[:16]}"
    keys.shred(conn, member_id)
    ctx = HolderContext(conn, cipher)
    deleted: dict[str, int] = {}
    kept: dict[str, int] = {}
    for holder in holders():
        policy, count = holder.erase(ctx, member_id, pseudonym)
        if count:
            (deleted if policy == "delete" else kept)[holder.name] = count
    repository.insert_erasure(
        conn,
        {
            "member_hash": digest,
            "pseudonym": pseudonym,
            "erased_at": utcnow(),
            "files_scrubbed_at": None,
            "reason": reason,
        },
    )
    audit(
        conn,
        actor,
        "member.erase",
        "member",
        pseudonym,
        member_id=pseudonym,
        reason=reason,
        details={"deleted": deleted, "pseudonymised": kept},
    )
    return ErasureResult(
        pseudonym=pseudonym,
        rows_deleted=deleted,
        rows_pseudonymised=kept,
        lake_files_rewritten=0,
        lake_rows_removed=0,
        other_files_rewritten=0,
    )


#: Directories under the home never scrubbed as data files (the lake has its own rewrite; the
#: secrets are keys, not member data).
_SKIP_DIRS = ("lake", "secrets")


def scrub_files(home: Path, member_ids: Sequence[str], *, skip: Iterable[Path] = ()) -> int:
    """Rewrite every data file under ``home`` (Parquet with a ``member_id`` column, CSV and
    JSON-lines dead letters) without the rows of ``member_ids``; returns the files rewritten.
    Each file is replaced atomically (write, fsync, rename)."""
    wanted = set(member_ids)
    skipped = {home / d for d in _SKIP_DIRS} | set(skip)
    changed = 0
    for path in sorted(home.rglob("*")):
        if not path.is_file() or path.is_symlink() or any(s in path.parents for s in skipped):
            continue
        if path.name.startswith(".tmp-"):
            path.unlink(missing_ok=True)  # a crashed writer's leftover may hold the rows
            continue
        if path.suffix == ".parquet":
            changed += _scrub_parquet(path, wanted)
        elif path.suffix in {".csv", ".jsonl", ".ndjson", ".txt", ".log"}:
            changed += _scrub_lines(path, wanted)
    return changed


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}{path.suffix}")
    write(tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _scrub_parquet(path: Path, wanted: set[str]) -> int:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError):  # not a Parquet file after all: leave it
        return 0
    columns = [n for n in schema.names if n == "member_id" or n.endswith("_member_id")]
    if not columns:
        return 0
    table = pq.read_table(path)
    keep = None
    values = pa.array(sorted(wanted), pa.string())
    for name in columns:
        column = table.column(name)
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            continue
        hit = pc.fill_null(pc.is_in(column, value_set=values), False)
        keep = pc.invert(hit) if keep is None else pc.and_(keep, pc.invert(hit))
    if keep is None or pc.all(keep).as_py():
        return 0
    kept = table.filter(keep)
    _replace(path, lambda tmp: pq.write_table(kept, tmp))
    return 1


def _scrub_lines(path: Path, wanted: set[str]) -> int:
    """Drop the lines of a text file (CSV, JSON lines) that name one of ``wanted`` as a field
    or a JSON string value; the header of a CSV stays."""
    raw = path.read_text(encoding="utf-8", errors="replace")
    lines = raw.splitlines(keepends=True)
    kept = [line for line in lines if not _names(line, wanted)]
    if len(kept) == len(lines):
        return 0
    body = "".join(kept)
    _replace(path, lambda tmp: tmp.write_text(body, encoding="utf-8"))
    return 1


def _names(line: str, wanted: set[str]) -> bool:
    if any(f'"{m}"' in line for m in wanted):
        return True
    try:
        fields = next(csv.reader(io.StringIO(line)))
    except (csv.Error, StopIteration):
        return False
    return any(f.strip() in wanted for f in fields)


def compact_store(engine: Engine) -> None:
    """On SQLite, copy the live data to a fresh file and empty the WAL, so the bytes of erased
    rows survive in no free page or WAL frame. (PostgreSQL: the rows are gone from every query
    at once; autovacuum reclaims the dead tuples, see docs/privacy.md.)"""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.exec_driver_sql("VACUUM")
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def erase_member(
    engine: Engine,
    lake: EventLake,
    home: Path,
    cipher: FieldCipher,
    secret: bytes,
    member_id: str,
    *,
    actor: Principal = SYSTEM,
    reason: str = "request",
) -> ErasureResult:
    """Forget a member everywhere: rows (one transaction), lake, data files, store pages.

    The store transaction commits first (tombstone included), so a crash later leaves a
    tombstone whose files are not scrubbed yet; :func:`finish_scrubs` completes it.
    Raises MemberErased.
    """
    with transaction(engine) as conn:
        # Ids merged into the member (a guest id) are the same person: forgotten too.
        aliases = [
            a for a in repository.merged_into(conn, member_id) if not is_erased(conn, secret, a)
        ]
        result = erase_rows(conn, cipher, secret, member_id, actor=actor, reason=reason)
        for alias in aliases:
            erase_rows(conn, cipher, secret, alias, actor=actor, reason=reason)
    ids = [member_id, *aliases]
    removed = remove_rows(lake, "member_id IN (SELECT unnest(?::VARCHAR[]))", [ids])
    files = scrub_files(home, ids, skip=[lake.root])
    files += lake.scrub_beside(ids)  # builds and models on an object store (none locally)
    with transaction(engine) as conn:
        repository.mark_scrubbed(conn, [member_hash(secret, m) for m in ids], utcnow())
    compact_store(engine)
    return result.model_copy(
        update={
            "lake_files_rewritten": removed.files_rewritten,
            "lake_rows_removed": removed.rows_removed,
            "other_files_rewritten": files,
        }
    )


def finish_scrubs(engine: Engine, lake: EventLake, secret: bytes, *, everyone: bool = False) -> int:
    """Remove from the lake the events of erased members whose scrub did not finish (a crash),
    or of every erased member (``everyone``: after a re-ingest of an old file). The members are
    found by their keyed hash, so no erased id is needed. Returns the rows removed."""
    with transaction(engine) as conn:
        rows = repository.unscrubbed_erasures(conn)
        hashes = (
            repository.all_erased_hashes(conn) if everyone else [r["member_hash"] for r in rows]
        )
    if not hashes:
        return 0
    where = "sha256(? || member_id) IN (SELECT unnest(?::VARCHAR[]))"
    removed = remove_rows(lake, where, [secret.decode(), hashes])
    with transaction(engine) as conn:
        repository.mark_scrubbed(conn, hashes, utcnow())
    return removed.rows_removed


def _quoting(member_id: str) -> re.Pattern[str]:
    """The member id as a whole token inside a text: quoted, or between ``:``/``/`` separators
    (idempotency keys such as ``adjust:<id>:<key>``), never as part of a longer id."""
    return re.compile(
        r'(?<=[":/])'
        + re.escape(member_id)
        + r'(?=[":/]|$)|^'
        + re.escape(member_id)
        + r'(?=[":/])'
    )


def text_holder(table: Table, key: Sequence[str], columns: Sequence[str]) -> Holder:
    """A holder for text/JSON columns that may name a member id inside (stored responses,
    event details, composed idempotency keys): erasure replaces each occurrence with the
    pseudonym; merges leave them (they record what was answered then)."""

    def matching(ctx: HolderContext, member_id: str) -> list[dict[str, Any]]:
        pattern = _quoting(member_id)
        rows = repository.rows_quoting(ctx.conn, table, columns, member_id)
        return [
            r
            for r in rows
            if any(r[c] is not None and pattern.search(_text(r[c])) for c in columns)
        ]

    def export(ctx: HolderContext, member_id: str) -> list[dict[str, Any]]:
        return [{k: _json_value(v) for k, v in r.items()} for r in matching(ctx, member_id)]

    def erase(ctx: HolderContext, member_id: str, pseudonym: str) -> tuple[Policy, int]:
        pattern = _quoting(member_id)
        rows = matching(ctx, member_id)
        for row in rows:
            values: dict[str, Any] = {}
            for name in columns:
                value = row[name]
                if value is None:
                    continue
                replaced = pattern.sub(pseudonym, _text(value))
                values[name] = replaced if isinstance(value, str) else json.loads(replaced)
            repository.update_by_key(ctx.conn, table, {k: row[k] for k in key}, values)
        return "pseudonymise", len(rows)

    return Holder(
        name=f"{table.name}.text", export=export, erase=erase, merge=None, tables=(table.name,)
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _audit_export(ctx: HolderContext, member_id: str) -> list[dict[str, Any]]:
    rows = repository.rows_of(ctx.conn, audit_log, "member_id", member_id)
    return [{k: _json_value(v) for k, v in r.items()} for r in rows]


def _audit_erase(ctx: HolderContext, member_id: str, pseudonym: str) -> tuple[Policy, int]:
    changed = repository.rekey_rows(ctx.conn, audit_log, "member_id", member_id, pseudonym)
    changed += repository.rekey_rows(ctx.conn, audit_log, "subject_id", member_id, pseudonym)
    return "pseudonymise", changed


def _requests_erase(ctx: HolderContext, member_id: str, pseudonym: str) -> tuple[Policy, int]:
    return "pseudonymise", repository.pseudonymise_requests(ctx.conn, member_id, pseudonym)


def _merges_erase(ctx: HolderContext, member_id: str, pseudonym: str) -> tuple[Policy, int]:
    changed = repository.delete_rows(ctx.conn, member_merges, "source_id", member_id)
    changed += repository.delete_rows(ctx.conn, member_merges, "target_id", member_id)
    return "delete", changed


# Privacy's own tables. Consents and requests are evidence of lawful processing: they stay,
# under the pseudonym. The audit trail stays too, pseudonymised.
register(table_holder(consent_records, policy="pseudonymise", merge=False))
register(
    Holder(
        name="audit_log",
        export=_audit_export,
        erase=_audit_erase,
        tables=("audit_log",),
    )
)
register(text_holder(audit_log, ["audit_id"], ["details"]))
register(
    Holder(
        name="data_requests",
        export=table_holder(data_requests).export,
        erase=_requests_erase,
        merge=table_holder(data_requests).merge,
        tables=("data_requests",),
    )
)
register(
    Holder(
        name="member_merges",
        export=table_holder(member_merges, column="target_id").export,
        erase=_merges_erase,
        tables=("member_merges",),
    )
)


def any_erased(conn: Connection) -> bool:
    """Whether any member was ever erased (hot paths skip the tombstone check otherwise)."""
    return repository.any_erasure(conn)
