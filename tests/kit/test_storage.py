"""Storage by URI on a local disk and on S3 (a local S3 server the tests start: moto in server
mode), the lake on an object store read by DuckDB through fsspec, and artifacts either engine
wrote (one file, or a Spark directory)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ibis
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memberwise.config import Settings
from memberwise.kit.lake import EventLake
from memberwise.kit.objectlake import ObjectLake, RemoteLakeError, open_lake
from memberwise.kit.storage import MANIFEST, Storage, parquet_files, parquet_sql
from memberwise.kit.warehouse import duckdb_backend, read_parquet, write_parquet
from tests.kit.test_lake import rows

BUCKET = "memberwise-test"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[Storage]:
    """A local S3 server for the module and a storage whose s3:// URIs reach it."""
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port())
    server.start()
    try:
        host, port = server.get_host_and_port()
        storage = Storage(
            {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
        )
        # moto keeps one in-memory backend per process, shared by every server it starts: a
        # bucket left by another module's server on this worker is still there.
        if not storage.fs("s3://").exists(BUCKET):
            storage.fs("s3://").mkdir(BUCKET)
        yield storage
    finally:
        server.stop()


@pytest.fixture(params=["file", "s3"])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Storage, str]:
    """(storage, base URI) on a local disk and on the S3 server, each test its own prefix."""
    if request.param == "file":
        return Storage(), tmp_path.as_uri()
    storage: Storage = request.getfixturevalue("s3")
    return storage, f"s3://{BUCKET}/{tmp_path.name}"


def _parquet(storage: Storage, uri: str, values: list[int]) -> None:
    storage.makedirs(uri.rsplit("/", 1)[0])
    with storage.fs(uri).open(uri, "wb") as handle:
        pq.write_table(pa.table({"v": values}), handle)


def test_bytes_round_trip_and_a_directory_is_its_committed_files(
    base: tuple[Storage, str],
) -> None:
    storage, root = base
    storage.write_bytes(f"{root}/a/b.json", b'{"x": 1}')
    assert storage.read_bytes(f"{root}/a/b.json") == b'{"x": 1}'
    storage.write_bytes(f"{root}/a/b.json", b"{}")
    assert storage.read_bytes(f"{root}/a/b.json") == b"{}"
    out = f"{root}/out.parquet"
    _parquet(storage, f"{out}/part-0.parquet", [1, 2])
    _parquet(storage, f"{out}/part-1.parquet", [3])
    storage.commit_directory(out, ["part-0.parquet", "part-1.parquet"])
    # A writer that died before its commit record: its file is never read.
    _parquet(storage, f"{out}/part-9.parquet", [99])
    assert [f.rsplit("/", 1)[1] for f in storage.parquet_files(out)] == [
        "part-0.parquet",
        "part-1.parquet",
    ]
    assert storage.read_table(out).column("v").to_pylist() == [1, 2, 3]
    assert storage.num_rows(out) == 3
    assert storage.schema(out).names == ["v"]
    assert [b.num_rows for b in storage.iter_batches(out, 10)] == [2, 1]


def test_appends_each_commit_their_own_record_so_none_is_lost(base: tuple[Storage, str]) -> None:
    storage, root = base
    day = f"{root}/events/date=2026-03-01"
    assert storage.committed(day) is None
    for n in range(3):
        _parquet(storage, f"{day}/f{n}.parquet", [n])
        storage.commit_append(day, [f"f{n}.parquet"])
    committed = storage.committed(day)
    assert committed is not None
    assert [c.rsplit("/", 1)[1] for c in committed] == ["f0.parquet", "f1.parquet", "f2.parquet"]


