"""Whether a home has been set up, and the one sentence that says so when it has not.

Kept apart from :mod:`memberwise.store` (which loads every domain's tables and Alembic) so the
quick commands (``memberwise ingest``) can ask it without paying for the whole program.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, inspect, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

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


def bad_url(url: str) -> str | None:
    """None when ``url`` names a store SQLAlchemy can open (its dialect and driver load); else
    the sentence to print, e.g. for ``postgres://...`` (SQLAlchemy's name is ``postgresql``)."""
    try:
        make_url(url).get_dialect().import_dbapi()
    except ArgumentError as exc:  # a malformed URL, or an unknown dialect or driver
        # No password shown: the scheme and what follows the credentials.
        shown = f"{url.split('://', 1)[0]}://...@{url.split('@', 1)[1]}" if "@" in url else url
        return (
            f"MEMBERWISE_DATABASE_URL {shown} is not a store memberwise can open ({exc}): "
            "use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
        )
    except ImportError as exc:  # the dialect is known, its driver is not installed
        return (
            f"the database driver of MEMBERWISE_DATABASE_URL is not installed ({exc}): use "
            "postgresql+psycopg://... (psycopg 3 is installed with memberwise) or sqlite:///PATH"
        )
    return None


def _no_answer(exc: SQLAlchemyError) -> str:
    cause = type(getattr(exc, "orig", None) or exc).__name__
    return (
        f"the operational store does not answer ({cause}): check "
        "MEMBERWISE_DATABASE_URL and that the database is running"
    )


def unreachable(url: str) -> str | None:
    """None when the store at ``url`` answers (or is a SQLite file still to be created); else
    the sentence to print: what ``init``, ``run`` and ``migrate`` check before they start."""
    try:
        is_set_up(url)
    except SQLAlchemyError as exc:
        return _no_answer(exc)
    return None


def not_ready(settings: Settings) -> str | None:
    """None when the home's store is set up; else the sentence to print (exit code 2)."""
    try:
        ready = is_set_up(settings.db_url)
    except SQLAlchemyError as exc:
        return _no_answer(exc)
    if ready:
        return None
    store = make_url(settings.db_url).render_as_string(hide_password=True)
    return (
        f"memberwise has not been set up in {settings.home} (store {store}): run "
        "`memberwise init` first, or `memberwise run` for the demo platform"
    )
