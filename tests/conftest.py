"""Shared fixtures: the real stores (SQLite always, PostgreSQL when configured), a runtime,
an API client and typed factories.

Set MEMBERWISE_TEST_DATABASE_URL (CI does) to run every store-backed test on PostgreSQL too.
"""

from __future__ import annotations

import base64
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, make_url, text
from sqlalchemy.engine import Engine

from memberwise.app import create_app
from memberwise.config import Settings
from memberwise.kit.db import make_engine, transaction
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import KeyCreate, Role
from memberwise.runtime import Runtime
from memberwise.store import metadata, migrate

PG_URL = os.environ.get("MEMBERWISE_TEST_DATABASE_URL")
STORES = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]
TEST_PII_KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once is the slow part)."""
    path = tmp_path_factory.mktemp("template") / "store.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test process, dropped at the end."""
    if not PG_URL:
        pytest.skip("MEMBERWISE_TEST_DATABASE_URL is not set")
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"memberwise_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_all(url: str) -> None:
    engine = make_engine(url)
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names}"))
    engine.dispose()


@pytest.fixture(params=STORES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty operational store of each kind under test."""
    if request.param == "sqlite":
        path = tmp_path / "store.sqlite"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    _truncate_all(url)
    return url


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=db_url,
        pii_key=TEST_PII_KEY,  # type: ignore[arg-type]
        api_key_cache_seconds=60,
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime.open(settings)
    yield rt
    rt.close()


@pytest.fixture
def engine(runtime: Runtime) -> Engine:
    return runtime.engine


@pytest.fixture
def conn(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that is rolled back after the test."""
    with engine.connect() as connection:
        trans = connection.begin()
        yield connection
        trans.rollback()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=runtime)) as c:
        yield c


KeyFactory = Callable[[Role], str]


@pytest.fixture
def make_key(engine: Engine) -> KeyFactory:
    """``make_key(Role.platform)`` -> a new, committed API key of that role."""

    def make(role: Role) -> str:
        with transaction(engine) as c:
            return privacy.create_key(c, KeyCreate(role=role, name=f"test {role.value}")).key

    return make


@pytest.fixture
def auth(make_key: KeyFactory) -> Callable[[Role], dict[str, str]]:
    """``auth(Role.admin)`` -> request headers carrying a key of that role (one key per role)."""
    keys: dict[Role, str] = {}

    def headers(role: Role) -> dict[str, str]:
        if role not in keys:
            keys[role] = make_key(role)
        return {"Authorization": f"Bearer {keys[role]}"}

    return headers