def test_a_local_directory_without_commit_record_is_its_visible_parquet_files(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.parquet"
    out.mkdir()
    for name in ("part-0.parquet", ".part-0.parquet.crc", "_SUCCESS", ".tmp-x.parquet"):
        (out / name).write_bytes(b"")
    assert parquet_files(out) == [str(out / "part-0.parquet")]
    single = tmp_path / "one.parquet"
    pq.write_table(pa.table({"v": [1]}), single)
    assert parquet_files(single) == [str(single)]
    assert parquet_sql(single) == f"['{single}']"


def test_duckdb_writes_and_reads_an_artifact_on_s3_without_an_extension(s3: Storage) -> None:
    con = duckdb_backend(storage=s3)
    try:
        uri = f"s3://{BUCKET}/builds/b1/scores.parquet"
        table = ibis.memtable({"member_id": ["m2", "m1", "m3"], "score": [2.5, 1.0, None]})
        assert write_parquet(con, table, uri) == 3
        back = read_parquet(con, [uri]).order_by("member_id").to_pyarrow()
        assert back.to_pylist() == [
            {"member_id": "m1", "score": 1.0},
            {"member_id": "m2", "score": 2.5},
            {"member_id": "m3", "score": None},
        ]
        loaded = con.con.sql(
            "SELECT count(*) FROM duckdb_extensions() WHERE loaded AND extension_name = 'httpfs'"
        ).fetchall()
        assert loaded == [(0,)]  # read through the registered fsspec file system
    finally:
        con.disconnect()


def _events(lake: EventLake) -> list[tuple[str, str]]:
    con = duckdb_backend()
    try:
        table = lake.events_table(con).select("event_id", "item_id").order_by("event_id")
        return [(r["event_id"], r["item_id"]) for r in table.to_pyarrow().to_pylist()]
    finally:
        con.disconnect()


def test_the_lake_on_s3_reads_like_the_local_lake(s3: Storage, tmp_path: Path) -> None:
    """Appends (one PUT and one commit record each), duplicates across appends removed the
    same way, an uncommitted file invisible, the newest event time from the footers."""
    local = EventLake(tmp_path / "local")
    remote = ObjectLake(f"s3://{BUCKET}/lakes/{tmp_path.name}", s3, tmp_path / "control")
    batches = [
        rows(["e1", "e2"], ingested=1, item="first"),
        rows(["e2", "e3"], ingested=2, item="second"),  # e2 again: the first copy wins
        rows(["e4"], ingested=3, day=2),
    ]
    for batch in batches:
        local.append(batch, prefix="api")
        written = remote.append(batch, prefix="api")
        assert all(not p.is_absolute() for p in written)
    orphan = f"{remote.day_uri(datetime(2026, 3, 2).date())}/api-crashed.parquet"
    with s3.fs(orphan).open(orphan, "wb") as handle:
        pq.write_table(rows(["e9"], ingested=9, day=2), handle)
    expected = [("e1", "first"), ("e2", "first"), ("e3", "second"), ("e4", "i3")]
    assert _events(local) == expected
    assert _events(remote) == expected
    con: Any = duckdb_backend().con
    assert sorted(r[0] for r in remote.events_relation(con).fetchall()) == [
        "e1",
        "e2",
        "e3",
        "e4",
    ]
    assert remote.latest_ts() == local.latest_ts() == datetime(2026, 3, 2, 8, tzinfo=UTC)
    stats = remote.stats()
    assert (stats.partitions, stats.files, stats.rows) == (2, 3, 5)
    with pytest.raises(RemoteLakeError):
        remote.files()


def test_a_bulk_ingest_publishes_its_staged_files_to_the_object_store(
    s3: Storage, tmp_path: Path
) -> None:
    remote = ObjectLake(f"s3://{BUCKET}/bulk/{tmp_path.name}", s3, tmp_path / "control")
    staged = tmp_path / "staged.parquet"
    pq.write_table(rows(["b1", "b2"], ingested=1), staged)
    final = remote.partition_dir(datetime(2026, 3, 1).date()) / "part-abc-0.parquet"
    remote.publish(staged, final)
    assert not staged.exists()
    assert [e for e, _ in _events(remote)] == ["b1", "b2"]


def test_settings_choose_the_lake_by_the_storage_uri(tmp_path: Path) -> None:
    local = open_lake(tmp_path / "lake", tmp_path.as_uri(), {})
    assert type(local) is EventLake and local.root == tmp_path / "lake"
    remote = open_lake(tmp_path / "lake", "s3://bucket/prod/", {"endpoint_url": "http://x"})
    assert isinstance(remote, ObjectLake)
    assert remote.uri == "s3://bucket/prod/lake" and remote.root == tmp_path / "lake"
    settings = Settings(home=tmp_path)
    assert settings.storage_root == tmp_path.as_uri()
    assert Settings(home=tmp_path, storage_uri="s3://b/p/").storage_root == "s3://b/p"


def test_spark_settings_parse_pairs_and_json_and_refuse_garbage(tmp_path: Path) -> None:
    pairs = Settings(home=tmp_path, spark_conf="spark.a=1, spark.b = x=y ,")
    assert pairs.spark_options() == {"spark.a": "1", "spark.b": "x=y"}
    as_json = Settings(home=tmp_path, spark_conf='{"spark.sql.shuffle.partitions": 200}')
    assert as_json.spark_options() == {"spark.sql.shuffle.partitions": "200"}
    with pytest.raises(ValueError, match="not key=value"):
        Settings(home=tmp_path, spark_conf="spark.a").spark_options()
    options = Settings(home=tmp_path, spark_master="spark://h:7077").backend_options()
    assert options["spark_master"] == "spark://h:7077" and options["spark_conf"] == {}


def test_a_manifest_names_exactly_the_committed_files(s3: Storage) -> None:
    out = f"s3://{BUCKET}/manifest/out.parquet"
    _parquet(s3, f"{out}/attempt-1/part-0.parquet", [5])
    s3.commit_directory(out, ["attempt-1/part-0.parquet"])
    assert s3.exists(f"{out}/{MANIFEST}")
    assert s3.parquet_files(out) == [f"{out}/attempt-1/part-0.parquet"]


# -- maintenance of the lake on an object store: new files, a manifest, then garbage collection --


def _lakes(s3: Storage, tmp_path: Path) -> tuple[EventLake, ObjectLake]:
    """A local lake and one on S3 with the same appends: e2 stored twice on day 1 (the first
    copy wins), e5 alone on day 2, m-x's events on both days."""
    local = EventLake(tmp_path / "local")
    remote = ObjectLake(f"s3://{BUCKET}/maint/{tmp_path.name}", s3, tmp_path / "control")
    batches = [
        rows(["e1", "e2"], ingested=1, item="first"),
        rows(["e2", "e3"], ingested=2, item="second"),
        rows(["x1"], ingested=3, member_id="m-x"),
        rows(["e5"], ingested=4, day=2),
        rows(["x2"], ingested=5, day=2, member_id="m-x"),
    ]
    for batch in batches:
        local.append(batch, prefix="api")
        remote.append(batch, prefix="api")
    return local, remote


def _objects(s3: Storage, uri: str) -> list[str]:
    """Every object under ``uri`` (relative names), listed or not."""
    fs = s3.fs(uri)
    fs.invalidate_cache()
    root = uri.removeprefix("s3://")
    return sorted(p.removeprefix(root + "/") for p in fs.find(root))


def _member_ids_in_every_object(s3: Storage, uri: str) -> set[str]:
    found: set[str] = set()
    for name in _objects(s3, uri):
        if name.endswith(".parquet"):
            with s3.fs(uri).open(f"{uri}/{name}", "rb") as handle:
                found.update(pq.read_table(handle, columns=["member_id"]).column(0).to_pylist())
    return found


def test_compaction_on_s3_commits_a_manifest_then_deletes_what_it_unlisted(
    s3: Storage, tmp_path: Path
) -> None:
    local, remote = _lakes(s3, tmp_path)
    expected = _events(local)
    done = remote.compact()
    assert done == local.compact()
    assert (done.partitions, done.files_before, done.files_after) == (2, 5, 2)
    assert (done.rows, done.duplicates_removed) == (6, 1)
    assert _events(remote) == expected
    day = remote.day_uri(datetime(2026, 3, 1).date())
    # One data file and its manifest: the append records were folded in and deleted.
    objects = _objects(s3, day)
    assert len(objects) == 2 and objects[0] == MANIFEST
    assert objects[1].startswith("compact-") and remote.uris([datetime(2026, 3, 1).date()]) == [
        f"{day}/{objects[1]}"
    ]
    assert remote.compact().duplicates_removed == 0  # again: nothing to merge
    assert _events(remote) == expected


def test_an_append_after_the_rewrite_read_its_state_stays_listed(
    s3: Storage, tmp_path: Path
) -> None:
    _, remote = _lakes(s3, tmp_path)
    day = datetime(2026, 3, 1).date()
    uri = remote.day_uri(day)
    state = s3.commit_state(uri)
    remote.append(rows(["late"], ingested=9), prefix="api")  # commits its own record
    unlisted = s3.rewrite(uri, state, drop=state.files, add=[])
    s3.delete_unlisted(uri, unlisted)
    assert [e for e, _ in _events(remote)] == ["e5", "late", "x2"]


def test_a_crash_after_the_manifest_leaves_only_unlisted_objects_which_gc_deletes(
    s3: Storage, tmp_path: Path
) -> None:
    local, remote = _lakes(s3, tmp_path)
    day = datetime(2026, 3, 1).date()
    uri = remote.day_uri(day)
    state = s3.commit_state(uri)
    keep = [n for n in state.files if n != state.files[0]]
    # The crash: the manifest unlisted one file and folded the records in; nothing deleted.
    s3.rewrite(uri, state, drop=[state.files[0]], add=[])
    before = _objects(s3, uri)
    assert remote.uris([day]) == [f"{uri}/{n}" for n in keep]
    # A writer that died before its commit record, just now: spared by the grace period.
    orphan = f"{uri}/api-inflight.parquet"
    with s3.fs(orphan).open(orphan, "wb") as handle:
        pq.write_table(rows(["z"], ingested=9), handle)
    collected = remote.collect_garbage()
    gone = {c.removeprefix(uri + "/") for c in collected}
    assert gone == {state.files[0], *(f"_commits/{n}" for n in state.present_records)}
    assert set(before) - set(_objects(s3, uri)) == gone
    # The in-flight file was never listed: it stays until it is older than the grace period.
    assert "api-inflight.parquet" in _objects(s3, uri)
    assert remote.collect_garbage() == []  # idempotent
    assert [c.removeprefix(uri + "/") for c in remote.collect_garbage(older_than_seconds=0)] == [
        "api-inflight.parquet"
    ]
    assert local.stats().files == 5  # (the local lake kept its own files)


def test_erasure_on_s3_leaves_the_member_in_no_listed_file_and_no_object(
    s3: Storage, tmp_path: Path
) -> None:
    from memberwise.kit.lake import remove_rows

    local, remote = _lakes(s3, tmp_path)
    where = "member_id IN (SELECT unnest(?::VARCHAR[]))"
    removed = remove_rows(remote, where, [["m-x"]])
    assert removed == remove_rows(local, where, [["m-x"]])
    assert (removed.files_rewritten, removed.rows_removed) == (2, 2)
    assert _events(remote) == _events(local)
    assert [e for e, _ in _events(remote)] == ["e1", "e2", "e3", "e5"]
    # Every listed file, then every object in the bucket under the lake.
    listed: set[str] = set()
    for uri in remote.uris():
        with s3.fs(uri).open(uri, "rb") as handle:
            listed.update(pq.read_table(handle, columns=["member_id"]).column(0).to_pylist())
    assert "m-x" not in listed
    assert _member_ids_in_every_object(s3, remote.uri) == {"m-e1", "m-e2", "m-e3", "m-e5"}
    assert remove_rows(remote, where, [["m-x"]]).rows_removed == 0  # again: nothing left


def test_retention_on_s3_drops_a_day_and_all_its_objects(s3: Storage, tmp_path: Path) -> None:
    from memberwise.kit.lake import drop_days

    local, remote = _lakes(s3, tmp_path)
    first = datetime(2026, 3, 1).date()
    dropped = drop_days(remote, [first])
    assert dropped == drop_days(local, [first])
    assert (dropped.files_rewritten, dropped.rows_removed) == (3, 5)
    assert remote.partitions() == [datetime(2026, 3, 2).date()]
    assert _objects(s3, remote.day_uri(first)) == []
    assert _events(remote) == _events(local) == [("e5", "i4"), ("x2", "i5")]
