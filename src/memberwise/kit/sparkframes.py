"""Between Ibis tables and Spark DataFrames, for the stages that use Spark's own libraries
(pandas UDFs, Spark ML) when the engine is Spark. No business rules.

An Ibis expression becomes a lazy Spark DataFrame (nothing runs, nothing reaches the driver)
and a DataFrame becomes an Ibis table again through a temporary view, so a stage can mix Ibis
expressions with ``mapInPandas`` or ``pyspark.ml`` and still write through
:func:`memberwise.kit.warehouse.write_parquet`.
"""

from __future__ import annotations

import uuid
from typing import Any

import ibis
import ibis.expr.types as ir

from memberwise.kit.warehouse import spark_dataframe


def is_spark(con: ibis.BaseBackend) -> bool:
    """True when ``con`` is Ibis's PySpark backend."""
    return bool(con.name == "pyspark")


def session(con: ibis.BaseBackend) -> Any:
    """The SparkSession behind a PySpark backend."""
    return con._session


def to_spark(con: ibis.BaseBackend, expr: ir.Table) -> Any:
    """``expr`` as a lazy Spark DataFrame (its in-memory tables registered first)."""
    return spark_dataframe(con, expr)


def from_spark(con: ibis.BaseBackend, frame: Any) -> ir.Table:
    """A Spark DataFrame as an Ibis table of ``con`` (through a temporary view)."""
    name = f"frame_{uuid.uuid4().hex}"
    frame.createOrReplaceTempView(name)
    return con.table(name)


def partitions_for(rows: int, *, per_partition: int, least: int) -> int:
    """How many groups to split ``rows`` into so that one group holds about
    ``per_partition`` rows, never fewer than ``least`` groups (the cluster's parallelism)."""
    return max(least, -(-rows // per_partition))
