"""The operational store's schema (every domain's tables) and its migrations.

Alembic migrations in ``memberwise/migrations`` are the only way the schema changes; they run on
SQLite and PostgreSQL alike (SQLite through Alembic's batch mode).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

# Imported for their side effect: each module registers its tables on kit.db.metadata.
from memberwise.campaigns import tables as _campaigns_tables  # noqa: F401
from memberwise.console import tables as _console_tables  # noqa: F401
from memberwise.events import tables as _events_tables  # noqa: F401
from memberwise.feedback import tables as _feedback_tables  # noqa: F401
from memberwise.kit import outbox as _outbox  # noqa: F401
from memberwise.kit.db import metadata
from memberwise.ledger import tables as _ledger_tables  # noqa: F401
from memberwise.members import tables as _members_tables  # noqa: F401
from memberwise.membership import tables as _membership_tables  # noqa: F401
from memberwise.merchants import tables as _merchants_tables  # noqa: F401
from memberwise.predict import tables as _predict_tables  # noqa: F401
from memberwise.privacy import tables as _privacy_tables  # noqa: F401
from memberwise.profiles import tables as _profiles_tables  # noqa: F401
from memberwise.recommend import tables as _recommend_tables  # noqa: F401
from memberwise.service import tables as _service_tables  # noqa: F401
from memberwise.webhooks import tables as _webhooks_tables  # noqa: F401

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

__all__ = ["alembic_config", "metadata", "migrate"]


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at our migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the store's schema to ``revision`` (default: the newest)."""
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
