"""The long-lived objects one process needs, built once from Settings and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from fastapi import Request
from sqlalchemy import Engine

from memberwise.config import Settings
from memberwise.kit.cache import BoundedSet
from memberwise.kit.db import make_engine
from memberwise.kit.lake import EventLake
from memberwise.kit.objectlake import lake_of
from memberwise.kit.time import BusinessWindow, as_utc, configure_window
from memberwise.privacy.crypto import FieldCipher
from memberwise.privacy.service import KeyVerifier

if TYPE_CHECKING:
    from memberwise.program.schemas import Program


@dataclass
class Runtime:
    """Engine, lake, PII cipher and key verifier for one process (API server, CLI, job)."""

    settings: Settings
    engine: Engine
    lake: EventLake
    cipher: FieldCipher
    verifier: KeyVerifier
    #: Member ids known to exist, so event ingestion skips re-checking them (~100 MB at most).
    known_members: BoundedSet = field(default_factory=lambda: BoundedSet(1_000_000))

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        engine = make_engine(settings.db_url)
        configure_window(
            BusinessWindow(
                earliest=as_utc(settings.business_time_earliest),
                max_future=timedelta(seconds=settings.business_time_max_future_seconds),
            )
        )
        return cls(
            settings=settings,
            engine=engine,
            lake=lake_of(settings),
            cipher=FieldCipher(settings.pii_key_bytes),
            verifier=KeyVerifier(engine, ttl=settings.api_key_cache_seconds),
        )

    def program(self) -> Program:
        """The configured program (``MEMBERWISE_PROGRAM_FILE``, re-read only when the file
        changes: a stat per call) or the built-in one: an operator's edit takes effect without
        a restart, and a hot read does not parse YAML."""
        from memberwise.program.service import current_program  # the program imports domains

        return current_program(self.settings.program_file)

    def close(self) -> None:
        self.engine.dispose()


async def get_runtime(request: Request) -> Runtime:
    """FastAPI dependency: the app's runtime (async: a sync dependency would cost every
    request a hop to the thread pool)."""
    runtime: Runtime = request.app.state.runtime
    return runtime
