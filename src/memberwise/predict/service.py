"""Publish a build's predictions to the operational store and read the published ones.

The build's ``predictions`` stage writes ``predictions.parquet`` and ``predictions.json``;
:func:`publish_build` (a publisher of the build's publish stage, in its transaction) turns
them into one ``member_predictions`` row per member and one ``prediction_models`` row for the
model version. The API shows the latest published version only.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError
from sqlalchemy import Connection

from memberwise.kit.diffpublish import Commit, no_commit
from memberwise.kit.errors import InvalidRequest, NotFound
from memberwise.kit.storage import parquet_batches, read_table
from memberwise.kit.time import as_utc, utcnow
from memberwise.predict import repository
from memberwise.predict.schemas import ChurnFit, MemberPredictionsOut, ModelFit, ModelsOut

#: Rows per INSERT batch.
_CHUNK = 10_000
PREDICTIONS_FILE = "predictions.parquet"
SUMMARY_FILE = "predictions.json"


class PredictionsNotFound(NotFound):
    code = "predictions_not_found"


class InvalidPredictions(InvalidRequest):
    code = "invalid_predictions"


def _fen(value: float | None) -> int | None:
    """CNY (yuan, float) to whole fen; None stays None."""
    if value is None or not math.isfinite(value):
        return None
    return round(value * 100)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _read_summary(build_dir: Path) -> dict[str, Any]:
    path = build_dir / SUMMARY_FILE
    missing = [n for n in (SUMMARY_FILE, PREDICTIONS_FILE) if not (build_dir / n).exists()]
    if missing:
        raise InvalidPredictions(
            f"{build_dir} has no predictions to publish (missing {', '.join(missing)}): run "
            "`memberwise build` or `memberwise build --only predictions` first."
        )
    try:
        summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        summary["model_version"] = str(summary["model_version"])
        datetime.fromisoformat(summary["as_of"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidPredictions(f"{path} is not a valid predictions summary: {exc}") from exc
    return summary


def _rows(batch: pa.RecordBatch, model_version: str) -> list[dict[str, Any]]:
    rows = []
    for r in batch.to_pylist():
        rows.append(
            {
                "member_id": r["member_id"],
                "model_version": model_version,
                "clv_12m_fen": _fen(r["clv_12m"]),
                "p_alive": _finite(r["p_alive"]),
                "churn_risk": _finite(r["churn_risk"]),
                "expected_purchases_90d": _finite(r["expected_purchases_90d"]),
                "expected_spend_fen": _fen(r["expected_spend"]),
                "repeat_purchases": r["repeat_purchases"] or 0,
                "purchase_days": r["purchase_days"] or 0,
                "purchase_interval_days": _finite(r["purchase_interval_days"]),
                "next_purchase_date": r["next_purchase_date"],
                "best_hour": r["best_hour"],
                "best_weekday": r["best_weekday"],
            }
        )
    return rows


def publish_build(conn: Connection, build_dir: Path, *, commit: Commit = no_commit) -> int:
    """Publish the predictions in ``build_dir``: they become the ones the API shows.

    Records the model version (shown only at the end), upserts every member's predictions
    (``commit`` after each batch, so PostgreSQL never holds one transaction of a million rows),
    deletes those of members absent from this version, and then makes the version the
    published one (earlier ones become superseded). Every row names its
    version (a journey's churn crossing is per version), so each new version rewrites every
    row; publishing the same version again changes nothing, and after a crash converges.
    Returns the members published.

    Raises InvalidPredictions when the files are missing or malformed, or a member appears
    twice; nothing is written then.
    """
    summary = _read_summary(build_dir)
    version = summary["model_version"]
    ids = read_table(build_dir / PREDICTIONS_FILE, columns=["member_id"])["member_id"]
    if ids.null_count or pc.count_distinct(ids).as_py() != len(ids):
        raise InvalidPredictions(f"{build_dir / PREDICTIONS_FILE} repeats or lacks a member_id")
    live = repository.live_model(conn)
    already = live is not None and live["model_version"] == version
    published_at = live["published_at"] if live is not None and already else utcnow()
    fitted_at = summary.get("fitted_at")
    model = {
        "model_version": version,
        "as_of": as_utc(datetime.fromisoformat(summary["as_of"])),
        "fitted_at": as_utc(datetime.fromisoformat(fitted_at)) if fitted_at else None,
        "published_at": published_at,
        # Not shown until its rows are in (the rows copy its times, so it is written first).
        "status": repository.PUBLISHED if already else repository.PUBLISHING,
        "summary": json.dumps(summary, ensure_ascii=False),
    }
    repository.upsert_model(conn, model)
    commit()
    published = 0
    for batch in parquet_batches(build_dir / PREDICTIONS_FILE, _CHUNK):
        rows = _rows(batch, version)
        repository.upsert_members(conn, rows)
        published += len(rows)
        commit()
    repository.delete_other_versions(conn, version)
    # The flip, in the caller's last transaction.
    repository.supersede_others(conn, version)
    repository.upsert_model(conn, {**model, "status": repository.PUBLISHED})
    return published


def get_member_predictions(conn: Connection, member_id: str) -> MemberPredictionsOut:
    """The member's predictions in the published version. Raises PredictionsNotFound."""
    row = repository.get_member(conn, member_id)
    if row is None:
        raise PredictionsNotFound(
            f"no published predictions for member {member_id!r}: the member had no event "
            "before the latest published build, or no build with predictions was published"
        )
    return MemberPredictionsOut.model_validate(dict(row))


def get_models(conn: Connection) -> ModelsOut:
    """Diagnostics of the published model version (nulls before one is published)."""
    row = repository.live_model(conn)
    if row is None:
        return ModelsOut(model_version=None, as_of=None)
    summary = json.loads(row["summary"])

    def fit(name: str) -> ModelFit | None:
        value = summary.get(name)
        if not isinstance(value, dict):
            return None
        try:
            return ModelFit.model_validate(value)
        except ValidationError:
            return ModelFit(status=str(value.get("status", "unknown")))

    churn = summary.get("churn")
    return ModelsOut(
        model_version=row["model_version"],
        as_of=row["as_of"],
        fitted_at=row["fitted_at"],
        published_at=row["published_at"],
        members=summary.get("members"),
        customers=summary.get("customers"),
        repeat_buyers=summary.get("repeat_buyers"),
        unit=summary.get("unit"),
        currency=summary.get("currency"),
        clv=summary.get("clv") or {},
        bgnbd=fit("bgnbd"),
        gammagamma=fit("gammagamma"),
        churn=ChurnFit.model_validate(churn) if isinstance(churn, dict) else None,
    )


def best_hours(conn: Connection, member_ids: list[str]) -> dict[str, int]:
    """Each member's best hour to be reached (the habits model), for members it scored."""
    return repository.best_hours(conn, member_ids)


def churn_at_least(conn: Connection, threshold: float) -> list[tuple[str, str]]:
    """(member, model version) of members at or above a churn risk: a journey's trigger (the
    version makes a crossing under a new model a new crossing)."""
    return repository.churn_at_least(conn, threshold)


def prediction_values(conn: Connection) -> tuple[list[int], list[float]]:
    """Every scored member's 12-month CLV (fen) and churn risk: the distributions an operator
    looks at."""
    return repository.prediction_values(conn)


def scored_members(conn: Connection) -> int:
    """How many members the published predictions score (changes when a build publishes)."""
    return repository.scored_members(conn)
