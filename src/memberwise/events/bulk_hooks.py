"""What bulk ingest needs from the operational store: registering members first seen in files."""

from __future__ import annotations

from memberwise.config import Settings
from memberwise.kit.db import make_engine, transaction
from memberwise.kit.lake import EventLake
from memberwise.members import service as members
from memberwise.privacy import erasure
from memberwise.privacy.schemas import Principal, Role

INGEST_ACTOR = Principal(key_id="cli:ingest", role=Role.admin, name="bulk ingest")
#: Ids per transaction: big enough for set-based inserts (one statement of new ids with ON
#: CONFLICT DO NOTHING, one of their audit rows), small enough that API writers never wait long.
_CHUNK = 50_000


class MemberRegistrar:
    """Gives every member id a record (idempotent, set-based), one transaction per chunk, and
    notes whether the files held events of erased members (who get no record again)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.db_url)
        self.erased_seen = False

    def __call__(self, member_ids: list[str]) -> None:
        settings, engine = self.settings, self.engine
        for start in range(0, len(member_ids), _CHUNK):
            with transaction(engine) as conn:
                chunk = member_ids[start : start + _CHUNK]
                if erasure.any_erased(conn):
                    # An erased member gets no record again; their events in these files are
                    # removed when the ingest ends (:meth:`scrub_erased`).
                    secret = erasure.tombstone_secret(settings.pii_key_bytes)
                    gone = erasure.erased_among(conn, secret, chunk)
                    chunk = [m for m in chunk if m not in gone]
                    self.erased_seen |= bool(gone)
                members.ensure_members(conn, chunk, actor=INGEST_ACTOR)

    def scrub_erased(self, lake: EventLake) -> int:
        """Remove from the lake the events of erased members that the files brought back (a
        re-ingest of an old file): the tombstone keeps an erasure final. Rows removed (0 when
        the files held none; a crash before this leaves them for ``memberwise privacy
        finish-scrubs --everyone``)."""
        if not self.erased_seen:
            return 0
        secret = erasure.tombstone_secret(self.settings.pii_key_bytes)
        return erasure.finish_scrubs(self.engine, lake, secret, everyone=True)


def member_registrar(settings: Settings) -> MemberRegistrar:
    """The registrar bulk ingest calls with each batch's member ids."""
    return MemberRegistrar(settings)
