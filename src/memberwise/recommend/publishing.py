"""Publishing a build's recommendations into the operational store, behind the one gate on
models: a build's lists replace the serving ones only if its offline metrics are at least
those of the serving model (:func:`decide`); otherwise the model is recorded as ``rejected``
with the reason and the old lists keep serving."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
from sqlalchemy import Connection, RowMapping

from memberwise.kit.storage import parquet_sql, read_table, register_configured
from memberwise.kit.time import as_utc, utcnow
from memberwise.recommend import repository
from memberwise.recommend.catalog import BATCH
from memberwise.recommend.schemas import RecModelOut, RecModelsOut

#: Build artifacts the publisher reads (written by :mod:`memberwise.recommend.stage`).
RECOMMENDATIONS = "recommendations.parquet"
SIMILAR = "similar_items.parquet"
FALLBACKS = "fallbacks.parquet"
COUPONS = "coupon_suggestions.parquet"
#: build.json key of the recommendations stage's record.
SECTION = "recommendations"
#: Metrics the publish gate compares, when the build does not name its own.
GATE_METRICS: tuple[str, ...] = ("recall@10", "ndcg@10")


def decide(
    new: Mapping[str, float | None],
    serving: Mapping[str, float | None] | None,
    *,
    metrics: Sequence[str] = GATE_METRICS,
    tolerance: float = 0.0,
) -> tuple[bool, str]:
    """Whether a model with offline metrics ``new`` may replace the one with ``serving``.

    It may when nothing serves yet, or when every gate metric the serving model has is matched
    by the new one (``new >= serving * (1 - tolerance)``). A gate metric the new model lacks
    (too little data to evaluate) while the serving one has it blocks it.
    """
    if serving is None:
        return True, "first model: nothing was serving"
    worse = []
    for name in metrics:
        old, now = serving.get(name), new.get(name)
        if old is None or not math.isfinite(old):
            continue
        if now is None or not math.isfinite(now):
            worse.append(f"{name} not measured (serving: {old:.4f})")
        elif now < old * (1.0 - tolerance):
            worse.append(f"{name} {now:.4f} < serving {old:.4f}")
    if worse:
        return False, "kept the serving model: " + "; ".join(worse)
    compared = ", ".join(
        f"{m} {new.get(m) or 0:.4f} >= {serving.get(m) or 0:.4f}" for m in metrics if m in serving
    )
    return True, f"at least as good as the serving model ({compared or 'no metric to compare'})"


def _model_out(row: RowMapping) -> RecModelOut:
    stored: dict[str, Any] = orjson.loads(row["metrics"]) if row["metrics"] else {}
    flat = {
        k: (float(v) if isinstance(v, int | float) else None) for k, v in stored.items() if "@" in k
    }
    baselines: dict[str, dict[str, float]] = {}
    for entry in stored.get("evaluation") or []:
        method = str(entry.get("method", ""))
        if method.startswith("baseline: "):
            name = method.removeprefix("baseline: ")
            scores = baselines.setdefault(name, {})
            scores[f"recall@{entry['k']}"] = float(entry["recall"])
            scores[f"ndcg@{entry['k']}"] = float(entry["ndcg"])
    return RecModelOut(
        model_id=row["model_id"],
        status=row["status"],
        as_of=as_utc(row["as_of"]),
        created_at=as_utc(row["created_at"]),
        published_at=as_utc(row["published_at"]) if row["published_at"] else None,
        method=str(stored.get("method") or "ranker"),
        published_method=stored.get("published_method"),
        method_decision=stored.get("decision"),
        metrics=flat,
        baselines=baselines,
        decision=row["decision"],
    )


def list_models(conn: Connection, *, limit: int = 20) -> RecModelsOut:
    """The latest recommendation models with what orders their lists (the ranker or the
    member's own history), their metrics against the own-history baselines and the publish
    decisions."""
    serving = repository.serving_model(conn)
    return RecModelsOut(
        serving=serving["model_id"] if serving is not None else None,
        models=[_model_out(r) for r in repository.recent_models(conn, limit)],
    )


def build_note(build_dir: Path) -> str | None:
    """One line for a build's summary: what orders the recommendation lists and why (None
    when the build made none)."""
    path = build_dir / "build.json"
    if not path.is_file():
        return None
    section = json.loads(path.read_text(encoding="utf-8")).get(SECTION) or {}
    decision = section.get("decision")
    return f"recommendations: {decision}" if decision else None


@dataclass(frozen=True)
class PublishOutcome:
    model_id: str
    published: bool
    decision: str
    members: int
    similar: int
    fallbacks: int
    coupons: int


def _sql_path(path: Path) -> str:
    """The files of an artifact (one file, or a Spark-written directory) as a DuckDB list."""
    return parquet_sql(path)


def _json_batches(con: duckdb.DuckDBPyConnection, sql: str) -> Iterator[list[dict[str, Any]]]:
    for batch in con.sql(sql).to_arrow_reader(BATCH):
        yield batch.to_pylist()


def publish_build(conn: Connection, build_dir: Path) -> PublishOutcome | None:
    """Publish the build's recommendation artifacts, in the caller's transaction.

    Returns None when the build has no recommendations stage output. Coupon suggestions are
    replaced whatever the gate says (they follow the current budgets, not the model).
    """
    manifest_path = build_dir / "build.json"
    if not (build_dir / RECOMMENDATIONS).exists() or not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    section: dict[str, Any] = manifest.get(SECTION) or {}
    model_id = str(section.get("model_id") or manifest["build_id"])
    metrics: dict[str, float | None] = section.get("metrics") or {}
    config: dict[str, Any] = section.get("config") or {}
    serving = repository.serving_model(conn)
    if serving is not None and serving["model_id"] == model_id:
        ok, why = True, serving["decision"]
    else:
        previous = orjson.loads(serving["metrics"]) if serving is not None else None
        ok, why = decide(
            metrics,
            previous,
            metrics=section.get("gate_metrics") or GATE_METRICS,
            tolerance=float(config.get("publish_tolerance", 0.0)),
        )
    now = utcnow()
    repository.record_model(
        conn,
        {
            "model_id": model_id,
            "status": repository.SERVING if ok else repository.REJECTED,
            "as_of": as_utc(datetime.fromisoformat(manifest["as_of"])),
            "created_at": now
            if serving is None or serving["model_id"] != model_id
            else serving["created_at"],
            "published_at": now if ok else None,
            "metrics": json.dumps(metrics),
            "config": json.dumps(config),
            "decision": why,
        },
    )
    counts = {"members": 0, "similar": 0, "fallbacks": 0, "coupons": 0}
    con = duckdb.connect()
    register_configured(con)  # a Spark build's lists may be pointers to an object store
    try:
        if ok:
            repository.retire_others(conn, model_id)
            counts.update(_publish_lists(conn, con, build_dir, model_id))
        coupons = build_dir / COUPONS
        if coupons.exists():
            rows = read_table(coupons).to_pylist()
            build_id = str(manifest["build_id"])
            for row in rows:
                row["build_id"] = build_id
            repository.replace_coupon_suggestions(conn, rows)
            counts["coupons"] = len(rows)
    finally:
        con.close()
    return PublishOutcome(model_id=model_id, published=ok, decision=why, **counts)


def _publish_lists(
    conn: Connection, con: duckdb.DuckDBPyConnection, build_dir: Path, model_id: str
) -> dict[str, int]:
    recs = _sql_path(build_dir / RECOMMENDATIONS)
    profiles = build_dir / "profiles.parquet"
    mid = "'" + model_id.replace("'", "''") + "'"
    # Finite scores only: JSON has no NaN (a NaN score would become null and sort nowhere).
    score = "CASE WHEN isfinite(score) THEN score ELSE 0 END"
    lists = f"""
        SELECT member_id,
               to_json(list(json_array(item_id, {score}, reason, source) ORDER BY rank))::VARCHAR
                   AS entries
        FROM read_parquet({recs}) GROUP BY member_id
    """
    if profiles.exists():
        sql = f"""
            SELECT l.member_id, {mid} AS model_id, p.region, p.top_category,
                   CAST(p.peak_hour AS INTEGER) AS best_hour, l.entries
            FROM ({lists}) l LEFT JOIN read_parquet({_sql_path(profiles)}) p USING (member_id)
            ORDER BY l.member_id
        """
    else:
        sql = f"""
            SELECT member_id, {mid} AS model_id, NULL::VARCHAR AS region,
                   NULL::VARCHAR AS top_category, NULL::INTEGER AS best_hour, entries
            FROM ({lists}) ORDER BY member_id
        """
    members = repository.replace_member_lists(conn, _json_batches(con, sql))
    similar = 0
    if (build_dir / SIMILAR).exists():
        sql = f"""
            SELECT item_id, {mid} AS model_id,
                   to_json(list(json_array(similar_item_id, {score}) ORDER BY rank))::VARCHAR
                       AS entries
            FROM read_parquet({_sql_path(build_dir / SIMILAR)}) GROUP BY item_id ORDER BY item_id
        """
        similar = repository.replace_similar(conn, _json_batches(con, sql))
    fallback_rows: list[dict[str, Any]] = []
    if (build_dir / FALLBACKS).exists():
        sql = f"""
            SELECT key, {mid} AS model_id,
                   to_json(list(json_array(item_id, {score}, reason) ORDER BY rank))::VARCHAR
                       AS entries
            FROM read_parquet({_sql_path(build_dir / FALLBACKS)}) GROUP BY key ORDER BY key
        """
        fallback_rows = con.sql(sql).to_arrow_table().to_pylist()
    repository.replace_fallbacks(conn, fallback_rows)
    return {"members": members, "similar": similar, "fallbacks": len(fallback_rows)}
