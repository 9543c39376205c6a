"""What bulk ingest needs from the operational store: registering members first seen in files."""

from __future__ import annotations

from collections.abc import Callable

from memberwise.config import Settings
from memberwise.kit.db import make_engine, transaction
from memberwise.members import service as members
from memberwise.privacy import erasure
from memberwise.privacy.schemas import Principal, Role

INGEST_ACTOR = Principal(key_id="cli:ingest", role=Role.admin, name="bulk ingest")
#: Ids per transaction: big enough for set-based inserts (one statement of new ids with ON
#: CONFLICT DO NOTHING, one of their audit rows), small enough that API writers never wait long.
_CHUNK = 50_000


def member_registrar(settings: Settings) -> Callable[[list[str]], None]:
    """A callback giving every member id a record (idempotent, set-based), one transaction per
    chunk."""
    engine = make_engine(settings.db_url)

    def register(member_ids: list[str]) -> None:
        for start in range(0, len(member_ids), _CHUNK):
            with transaction(engine) as conn:
                chunk = member_ids[start : start + _CHUNK]
                if erasure.any_erased(conn):
                    # An erased member gets no record again (their events in this file are
                    # removed by `memberwise privacy finish-scrubs --everyone`).
                    secret = erasure.tombstone_secret(settings.pii_key_bytes)
                    gone = erasure.erased_among(conn, secret, chunk)
                    chunk = [m for m in chunk if m not in gone]
                members.ensure_members(conn, chunk, actor=INGEST_ACTOR)

    return register
