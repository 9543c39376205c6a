"""Personas on a Spark cluster: the same method as :func:`~.personas.fit_personas`, with every
member-sized step in the executors.

- The fill values (largest or mean value of a field) and every field's mean and standard
  deviation after log1p are Spark aggregates over all members.
- k is chosen and k-means fitted on the driver from a sample of at most ``sample`` members
  (20,000 by default): exactly what the embedded path fits on at any scale, so the cluster
  runs the same method rather than another one. Up to that many members the sample is every
  member in member_id order, as on DuckDB, and the personas are the same; above it the sample
  is drawn by a seeded hash of the member id (the embedded path draws by position in
  member_id order, which would need a global sort). Spark ML's own k-means was not used: its
  k-means|| start and its simplified silhouette give other clusters than the embedded path,
  and its training over all members would buy nothing the 20,000-member fit lacks (the
  silhouette itself is O(n^2), so choosing k is done on a sample everywhere).
- Every member is assigned to the nearest centre in the executors (``mapInPandas``, the same
  NumPy transform and distance as :meth:`~.personas.Personas.assign`), and the clusters'
  sizes and feature sums, which order and describe them, are Spark aggregates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa

from memberwise.kit import sparkframes
from memberwise.profiles.personas import (
    LOG_FIELDS,
    NULL_IS_MAX,
    NULL_IS_MEAN,
    Cluster,
    _matrix,
    _nearest,
    _prepare,
    _standardize,
    describe_sums,
    fit_centers,
)

#: A pandas DataFrame (pandas ships no type stubs here).
Frame = Any


def _assign_batches(
    batches: Iterator[Frame],
    *,
    fields: tuple[str, ...],
    fill: np.ndarray[Any, Any],
    mean: np.ndarray[Any, Any],
    scale: np.ndarray[Any, Any],
    centers: np.ndarray[Any, Any],
) -> Iterator[Frame]:
    """Each batch's members with their nearest centre (raw index) and standardized features
    (``z0..``), for the clusters' sums (the executors run this)."""
    for frame in batches:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        z = _matrix(table, fields)
        _prepare(z, fields, fill)
        _standardize(z, mean, scale)
        out = frame[["member_id", "segment"]].copy()
        out["raw"] = _nearest(z, centers).astype("int32")
        for j in range(len(fields)):
            out[f"z{j}"] = z[:, j]
        yield out


def personas_on_spark(
    con: ibis.BaseBackend,
    rows: ir.Table,
    *,
    fields: Sequence[str],
    k_min: int,
    k_max: int,
    seed: int = 0,
    sample: int = 20_000,
    names: Mapping[int, str] | None = None,
) -> tuple[ir.Table, tuple[Cluster, ...], dict[int, float]]:
    """Personas of the members of ``rows`` (``member_id``, ``segment`` and the ``fields``):
    (an Ibis table of ``member_id``, ``segment``, ``persona``; the clusters described; the
    silhouette of each k tried)."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    fields = tuple(fields)
    frame = sparkframes.to_spark(con, rows)
    known = {
        name: F.when(~F.isnan(F.col(name).cast("double")), F.col(name).cast("double"))
        for name in fields
    }
    stats = frame.agg(
        F.count(F.lit(1)).alias("n"),
        *[F.max(known[f]).alias(f"max_{j}") for j, f in enumerate(fields)],
        *[F.avg(known[f]).alias(f"avg_{j}") for j, f in enumerate(fields)],
    ).collect()[0]
    n = int(stats["n"])
    fill = np.zeros(len(fields))
    for j, name in enumerate(fields):
        value = stats[f"max_{j}"] if name in NULL_IS_MAX else stats[f"avg_{j}"]
        if name in NULL_IS_MAX | NULL_IS_MEAN and value is not None:
            fill[j] = float(value)
    prepared = []
    for j, name in enumerate(fields):
        column = F.coalesce(known[name], F.lit(float(fill[j])))
        if name in LOG_FIELDS:
            column = F.log1p(F.greatest(column, F.lit(0.0)))
        prepared.append(column)
    moments = frame.agg(
        *[F.avg(c).alias(f"mean_{j}") for j, c in enumerate(prepared)],
        *[F.stddev_pop(c).alias(f"std_{j}") for j, c in enumerate(prepared)],
    ).collect()[0]
    mean = np.array([float(moments[f"mean_{j}"] or 0.0) for j in range(len(fields))])
    std = np.array([float(moments[f"std_{j}"] or 0.0) for j in range(len(fields))])
    scale = np.where(std > 1e-12, std, 1.0)

    chosen = frame
    if n > sample:
        bucket = F.pmod(F.xxhash64(F.col("member_id"), F.lit(seed)), F.lit(1_000_000))
        chosen = frame.where(bucket < F.lit(int(sample / n * 1_000_000)))
    picked_table = chosen.select("member_id", *fields).orderBy("member_id").toArrow()
    picked = _matrix(picked_table, fields)
    _prepare(picked, fields, fill)
    _standardize(picked, mean, scale)
    centers, scores = fit_centers(picked, n, k_min=k_min, k_max=k_max, seed=seed)
    if centers is None:
        centers = np.zeros((1, len(fields)))

    def assign(batches: Iterator[Frame]) -> Iterator[Frame]:
        return _assign_batches(
            batches, fields=fields, fill=fill, mean=mean, scale=scale, centers=centers
        )

    schema = "member_id string, segment string, raw int, " + ", ".join(
        f"z{j} double" for j in range(len(fields))
    )
    # Assigned twice (for the sums here, then for the written file): cheaper than caching
    # every member's features in the executors' memory.
    assigned = frame.select("member_id", "segment", *fields).mapInPandas(assign, schema)
    totals = {
        int(r["raw"]): r
        for r in assigned.groupBy("raw")
        .agg(
            F.count(F.lit(1)).alias("size"),
            *[F.sum(f"z{j}").alias(f"sum_{j}") for j in range(len(fields))],
        )
        .collect()
    }
    k = len(centers)
    sizes = np.array([int(totals[i]["size"]) if i in totals else 0 for i in range(k)])
    sums = np.array(
        [
            [float(totals[i][f"sum_{j}"]) if i in totals else 0.0 for j in range(len(fields))]
            for i in range(k)
        ]
    ).reshape(k, len(fields))
    keys = [(-int(sizes[i]), tuple(np.round(centers[i], 9))) for i in range(k)]
    order = sorted(range(k), key=lambda i: keys[i])
    new_id = np.argsort(np.array(order, dtype=np.int64))
    clusters = describe_sums(sums[order], sizes[order], fields, names or {}) if n else ()
    mapping = F.element_at(F.array(*[F.lit(int(i)) for i in new_id]), F.col("raw") + F.lit(1)).cast(
        "int"
    )
    result = assigned.select("member_id", "segment", mapping.alias("persona"))
    return sparkframes.from_spark(con, result), clusters, scores
