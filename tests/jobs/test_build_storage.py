"""A build over a lake on S3 (a local S3 server: moto in server mode): bulk ingest publishes to
the object store with commit records, the profiles stage writes its scratch there, and the
profiles equal a build's over the same events on the local disk."""

from __future__ import annotations

import copy
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from memberwise.app import create_app
from memberwise.builds import STALE_BUILD_SECONDS, BuildStore
from memberwise.cli import app
from memberwise.config import Settings
from memberwise.events.bulk import ingest_paths
from memberwise.jobs import build
from memberwise.jobs.build import run_build
from memberwise.kit.db import transaction
from memberwise.kit.objectlake import ObjectLake
from memberwise.kit.storage import Storage
from memberwise.kit.warehouse import duckdb_backend, read_parquet
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


# -- where builds live: committed by manifest on an object store, by build.json locally ----------


def _working_copy(root: Path, build_id: str, *, finished: bool = True) -> Path:
    """A build's working copy as the stages leave it (with build.json once finished)."""
    directory = root / build_id
    (directory / "models").mkdir(parents=True)
    pq.write_table(pa.table({"member_id": ["m1", "m2"]}), directory / "profiles.parquet")
    (directory / "models" / "churn.txt").write_text("tree\n")
    (directory / "_work").mkdir()
    (directory / "_work" / "scratch.parquet").write_bytes(b"scratch")
    if finished:
        (directory / "build.json").write_text(json.dumps({"build_id": build_id}))
    return directory


def _stores(remote: Storage, tmp_path: Path) -> list[BuildStore]:
    """Builds on the local disk, and on S3 (with their own local working folder)."""
    uri = f"s3://{BUCKET}/stores-{tmp_path.name}"
    return [
        BuildStore(tmp_path / "local" / "builds", None, Storage()),
        BuildStore(tmp_path / "remote" / "builds", uri, remote),
    ]


def test_a_build_is_seen_only_once_committed_and_a_killed_one_never(
    s3: Storage,  # noqa: F811  (the imported fixture)
    tmp_path: Path,
) -> None:
    for store in _stores(s3, tmp_path):
        old, killed = "20260301T000000Z-aaaaaa", "20260302T000000Z-bbbbbb"
        store.commit(_working_copy(store.local, old))
        # Killed before its build.json (locally) or its manifest (on S3): its files may be
        # there, but no reader sees it.
        copy_ = _working_copy(store.local, killed, finished=False)
        if store.remote:
            s3.fs(str(store.uri)).put_file(
                str(copy_ / "profiles.parquet"), f"{store.uri}/{killed}/profiles.parquet"
            )
        assert store.committed() == [old]
        assert store.latest(["profiles.parquet"]) == old
        assert store.latest(["tiers.parquet"]) is None
        assert store.files(old) == ["build.json", "models/churn.txt", "profiles.parquet"]
        assert store.has(old, "models") and not store.has(old, "_work")
        assert store.manifest(old) == {"build_id": old}
        # --only stages get an earlier build's artifact: linked locally, downloaded from S3.
        target = tmp_path / f"linked-{store.remote}"
        target.mkdir()
        store.copy_artifact(old, "models", target / "models")
        assert (target / "models" / "churn.txt").read_text() == "tree\n"
        store.mark_published(old)
        assert store.published() == old
        # A day later the killed build is a leftover: pruning deletes it, keeps the published.
        gone = store.prune(0, now=_started_at(killed) + STALE_BUILD_SECONDS + 1)
        assert gone == [killed]
        assert store.committed() == [old] and not (store.local / killed).exists()
        if store.remote:
            assert not s3.exists(f"{store.uri}/{killed}")


def test_a_checkout_downloads_a_committed_build_once_and_again_after_a_new_commit(
    s3: Storage,  # noqa: F811  (the imported fixture)
    tmp_path: Path,
) -> None:
    store = _stores(s3, tmp_path)[1]
    build_id = "20260301T000000Z-cccccc"
    store.commit(_working_copy(tmp_path / "elsewhere", build_id))  # another machine's build
    directory = store.checkout(build_id, ["profiles.parquet"])
    assert directory == store.local / build_id
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) == [
        "build.json",
        "profiles.parquet",
    ]
    assert pq.read_table(directory / "profiles.parquet").num_rows == 2
    # A re-commit (the build published: build.json rewritten) uploads only what changed, and
    # the next checkout fetches anew.
    working = tmp_path / "elsewhere" / build_id
    (working / "build.json").write_text(json.dumps({"build_id": build_id, "status": "x"}))
    store.commit(working)
    assert json.loads((store.checkout(build_id, []) / "build.json").read_text())["status"] == "x"


