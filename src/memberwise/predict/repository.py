"""Every query of the predictions domain (the operational store)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Date,
    Float,
    Integer,
    RowMapping,
    String,
    bindparam,
    delete,
    func,
    select,
    update,
)

from memberwise.kit.db import upsert
from memberwise.predict.tables import member_predictions, prediction_models

PUBLISHED, SUPERSEDED = "published", "superseded"
#: A version whose rows are being written (not shown yet).
PUBLISHING = "publishing"

_TYPES: dict[str, Any] = {
    "member_id": String,
    "clv_12m_fen": BigInteger,
    "p_alive": Float,
    "churn_risk": Float,
    "expected_purchases_90d": Float,
    "expected_spend_fen": BigInteger,
    "repeat_purchases": Integer,
    "purchase_days": Integer,
    "purchase_interval_days": Float,
    "next_purchase_date": Date,
    "best_hour": Integer,
    "best_weekday": Integer,
}
#: The per-member columns a publisher passes, in :data:`_TYPES` order.
MEMBER_COLUMNS: tuple[str, ...] = tuple(_TYPES)


def live_model(conn: Connection) -> RowMapping | None:
    """The published model version (the latest, should there be several)."""
    query = (
        select(prediction_models)
        .where(prediction_models.c.status == PUBLISHED)
        .order_by(prediction_models.c.published_at.desc(), prediction_models.c.model_version.desc())
        .limit(1)
    )
    return conn.execute(query).mappings().first()


def supersede_others(conn: Connection, model_version: str) -> None:
    conn.execute(
        update(prediction_models)
        .where(
            prediction_models.c.status == PUBLISHED,
            prediction_models.c.model_version != model_version,
        )
        .values(status=SUPERSEDED)
    )


def upsert_model(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(upsert(conn, prediction_models, ["model_version"], **values))


def upsert_members(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Upsert member predictions (the :data:`MEMBER_COLUMNS` plus ``model_version``); their
    as_of and published_at are copied from the model version's row in SQL."""
    if not rows:
        return
    version = bindparam("model_version", type_=String)
    times = {
        name: select(prediction_models.c[name])
        .where(prediction_models.c.model_version == version)
        .scalar_subquery()
        for name in ("as_of", "published_at")
    }
    values = {name: bindparam(name, type_=type_) for name, type_ in _TYPES.items()}
    stmt = upsert(conn, member_predictions, ["member_id"], model_version=version, **values, **times)
    conn.execute(stmt, rows)


def delete_other_versions(conn: Connection, model_version: str) -> int:
    result = conn.execute(
        delete(member_predictions).where(member_predictions.c.model_version != model_version)
    )
    return result.rowcount


def get_member(conn: Connection, member_id: str) -> RowMapping | None:
    query = select(member_predictions).where(member_predictions.c.member_id == member_id)
    return conn.execute(query).mappings().first()


def best_hours(conn: Connection, member_ids: list[str]) -> dict[str, int]:
    """Each member's best hour to be reached (0-23, the display time zone), where predicted."""
    out: dict[str, int] = {}
    for i in range(0, len(member_ids), 1000):
        query = select(member_predictions.c.member_id, member_predictions.c.best_hour).where(
            member_predictions.c.member_id.in_(member_ids[i : i + 1000])
        )
        out.update({m: int(h) for m, h in conn.execute(query)})
    return out


def churn_at_least(conn: Connection, threshold: float) -> list[tuple[str, str]]:
    """(member, model version) of members whose churn risk is at least ``threshold``."""
    query = (
        select(member_predictions.c.member_id, member_predictions.c.model_version)
        .where(member_predictions.c.churn_risk >= threshold)
        .order_by(member_predictions.c.member_id)
    )
    return [(m, v) for m, v in conn.execute(query)]


def prediction_values(conn: Connection) -> tuple[list[int], list[float]]:
    """Every scored member's 12-month CLV (fen) and churn risk, where known."""
    rows = conn.execute(
        select(member_predictions.c.clv_12m_fen, member_predictions.c.churn_risk)
    ).all()
    clv = [int(c) for c, _ in rows if c is not None]
    risk = [float(r) for _, r in rows if r is not None]
    return clv, risk


def scored_members(conn: Connection) -> int:
    """How many member rows the predictions hold (one index read)."""
    return int(conn.execute(select(func.count()).select_from(member_predictions)).scalar_one())
