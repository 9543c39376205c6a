"""The Ibis engine factory: the one place a warehouse engine (DuckDB or Spark) is opened.

Analytics code receives the backend and Ibis tables and never names an engine. Both engines run
with their session time zone set to UTC, so timestamps compare and extract the same way.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import pyarrow.parquet as pq

from memberwise.kit.storage import (
    ATOMIC_RENAME,
    DEFAULT,
    Storage,
    is_local,
    join,
    local_path,
    replace_directory,
    scheme_of,
    storage_for,
    temp_sibling,
    write_pointer,
)

BATCH_ROWS = 256 * 1024
#: Spark's defaults here, for local mode on a small machine: few shuffle partitions (the
#: default 200 turns every small aggregate into 200 tasks), no UI, UTC sessions, Arrow
#: transfers, timestamps written as plain INT64 microseconds. Each can be overridden by
#: ``MEMBERWISE_SPARK_CONF`` (a cluster wants more shuffle partitions and a bigger driver).
SPARK_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "8",
    "spark.default.parallelism": "8",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.ansi.enabled": "false",
    "spark.driver.memory": "4g",
    "spark.sql.parquet.datetimeRebaseModeInRead": "CORRECTED",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.parquet.compression.codec": "zstd",
    # Adaptive execution sizes each shuffle's output by its bytes (64 MiB a partition), not by
    # the cluster's cores: a small build's aggregates and pandas-UDF groups run as one task
    # each (every Python task is a worker start-up and imports, seconds on a loaded machine)
    # while a large one still splits into as many partitions as its data needs, up to
    # ``spark.sql.shuffle.partitions``.
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.parallelismFirst": "false",
    "spark.python.worker.reuse": "true",
}
DEFAULT_SPARK_MASTER = "local[*]"

#: The attribute that holds the storage (file system options) a backend reads and writes URIs
#: with. Not a dictionary keyed by the backend: Ibis backends compare and hash by their
#: connection parameters, so every in-memory DuckDB backend is "equal" to every other, and a
#: weak dictionary dropped one backend's storage when another equal one was collected.
_STORAGE_ATTRIBUTE = "_memberwise_storage"
#: The attribute holding a Spark backend's output redirection (see :func:`redirect_outputs`).
_OUTPUTS_ATTRIBUTE = "_memberwise_outputs"


def storage_of(con: ibis.BaseBackend) -> Storage:
    """The storage ``con`` was opened with (the default, option-less one otherwise)."""
    storage: Storage = getattr(con, _STORAGE_ATTRIBUTE, DEFAULT)
    return storage


def duckdb_backend(
    *,
    temp_dir: Path | None = None,
    memory_limit: str | None = None,
    storage: Storage | None = None,
) -> ibis.BaseBackend:
    """An in-process DuckDB backend in UTC; spills to ``temp_dir`` past ``memory_limit``."""
    con = ibis.duckdb.connect()
    raw = con.con
    raw.execute("SET TimeZone = 'UTC'")
    if temp_dir is not None:
        temp_dir.mkdir(parents=True, exist_ok=True)
        raw.execute(f"SET temp_directory = '{temp_dir}'")
    if memory_limit:
        raw.execute(f"SET memory_limit = '{memory_limit}'")
    # Order-insensitive aggregates need no insertion order: lets DuckDB stream and parallelize.
    raw.execute("SET preserve_insertion_order = false")
    if storage is not None:
        setattr(con, _STORAGE_ATTRIBUTE, storage)
    return con


def spark_conf(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """memberwise's Spark defaults with ``overrides`` (``MEMBERWISE_SPARK_CONF``) on top."""
    return {**SPARK_CONF, **(overrides or {})}


