"""Spark reading and writing Parquet on an object store (``s3://`` and its kin) without Hadoop's
S3A connector: a PySpark Python data source whose tasks open the objects through memberwise's
fsspec storage **in the executors**. The driver lists the files and reads one footer (the
schema); it never sees a row.

Why: Spark's own reader of ``s3a://`` needs the hadoop-aws jar and the AWS SDK bundle of the
exact Hadoop version Spark ships (3.4.1 for PySpark 4.0), which come from Maven. Where a
cluster has them (``spark.jars.packages`` or a platform's Spark distribution), set
``spark.memberwise.objectStore=hadoop`` in ``MEMBERWISE_SPARK_CONF`` and Spark's own S3A reader
and writer are used instead; local paths and HDFS always use Spark's own.

Writes keep the object-store protocol of :mod:`memberwise.kit.storage`: each task writes one
``attempt-<id>/part-*.parquet`` object, and the driver's commit (after every task succeeded)
writes ``_manifest.json`` naming them in one PUT, then deletes older attempts. A failed job
deletes its attempt folder; readers never trust unlisted files.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql.datasource import (
    DataSource,
    DataSourceArrowWriter,
    DataSourceReader,
    InputPartition,
    WriterCommitMessage,
)
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import StructType

from memberwise.kit.storage import ATOMIC_RENAME, Storage, is_local, join, scheme_of

#: The data source's short name (``spark.read.format(SOURCE)``).
SOURCE = "memberwise_store"
#: Spark setting choosing how object stores are reached: ``python`` (this module, the default)
#: or ``hadoop`` (Spark's own S3A connector, when hadoop-aws is on the cluster's classpath).
MODE_KEY = "spark.memberwise.objectStore"
#: Bytes of objects one reading task reads (Spark's own default ``maxPartitionBytes``).
READ_TASK_BYTES = 128 * 1024 * 1024
#: Spark setting overriding :data:`READ_TASK_BYTES` (``1`` reads each object in its own task).
READ_TASK_BYTES_KEY = "spark.memberwise.readTaskBytes"
#: Rows per Arrow batch handed to Spark by a reading task.
BATCH_ROWS = 64 * 1024


def _plain(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _wide_to_plain(schema: pa.Schema) -> pa.Schema:
    """``schema`` with Arrow's 64-bit-offset strings/binaries as the plain ones Spark's own
    Parquet writer produces (both read back as the same Spark type)."""
    fields = []
    for f in schema:
        kind = f.type
        if pa.types.is_large_string(kind):
            kind = pa.string()
        elif pa.types.is_large_binary(kind):
            kind = pa.binary()
        fields.append(pa.field(f.name, kind, f.nullable))
    return pa.schema(fields)


@dataclass
class FilesPartition(InputPartition):
    """The objects one reading task reads, in order."""

    files: list[str]

    def __init__(self, files: list[str]) -> None:
        super().__init__(files)
        self.files = files


@dataclass
class Written(WriterCommitMessage):
    """What one writing task wrote: an object name relative to the target (None when its
    partition was empty) and its rows."""

    name: str | None
    rows: int


class StoreParquet(DataSource):
    """Parquet objects reached through fsspec. Options (all strings): ``files`` (JSON list of
    URIs, to read), ``path`` (a directory URI, to write), ``storage`` (JSON fsspec options),
    ``partitions`` (reading tasks, at most one per file)."""

    @classmethod
    def name(cls) -> str:
        return SOURCE

    def _storage(self) -> Storage:
        return Storage(json.loads(self.options.get("storage", "{}")))

    def schema(self) -> StructType:
        """The first file's schema, from its footer (the only read on the driver)."""
        files = json.loads(self.options["files"])
        storage = self._storage()
        with storage.fs(files[0]).open(_plain(files[0]), "rb") as handle:
            arrow = pq.ParquetFile(handle).schema_arrow
        return from_arrow_schema(arrow)

    def reader(self, schema: StructType) -> DataSourceReader:
        return _Reader(self.options, schema)

    def writer(self, schema: StructType, overwrite: bool) -> DataSourceArrowWriter:
        return _Writer(self.options, schema)


