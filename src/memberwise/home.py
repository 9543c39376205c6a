"""Whether a home has been set up, and the one sentence that says so when it has not.

Kept apart from :mod:`memberwise.store` (which loads every domain's tables and Alembic) so the
quick commands (``memberwise ingest``) can ask it without paying for the whole program.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, inspect, make_url
from sqlalchemy.exc import SQLAlchemyError

from memberwise.config import Settings


def is_set_up(url: str) -> bool:
    """Whether the store at ``url`` holds memberwise's schema (``memberwise init`` or
    ``memberwise migrate`` ran on it). A SQLite file that does not exist is not created.

    Raises sqlalchemy's OperationalError when the store does not answer.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or not Path(database).exists():
            return False
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return inspect(conn).has_table("alembic_version")
    finally:
        engine.dispose()


def not_ready(settings: Settings) -> str | None:
    """None when the home's store is set up; else the sentence to print (exit code 2)."""
    try:
        ready = is_set_up(settings.db_url)
    except SQLAlchemyError as exc:
        cause = type(getattr(exc, "orig", None) or exc).__name__
        return (
            f"the operational store does not answer ({cause}): check "
            "MEMBERWISE_DATABASE_URL and that the database is running"
        )
    if ready:
        return None
    store = make_url(settings.db_url).render_as_string(hide_password=True)
    return (
        f"memberwise has not been set up in {settings.home} (store {store}): run "
        "`memberwise init` first, or `memberwise run` for the demo platform"
    )
