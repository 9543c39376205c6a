"""A build over a lake on S3 (a local S3 server: moto in server mode): bulk ingest publishes to
the object store with commit records, the profiles stage writes its scratch there, and the
profiles equal a build's over the same events on the local disk."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from memberwise.config import Settings
from memberwise.events.bulk import ingest_paths
from memberwise.jobs.build import run_build
from memberwise.kit.objectlake import ObjectLake
from memberwise.kit.storage import Storage
from memberwise.runtime import Runtime
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
