"""The Ibis engine factory: the one place a warehouse engine (DuckDB or Spark) is opened.

Analytics code receives the backend and Ibis tables and never names an engine. Both engines run
with their session time zone set to UTC, so timestamps compare and extract the same way.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ibis
import ibis.expr.types as ir
import pyarrow.parquet as pq

BATCH_ROWS = 256 * 1024
#: Spark settings for local mode on a small machine: few shuffle partitions (the default 200
#: turns every small aggregate into 200 tasks), no UI, UTC sessions, Arrow transfers.
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
}


def duckdb_backend(
    *, temp_dir: Path | None = None, memory_limit: str | None = None
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
    return con


def spark_backend(*, master: str | None = None) -> ibis.BaseBackend:
    """A PySpark backend in local mode (``MEMBERWISE_SPARK_MASTER`` or ``local[*]``).

    Raises RuntimeError when the ``[spark]`` extra is not installed.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError(
            "the Spark engine needs the spark extra: pip install 'memberwise[spark]'"
        ) from exc
    builder = SparkSession.builder.master(
        master or os.environ.get("MEMBERWISE_SPARK_MASTER", "local[*]")
    ).appName("memberwise")
    for key, value in SPARK_CONF.items():
        builder = builder.config(key, value)
    # Spark's catalog would otherwise create ./spark-warehouse in the working directory.
    warehouse = Path(tempfile.gettempdir()) / "memberwise-spark-warehouse"
    builder = builder.config("spark.sql.warehouse.dir", str(warehouse))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return ibis.pyspark.connect(session)


def read_parquet(con: ibis.BaseBackend, paths: list[Path]) -> ir.Table:
    """Parquet files as one Ibis table on any backend (Ibis's PySpark reader takes one path)."""
    if con.name == "pyspark":
        session = con._session
        name = f"parquet_{uuid.uuid4().hex}"
        session.read.parquet(*(str(p) for p in paths)).createOrReplaceTempView(name)
        return con.table(name)
    return con.read_parquet([str(p) for p in paths], hive_partitioning=False)


def write_parquet(con: ibis.BaseBackend, expr: ir.Table, path: Path) -> int:
    """Write ``expr``'s rows to one Parquet file at ``path`` atomically; the number of rows.

    DuckDB writes with its own parallel ``COPY``; other engines stream Arrow batches to
    pyarrow's writer (one file either way, so readers need not care which engine wrote it).
    """
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        if con.name == "duckdb":
            # Registers the expression's in-memory tables (memtables), as execute() would.
            con._run_pre_execute_hooks(expr)
            sql = con.compile(expr)
            raw = con.con
            raw.execute(
                f"COPY ({sql}) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd, "
                "COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 262144)"
            )
            rows = int(pq.ParquetFile(tmp).metadata.num_rows)
        else:
            schema = expr.schema().to_pyarrow()
            rows = 0
            with pq.ParquetWriter(tmp, schema, compression="zstd", compression_level=1) as out:
                for batch in con.to_pyarrow_batches(expr, chunk_size=BATCH_ROWS):
                    out.write_batch(batch.cast(schema) if batch.schema != schema else batch)
                    rows += batch.num_rows
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


@contextmanager
def open_backend(engine: str, *, temp_dir: Path | None = None) -> Iterator[ibis.BaseBackend]:
    """The warehouse backend for ``engine``, closed afterwards (a Spark session is kept: its
    JVM takes seconds to start and other builds in the process reuse it)."""
    if engine == "spark":  # config.Engine is a StrEnum: kit stays below config
        yield spark_backend()
        return
    con = duckdb_backend(temp_dir=temp_dir)
    try:
        yield con
    finally:
        con.disconnect()
