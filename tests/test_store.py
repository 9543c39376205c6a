"""The migrations make exactly the schema the tables declare, on every store under test."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from memberwise.store import metadata


def test_migrations_match_the_declared_tables(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = compare_metadata(context, metadata)
    assert diff == []