def spark_backend(
    *,
    master: str | None = None,
    conf: Mapping[str, str] | None = None,
    storage: Storage | None = None,
) -> ibis.BaseBackend:
    """A PySpark backend on ``master`` (``local[*]`` by default) with :func:`spark_conf`.

    A session already running in the process is reused (its JVM takes seconds to start);
    settings that only apply at start-up (master, driver memory) then keep their first value.
    Raises RuntimeError when the ``[spark]`` extra is not installed.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError(
            "the Spark engine needs the spark extra: pip install 'memberwise[spark]'"
        ) from exc
    builder = SparkSession.builder.master(master or DEFAULT_SPARK_MASTER).appName("memberwise")
    merged = spark_conf(conf)
    # Spark's catalog would otherwise create ./spark-warehouse in the working directory.
    merged.setdefault(
        "spark.sql.warehouse.dir", str(Path(tempfile.gettempdir()) / "memberwise-spark-warehouse")
    )
    # Executors' Python workers (pandas UDFs) run this interpreter, with its packages, rather
    # than whatever `python3` is first on the PATH (PySpark reads the variable at start-up).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in merged.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    con = ibis.pyspark.connect(session)
    if storage is not None:
        setattr(con, _STORAGE_ATTRIBUTE, storage)
    return con


def redirect_outputs(con: ibis.BaseBackend, local: Path, remote: str) -> None:
    """Send ``con``'s Spark writes of artifacts named directly in the local directory ``local``
    to the same names under ``remote`` (an object store's directory), leaving a pointer at the
    local name (:func:`memberwise.kit.storage.write_pointer`) that every reader follows.

    A Spark build on an object store calls it for its working copy: the executors then write
    each artifact to the build's committed location, whatever stage writes it, and the
    driver's disk never holds one. Dot and underscore names (temp files, scratch) stay local.
    Has no effect on another engine (DuckDB writes on the driver)."""
    setattr(con, _OUTPUTS_ATTRIBUTE, (local, remote.rstrip("/")))


def _redirected(con: ibis.BaseBackend, path: Path | str) -> str | None:
    """Where :func:`redirect_outputs` sends a write to ``path`` (None: nowhere else)."""
    outputs: tuple[Path, str] | None = getattr(con, _OUTPUTS_ATTRIBUTE, None)
    if outputs is None or not is_local(path):
        return None
    target = local_path(path)
    local, remote = outputs
    if target.parent != local or target.name.startswith((".", "_")):
        return None
    return f"{remote}/{target.name}"


def spark_uri(uri: str | Path) -> str:
    """``uri`` as Spark's Hadoop file systems name it: ``s3://`` is read by the S3A connector
    (``s3a://``, from hadoop-aws, which must be on the cluster's classpath)."""
    text = str(uri)
    if isinstance(uri, Path):
        return text
    if scheme_of(text) == "s3":
        return "s3a://" + text[len("s3://") :]
    return text


def spark_read(session: Any, files: Sequence[str], storage: Storage) -> Any:
    """A lazy Spark DataFrame of Parquet ``files``: Spark's own reader for local and HDFS
    paths (and S3A when configured), else the executors read the objects through fsspec
    (:mod:`memberwise.kit.sparkstore`)."""
    remote = [f for f in files if not is_local(f)]
    if remote:
        from memberwise.kit import sparkstore

        if sparkstore.through_python(session, remote[0]):
            return sparkstore.read(session, files, storage)
    return session.read.parquet(*(spark_uri(_plain(f)) for f in files))


def spark_write(frame: Any, uri: str | Path, storage: Storage) -> None:
    """Write a Spark DataFrame to the directory ``uri`` from the executors (replacing it):
    Spark's own writer, or the fsspec data source on an object store without S3A. Used for a
    stage's scratch, read back with :func:`spark_read` of ``storage.parquet_files(uri)``."""
    text = str(uri)
    if not is_local(text):
        from memberwise.kit import sparkstore

        if sparkstore.through_python(frame.sparkSession, text):
            sparkstore.write(frame, text, storage)
            return
    frame.write.mode("overwrite").parquet(spark_uri(uri))


def spark_dataframe(con: ibis.BaseBackend, expr: ir.Table) -> Any:
    """``expr`` as a Spark DataFrame of ``con``'s session: nothing is computed or collected
    until the frame is written or acted on."""
    con._run_pre_execute_hooks(expr)  # registers memtables as temp views
    return con._session.sql(con.compile(expr.as_table()))


def read_parquet(
    con: ibis.BaseBackend,
    paths: Sequence[Path | str],
    *,
    storage: Storage | None = None,
    expand: bool = True,
) -> ir.Table:
    """Parquet files, committed directories (a Spark output) or URIs (``s3://``,
    ``hdfs://``, ``file://``) as one Ibis table on any backend.

    ``storage`` reaches the URIs (default: the one ``con`` was opened with); ``expand=False``
    says every path is already a data file (saves a listing per path on an object store).
    """
    storage = storage or storage_of(con)
    files = (
        [f for p in paths for f in storage.parquet_files(p)] if expand else [str(p) for p in paths]
    )
    if con.name == "pyspark":
        name = f"parquet_{uuid.uuid4().hex}"
        spark_read(con._session, files, storage).createOrReplaceTempView(name)
        return con.table(name)
    remote = [f for f in files if not is_local(f)]
    if remote:
        # Ibis would load DuckDB's httpfs extension for s3:// (a download): read through the
        # fsspec file system registered on the connection instead (the configured storage's,
        # when ``con`` has none of its own and a pointer led to the remote files).
        (storage if storage.options else storage_for(remote[0])).register(con.con, remote)
        name = f"parquet_{uuid.uuid4().hex}"
        listed = ", ".join("'" + _plain(f).replace("'", "''") + "'" for f in files)
        con.con.execute(
            f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{listed}], "
            "hive_partitioning = false)"
        )
        return con.table(name)
    return con.read_parquet([_plain(f) for f in files], hive_partitioning=False)


def _plain(uri: str) -> str:
    """A local file's path without ``file://`` (what DuckDB and Spark take), else the URI."""
    return str(local_path(uri)) if is_local(uri) else uri


def write_parquet(con: ibis.BaseBackend, expr: ir.Table, path: Path | str) -> int:
    """Write ``expr``'s rows to ``path`` (a local path or a URI) crash-safely; the number of
    rows.

    DuckDB writes one file with its own parallel ``COPY`` (to a dot name, fsynced and renamed;
    to an object store as one PUT). Spark writes from its executors, one file per task, into a
    directory at ``path`` (renamed into place where the store can rename, else committed by a
    ``_manifest.json`` listing the files): nothing member-sized passes through the driver. A
    Spark backend whose outputs are redirected (:func:`redirect_outputs`) writes ``path``'s
    artifact to its remote location instead and leaves a pointer at ``path``.
    Readers take either shape through :func:`read_parquet` or
    :meth:`memberwise.kit.storage.Storage.parquet_files`.
    """
    if con.name == "pyspark":
        remote = _redirected(con, path)
        if remote is None:
            return _spark_write(con, expr, path)
        rows = _spark_write(con, expr, remote)
        write_pointer(local_path(path), remote)
        return rows
    if con.name != "duckdb":
        return _arrow_write(con, expr, path)
    if not is_local(path):
        with tempfile.TemporaryDirectory(prefix="memberwise-upload-") as scratch:
            staged = Path(scratch) / "out.parquet"
            rows = _duckdb_write(con, expr, staged)
            storage_of(con).fs(path).put_file(str(staged), str(path))
        return rows
    return _duckdb_write(con, expr, local_path(path))


def _as_declared(raw: Any, sql: str, schema: ibis.Schema) -> str:
    """``sql`` with each column DuckDB widened to a 128-bit integer (a sum of integers) cast
    back to the 64-bit integer the expression declares. Parquet has no 128-bit integer, so
    DuckDB would write those columns as DOUBLE where Spark writes int64 (a count shown as
    ``104.0`` by one engine and ``104`` by the other); with the cast both write the Ibis type.
    Binding the query to read its column types does not run it."""
    relation = raw.sql(sql)
    wide = {
        name
        for name, kind in zip(relation.columns, relation.types, strict=True)
        if str(kind) in ("HUGEINT", "UHUGEINT") and schema[name].is_integer()
    }
    if not wide:
        return sql

    def column(name: str) -> str:
        quoted = '"' + name.replace('"', '""') + '"'
        return f"CAST({quoted} AS BIGINT) AS {quoted}" if name in wide else quoted

    return f"SELECT {', '.join(column(n) for n in relation.columns)} FROM ({sql})"


def _duckdb_write(con: ibis.BaseBackend, expr: ir.Table, path: Path) -> int:
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        # Registers the expression's in-memory tables (memtables), as execute() would.
        con._run_pre_execute_hooks(expr)
        raw = con.con
        sql = _as_declared(raw, con.compile(expr), expr.schema())
        raw.execute(
            f"COPY ({sql}) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd, "
            "COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 262144)"
        )
        rows = int(pq.ParquetFile(tmp).metadata.num_rows)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        if path.is_dir():  # an earlier Spark output of the same name
            replace_directory(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def _arrow_write(con: ibis.BaseBackend, expr: ir.Table, path: Path | str) -> int:
    """Any other engine: stream Arrow batches to one file through the driver."""
    target = local_path(path)
    tmp = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
    schema = expr.schema().to_pyarrow()
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd", compression_level=1) as out:
            for batch in con.to_pyarrow_batches(expr, chunk_size=BATCH_ROWS):
                out.write_batch(batch.cast(schema) if batch.schema != schema else batch)
                rows += batch.num_rows
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def _spark_write(con: ibis.BaseBackend, expr: ir.Table, path: Path | str) -> int:
    """Spark's executors write ``expr`` under ``path``; the driver only lists the files and
    reads their footers for the row count."""
    storage = storage_of(con)
    frame = spark_dataframe(con, expr)
    writer = frame.write.mode("overwrite")
    if is_local(path):
        target = local_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(temp_sibling(target))
        try:
            writer.parquet(str(tmp))
            # Hadoop's checksum side files would go stale when erasure rewrites a part file
            # in place (and Spark refuses to read a file whose checksum differs): drop them.
            for crc in tmp.glob(".*.crc"):
                crc.unlink(missing_ok=True)
            rows = storage.num_rows(tmp)
            replace_directory(tmp, target)
        finally:
            if tmp.exists():
                storage.delete(tmp)
        return rows
    text = str(path)
    if scheme_of(text) in ATOMIC_RENAME:  # HDFS: write aside, then rename the directory
        fs = storage.fs(text)
        tmp_uri = str(temp_sibling(text))
        writer.parquet(spark_uri(tmp_uri))
        rows = storage.num_rows(tmp_uri)
        storage.delete(text)
        fs.mv(tmp_uri, text, recursive=True)
        return rows
    from memberwise.kit import sparkstore

    if sparkstore.through_python(con._session, text):
        # No S3A connector here: the executors write the objects through fsspec and the
        # driver commits the manifest (kit/sparkstore.py).
        sparkstore.write(frame, text, storage)
        return storage.num_rows(text)
    # An object store: a fresh attempt folder, then the manifest naming its files (one PUT).
    attempt = f"attempt-{uuid.uuid4().hex}"
    writer.parquet(spark_uri(join(text, attempt)))
    names = [
        f"{attempt}/{name}"
        for name in storage.listdir(join(text, attempt))
        if name.endswith(".parquet") and not name.startswith((".", "_"))
    ]
    storage.commit_directory(text, names)
    rows = storage.num_rows(text)
    for stale in storage.listdir(text):
        if stale.startswith("attempt-") and stale != attempt:
            storage.delete(join(text, stale))
    return rows


@contextmanager
def open_backend(
    engine: str,
    *,
    temp_dir: Path | None = None,
    spark_master: str | None = None,
    spark_conf: Mapping[str, str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Iterator[ibis.BaseBackend]:
    """The warehouse backend for ``engine``, closed afterwards (a Spark session is kept: its
    JVM takes seconds to start and other builds in the process reuse it).

    Pass ``**settings.backend_options()`` for the configured Spark master and pairs and the
    storage's file system options.
    """
    storage = Storage(dict(storage_options)) if storage_options else None
    if engine == "spark":  # config.Engine is a StrEnum: kit stays below config
        yield spark_backend(master=spark_master, conf=spark_conf, storage=storage)
        return
    con = duckdb_backend(temp_dir=temp_dir, storage=storage)
    try:
        yield con
    finally:
        con.disconnect()
