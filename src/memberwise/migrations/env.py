"""Alembic environment: runs migrations on the connection memberwise hands it (or a URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from memberwise.kit.db import make_engine
from memberwise.store import metadata

config = context.config


def _run(conn: Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=metadata,
        render_as_batch=conn.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "set sqlalchemy.url or pass a connection"
    with make_engine(url).begin() as conn:
        _run(conn)