class _Reader(DataSourceReader):
    def __init__(self, options: dict[str, str], schema: StructType) -> None:
        self.files: list[str] = json.loads(options["files"])
        self.storage: dict[str, Any] = json.loads(options.get("storage", "{}"))
        self.tasks = max(1, min(len(self.files), int(options.get("partitions", "0")) or 1))
        self.arrow = _wide_to_plain(to_arrow_schema(schema))

    def partitions(self) -> Sequence[InputPartition]:
        """Contiguous runs of files, ``tasks`` of them (a small lake is not a task a file)."""
        size = -(-len(self.files) // self.tasks)
        return [FilesPartition(self.files[i : i + size]) for i in range(0, len(self.files), size)]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        """Runs in an executor: open each object and stream its batches, in the declared
        column order and types."""
        assert isinstance(partition, FilesPartition)
        storage = Storage(self.storage)
        names = self.arrow.names
        for uri in partition.files:
            with storage.fs(uri).open(_plain(uri), "rb") as handle:
                for batch in pq.ParquetFile(handle).iter_batches(
                    batch_size=BATCH_ROWS, columns=names
                ):
                    yield batch.select(names).cast(self.arrow)


class _Writer(DataSourceArrowWriter):
    """Created on the driver (which picks the attempt id), shipped to the tasks."""

    def __init__(self, options: dict[str, str], schema: StructType) -> None:
        self.path = options["path"].rstrip("/")
        self.storage: dict[str, Any] = json.loads(options.get("storage", "{}"))
        self.arrow = _wide_to_plain(to_arrow_schema(schema))
        self.attempt = f"attempt-{uuid.uuid4().hex}"

    def write(self, iterator: Iterator[pa.RecordBatch]) -> Written:
        """Runs in an executor: this task's rows as one object under the attempt folder."""
        first = next(iterator, None)
        if first is None:
            return Written(None, 0)
        from pyspark import TaskContext

        context = TaskContext.get()
        task = context.partitionId() if context is not None else 0
        name = f"{self.attempt}/part-{task:05d}-{uuid.uuid4().hex[:12]}.parquet"
        uri = str(join(self.path, name))
        storage = Storage(self.storage)
        rows = 0
        with (
            storage.fs(uri).open(uri, "wb") as handle,
            pq.ParquetWriter(handle, self.arrow, compression="zstd", compression_level=1) as out,
        ):
            for batch in _chain(first, iterator):
                out.write_batch(batch.cast(self.arrow))
                rows += batch.num_rows
        return Written(name, rows)

    def commit(self, messages: list[WriterCommitMessage | None]) -> None:
        """On the driver once every task succeeded: the manifest (one PUT), then older
        attempts are deleted. An empty result still gets one empty file, so readers see its
        schema."""
        storage = Storage(self.storage)
        names = [m.name for m in messages if isinstance(m, Written) and m.name]
        if not names:
            names = [f"{self.attempt}/part-00000-empty.parquet"]
            with storage.fs(self.path).open(str(join(self.path, names[0])), "wb") as handle:
                pq.write_table(self.arrow.empty_table(), handle, compression="zstd")
        storage.commit_directory(self.path, names)
        for stale in storage.listdir(self.path):
            if stale.startswith("attempt-") and stale != self.attempt:
                storage.delete(join(self.path, stale))

    def abort(self, messages: list[WriterCommitMessage | None]) -> None:
        """A task failed: this attempt's objects are deleted (no manifest names them)."""
        Storage(self.storage).delete(join(self.path, self.attempt))


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


# -- entry points for the warehouse ------------------------------------------------------------


def through_python(session: Any, uri: str) -> bool:
    """True when ``uri`` is on an object store and the session reaches object stores through
    this data source (the default; ``spark.memberwise.objectStore=hadoop`` says S3A)."""
    if is_local(uri) or scheme_of(uri) in ATOMIC_RENAME:
        return False
    return str(session.conf.get(MODE_KEY, "python")) != "hadoop"


def _register(session: Any) -> None:
    session.dataSource.register(StoreParquet)


def reading_tasks(files: Sequence[str], storage: Storage, *, task_bytes: int) -> int:
    """How many reading tasks ``files`` deserve: about ``task_bytes`` of objects each (as
    Spark's own reader packs files by ``spark.sql.files.maxPartitionBytes``), at least one
    and at most one a file. The sizes come from one listing of the files' common prefix (a
    few LIST requests, not one request a file). Each task is a Python worker's start-up and
    imports (a second or more on a loaded machine), so a small lake is read by one task."""
    if not files:
        return 1
    prefix = posixpath.commonpath([f.split("://", 1)[-1] for f in files])
    scheme = files[0].split("://", 1)[0] + "://" if "://" in files[0] else ""
    try:
        listed = storage.fs(files[0]).find(scheme + prefix, detail=True)
        sizes = {str(k).split("://", 1)[-1]: int(v.get("size") or 0) for k, v in listed.items()}
        total = sum(sizes.get(f.split("://", 1)[-1], 0) for f in files)
    except (OSError, ValueError):  # no listing: one task a file, as Spark would
        return len(files)
    return max(1, min(len(files), -(-total // task_bytes)))


def read(session: Any, files: Sequence[str], storage: Storage) -> Any:
    """A lazy DataFrame of the Parquet objects ``files`` (URIs), read by the executors."""
    _register(session)
    task_bytes = int(session.conf.get(READ_TASK_BYTES_KEY, str(READ_TASK_BYTES)))
    tasks = reading_tasks(files, storage, task_bytes=max(1, task_bytes))
    return (
        session.read.format(SOURCE)
        .option("files", json.dumps(list(files)))
        .option("storage", json.dumps(storage.options))
        .option("partitions", str(tasks))
        .load()
    )


def write(frame: Any, uri: str, storage: Storage) -> None:
    """Write ``frame`` under the directory ``uri`` from the executors, committed by a
    manifest (replacing what was there)."""
    _register(frame.sparkSession)
    (
        frame.write.format(SOURCE)
        .mode("overwrite")
        .option("path", uri)
        .option("storage", json.dumps(storage.options))
        .save()
    )
