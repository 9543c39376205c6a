"""A build over a lake on S3 (a local S3 server: moto in server mode): bulk ingest publishes to
the object store with commit records, the profiles stage writes its scratch there, and the
profiles equal a build's over the same events on the local disk."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from memberwise.app import create_app
from memberwise.cli import app
from memberwise.config import Settings
from memberwise.events.bulk import ingest_paths
from memberwise.jobs.build import run_build
from memberwise.kit.db import transaction
from memberwise.kit.objectlake import ObjectLake
from memberwise.kit.storage import Storage
from memberwise.kit.warehouse import duckdb_backend
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import KeyCreate, Role
from memberwise.runtime import Runtime
from tests.conftest import TEST_PII_KEY
from tests.jobs.test_build import AS_OF, PROGRAM
from tests.kit.test_storage import BUCKET, s3  # noqa: F401  (the S3 server fixture)
from tests.profiles.test_features import TAOBAO


def _profiles(directory: Path) -> list[dict[str, object]]:
    table = pq.read_table(directory / "profiles.parquet").sort_by("member_id")
    return table.to_pylist()


def test_a_build_over_a_lake_on_s3_equals_the_local_one(
    settings: Settings,
    s3: Storage,  # noqa: F811  (the imported fixture)
    tmp_path: Path,
) -> None:
    local = Runtime.open(settings)
    remote_settings = settings.model_copy(
        update={
            "home": tmp_path / "remote-home",
            "storage_uri": f"s3://{BUCKET}/{tmp_path.name}/",
            "storage_options": s3.options,
        }
    )
    remote = Runtime.open(remote_settings)
    try:
        assert isinstance(remote.lake, ObjectLake)
        for runtime in (local, remote):
            ingest_paths([TAOBAO], runtime.lake, fmt="taobao", deadletter_dir=tmp_path / "dead")
        assert remote.lake.stats().rows == local.lake.stats().rows
        assert not any((tmp_path / "remote-home" / "lake").rglob("*.parquet"))  # all on S3
        stages = ["profiles", "tags"]
        built = [run_build(rt, PROGRAM, only=stages, as_of=AS_OF) for rt in (local, remote)]
        assert [(b.members, b.events_read) for b in built] == [(43, 4321), (43, 4321)]
        assert _profiles(built[1].directory) == _profiles(built[0].directory)
        # The scratch went to the store under the build's id and was deleted after the stage.
        work = f"s3://{BUCKET}/{tmp_path.name}/warehouse/work/{built[1].build_id}"
        assert not s3.exists(work)
    finally:
        local.close()
        remote.close()


def _s3_objects(storage: Storage, uri: str) -> list[str]:
    fs = storage.fs(uri)
    fs.invalidate_cache()
    return sorted(fs.find(uri.removeprefix("s3://")))


def _run_cli(home: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Ingest, build (publishing), read one profile through the API, erase member 1, compact:
    what each step answered, with the times that differ between two runs left out."""
    monkeypatch.setenv("MEMBERWISE_HOME", str(home))
    for name in ("MEMBERWISE_STORAGE_URI", "MEMBERWISE_STORAGE_OPTIONS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    ingested = runner.invoke(app, ["ingest", str(TAOBAO), "--format", "taobao", "--json"])
    assert ingested.exit_code == 0, ingested.output
    built = runner.invoke(app, ["build", "--as-of", AS_OF.isoformat(), "--json"])
    assert built.exit_code == 0, built.output
    summary = orjson.loads(built.output)
    settings = Settings()
    runtime = Runtime.open(settings)
    try:
        with transaction(runtime.engine) as conn:
            key = privacy.create_key(conn, KeyCreate(role=Role.admin, name="e2e")).key
        with TestClient(create_app(settings)) as client:
            response = client.get(
                "/v1/members/1/profile", headers={"Authorization": f"Bearer {key}"}
            )
        assert response.status_code == 200, response.text
        profile = response.json()
        lake = runtime.lake
    finally:
        runtime.close()
    erased = runner.invoke(app, ["privacy", "erase", "1", "--reason", "e2e"])
    assert erased.exit_code == 0, erased.output
    compacted = runner.invoke(app, ["lake", "compact"])
    assert compacted.exit_code == 0, compacted.output
    con = duckdb_backend(storage=getattr(lake, "storage", None))
    try:
        members = lake.events_table(con).member_id.value_counts().to_pyarrow().to_pylist()
    finally:
        con.disconnect()
    erasure = orjson.loads(erased.output)
    return {
        "ingested": {
            k: v
            for k, v in orjson.loads(ingested.output).items()
            if k in ("rows_read", "accepted", "rejected", "duplicates")
        },
        "build": {
            "members": summary["members"],
            "events_read": summary["events_read"],
            "as_of": summary["as_of"],
            "stages": {name: s["rows"] for name, s in summary["stages"].items()},
            "recommendations": summary["recommendations"],
        },
        "profile": {k: v for k, v in profile.items() if k not in ("build_id", "published_at")},
        "erased": {k: v for k, v in erasure.items() if k != "pseudonym"},
        "compacted": compacted.output,
        "events_by_member": sorted((r["member_id"], r["member_id_count"]) for r in members),
    }


KEYS = {"MEMBERWISE_PII_KEY": TEST_PII_KEY, "MEMBERWISE_ENGINE": "duckdb"}


@pytest.fixture(scope="module")
def local_run(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same steps on the local disk and SQLite, once for the module (the reference)."""
    home = tmp_path_factory.mktemp("local-run")
    store = home / "local.sqlite"
    shutil.copy(sqlite_template, store)
    with pytest.MonkeyPatch.context() as patch:
        return _run_cli(
            home / "home", {**KEYS, "MEMBERWISE_DATABASE_URL": f"sqlite:///{store}"}, patch
        )


def test_ingest_build_serve_erase_compact_on_s3_equal_the_local_disk_run(
    db_url: str,
    local_run: dict[str, Any],
    s3: Storage,  # noqa: F811  (the imported fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CLI end to end with MEMBERWISE_STORAGE_URI=s3://..., DuckDB engine: the lake, the
    builds and their models on the S3 server, the store on each kind under test; every answer
    equals a run on the local disk (SQLite), and member 1 is gone from every object after."""
    local = copy.deepcopy(local_run)
    base = f"s3://{BUCKET}/e2e-{tmp_path.name}"
    remote_env = {
        **KEYS,
        "MEMBERWISE_DATABASE_URL": db_url,
        "MEMBERWISE_STORAGE_URI": base,
        "MEMBERWISE_STORAGE_OPTIONS": orjson.dumps(s3.options).decode(),
    }
    remote = _run_cli(tmp_path / "remote", remote_env, monkeypatch)
    # The remote home scrubs its builds' local working copies and the objects on S3.
    scrubbed = remote["erased"].pop("other_files_rewritten")
    assert scrubbed == 2 * local["erased"].pop("other_files_rewritten") == 20
    for step in local:
        assert (step, remote[step]) == (step, local[step])
    assert local["build"]["members"] == 43 and local["build"]["events_read"] == 4321
    assert local["profile"]["fields"]["views_30d"] == 55
    erased = local["erased"]
    assert erased["lake_rows_removed"] == 55 and erased["lake_files_rewritten"] > 0
    assert "1" not in dict(local["events_by_member"])
    # Nothing of the run on the local disk of the remote home: lake and builds are on S3.
    assert not any((tmp_path / "remote" / "lake").rglob("*.parquet"))
    objects = _s3_objects(s3, base)
    builds = [o for o in objects if "/builds/" in o]
    assert any(o.endswith("/_manifest.json") for o in builds)
    assert any(o.endswith("/recommender/config.json") for o in builds)  # its model
    assert any(o.endswith("/builds/_published.json") for o in objects)
    # Member 1 is in no object under the storage URI: lake days (after the manifest and GC)
    # and the builds' Parquet artifacts alike.
    holders = []
    for name in objects:
        if name.endswith(".parquet"):
            with s3.fs(base).open(f"s3://{name}", "rb") as handle:
                table = pq.read_table(handle)
            for column in table.column_names:
                named = column == "member_id" or column.endswith("_member_id")
                if named and "1" in table.column(column).to_pylist():
                    holders.append(name)
    assert holders == []