def test_builds_live_under_the_storage_uri(settings: Settings, tmp_path: Path) -> None:
    local = Runtime.open(settings)
    remote = Runtime.open(
        settings.model_copy(update={"storage_uri": "s3://bucket/prod/", "storage_options": {}})
    )
    try:
        assert BuildStore.of(local).uri is None
        assert BuildStore.of(local).local == settings.home / "warehouse" / "builds"
        assert BuildStore.of(remote).uri == "s3://bucket/prod/builds"
        assert BuildStore.of(remote).location("b1") == "s3://bucket/prod/builds/b1"
    finally:
        local.close()
        remote.close()


def _started_at(build_id: str) -> float:
    moment = datetime.strptime(build_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ")
    return moment.replace(tzinfo=UTC).timestamp()


def test_a_build_on_s3_reads_inputs_from_the_store_and_a_failed_one_is_never_committed(
    settings: Settings,
    s3: Storage,  # noqa: F811  (the imported fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    remote = Runtime.open(
        settings.model_copy(
            update={
                "storage_uri": f"s3://{BUCKET}/inputs-{tmp_path.name}",
                "storage_options": s3.options,
            }
        )
    )
    try:
        ingest_paths([TAOBAO], remote.lake, fmt="taobao", deadletter_dir=tmp_path / "dead")
        store = BuildStore.of(remote)
        first = run_build(remote, PROGRAM, only=["profiles"], as_of=AS_OF)
        assert store.committed() == [first.build_id]
        # Another machine: no local copy of the first build; `--only tags` downloads profiles.
        shutil.rmtree(store.local)
        second = run_build(remote, PROGRAM, only=["tags"])
        assert second.as_of == AS_OF  # (the reused profiles' clock, from the stored build.json)
        assert store.files(second.build_id) == ["build.json", "profiles.parquet", "tags.parquet"]
        tags = store.storage.read_table(f"{store.location(second.build_id)}/tags.parquet")
        assert tags.num_rows == pq.read_table(second.directory / "tags.parquet").num_rows > 0

        def killed(ctx: object) -> int:
            raise RuntimeError("killed")

        monkeypatch.setitem(build.RUNNERS, "tags", killed)
        with pytest.raises(RuntimeError, match="killed"):
            run_build(remote, PROGRAM, only=["profiles", "tags"], as_of=AS_OF)
        assert store.committed() == [second.build_id, first.build_id]
        assert [p.name for p in store.local.iterdir() if p.is_dir()] == [second.build_id]
        assert store.storage.listdir(str(store.uri)) == sorted([first.build_id, second.build_id])
    finally:
        remote.close()


# -- a Spark build on an object store: artifacts written in place, pointers in the working copy --


def _write_artifact(storage: Storage, uri: str, parts: list[list[str]]) -> None:
    """An artifact as Spark's executors leave it on an object store: one object per task in an
    attempt folder, then the manifest naming them."""
    names = []
    for number, ids in enumerate(parts):
        names.append(f"attempt-1/part-{number:05d}.parquet")
        with storage.fs(uri).open(f"{uri}/{names[-1]}", "wb") as handle:
            pq.write_table(pa.table({"member_id": ids}), handle)
    storage.commit_directory(uri, names)


def test_a_working_copy_pointing_at_its_artifacts_commits_them_with_no_upload(
    s3: Storage,  # noqa: F811  (the imported fixture)
    tmp_path: Path,
) -> None:
    from memberwise.kit import diffpublish
    from memberwise.kit.storage import (
        MANIFEST,
        configure,
        parquet_batches,
        parquet_sql,
        pointed,
        read_table,
        write_pointer,
    )

    store = _stores(s3, tmp_path)[1]
    configure(s3, str(store.uri))
    build_id, later = "20260301T000000Z-dddddd", "20260302T000000Z-eeeeee"
    working = store.local / build_id
    (working / "models").mkdir(parents=True)
    (working / "models" / "churn.txt").write_text("tree\n")
    (working / "build.json").write_text(json.dumps({"build_id": build_id}))
    artifact = f"{store.location(build_id)}/profiles.parquet"
    _write_artifact(s3, artifact, [["m1", "m2"], ["m3"]])
    write_pointer(working / "profiles.parquet", artifact)
    # The working copy holds no data; every reader of its path reads the remote artifact.
    assert not any(p.suffix == ".parquet" and p.is_file() for p in working.rglob("*"))
    assert sorted(read_table(working / "profiles.parquet")["member_id"].to_pylist()) == [
        "m1",
        "m2",
        "m3",
    ]
    assert sum(b.num_rows for b in parquet_batches(working / "profiles.parquet", 1)) == 3
    with diffpublish.connect() as con:
        counted = con.sql(
            f"SELECT count(*) FROM read_parquet({parquet_sql(working / 'profiles.parquet')})"
        )
        assert counted.fetchall() == [(3,)]
    con = duckdb_backend()  # (no storage of its own: the configured one reaches S3)
    try:
        assert read_parquet(con, [working / "profiles.parquet"]).count().to_pyarrow().as_py() == 3
    finally:
        con.disconnect()
    store.commit(working)
    assert store.files(build_id) == [
        "build.json",
        "models/churn.txt",
        f"profiles.parquet/{MANIFEST}",
        "profiles.parquet/attempt-1/part-00000.parquet",
        "profiles.parquet/attempt-1/part-00001.parquet",
    ]
    uploaded = json.loads((working / ".uploaded.json").read_text())
    assert sorted(uploaded) == ["build.json", "models/churn.txt"]  # nothing for the artifact
    # On this machine a checkout keeps the pointer (nothing downloaded); another machine
    # downloads the build and reads it whole.
    assert store.checkout(build_id, ["profiles.parquet"]) == working
    assert pointed(working / "profiles.parquet") == artifact
    assert read_table(working / "profiles.parquet").num_rows == 3
    elsewhere = BuildStore(tmp_path / "elsewhere", store.uri, s3)
    checked = elsewhere.checkout(build_id, ["profiles.parquet"])
    assert read_table(checked / "profiles.parquet").num_rows == 3
    # `--only` inputs of a later build: copied on the store's side, committed with it.
    copied = store.copy_within(build_id, "profiles.parquet", later)
    assert copied == f"{store.location(later)}/profiles.parquet"
    assert sorted(s3.read_table(copied)["member_id"].to_pylist()) == ["m1", "m2", "m3"]
    # A pointer outside its own build is refused at commit.
    stray = store.local / later
    stray.mkdir()
    (stray / "build.json").write_text(json.dumps({"build_id": later}))
    write_pointer(stray / "tags.parquet", artifact)
    with pytest.raises(ValueError, match="points outside its build"):
        store.commit(stray)


def test_a_killed_spark_build_on_s3_stays_invisible_and_is_pruned(
    s3: Storage,  # noqa: F811  (the imported fixture)
    tmp_path: Path,
) -> None:
    store = _stores(s3, tmp_path)[1]
    old, killed, failed = (
        "20260301T000000Z-ffffff",
        "20260302T000000Z-gggggg",
        "20260302T010000Z-hhhhhh",
    )
    store.commit(_working_copy(store.local, old))
    # Killed after its executors committed two artifacts, before the build's manifest.
    for build_id in (killed, failed):
        for name in ("profiles.parquet", "tags.parquet"):
            _write_artifact(s3, f"{store.location(build_id)}/{name}", [["m1"]])
    assert store.committed() == [old]
    assert store.latest(["profiles.parquet"]) == old and not store.is_committed(killed)
    # A build that failed (rather than being killed) deletes its objects at once.
    store.discard(failed)
    assert not s3.exists(str(store.location(failed)))
    store.discard(old)  # a committed build is never discarded
    assert store.is_committed(old)
    # Still running a moment later: kept; a day later: a leftover, pruned.
    assert store.prune(5, now=_started_at(killed) + 60) == []
    assert store.prune(5, now=_started_at(killed) + STALE_BUILD_SECONDS + 1) == [killed]
    assert not s3.exists(str(store.location(killed)))
    assert store.committed() == [old]
