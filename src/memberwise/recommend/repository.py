"""Every query of the recommend domain: the item catalog, the published lists and models, and
the coupon suggestions, in the operational store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    RowMapping,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)

from memberwise.kit import rawsql
from memberwise.kit.db import string_values, upsert
from memberwise.recommend.tables import (
    coupon_suggestions,
    fallback_lists,
    item_categories,
    items,
    member_recommendations,
    rec_models,
    similar_items,
)

SERVING = "serving"
RETIRED = "retired"
REJECTED = "rejected"

# --- items ------------------------------------------------------------------------------------


def existing_items(conn: Connection, item_ids: Sequence[str]) -> dict[str, RowMapping]:
    """The stored rows of those of ``item_ids`` that exist, by id."""
    if not item_ids:
        return {}
    ids = string_values(conn, item_ids)
    query = select(items).where(items.c.item_id.in_(select(ids.c.value)))
    return {r["item_id"]: r for r in conn.execute(query).mappings()}


def upsert_items(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert or replace items (a row equal to the stored one is left alone)."""
    if not rows:
        return
    values = {c.name: bindparam(c.name, type_=c.type) for c in items.c}
    conn.execute(upsert(conn, items, ["item_id"], **values), rows)


def get_item(conn: Connection, item_id: str) -> RowMapping | None:
    return conn.execute(select(items).where(items.c.item_id == item_id)).mappings().first()


_FACT_COLUMNS = (
    items.c.item_id,
    items.c.category_id,
    items.c.parent_category_id,
    items.c.title,
    items.c.in_stock,
    items.c.hidden,
    items.c.launched_at,
    items.c.consumable,
)
# Built once: the serving path runs these on every request (statement building is a good
# share of a request's Python time).
_CHANGED_SINCE = select(*_FACT_COLUMNS).where(items.c.updated_at >= bindparam("since"))
_SERVING_MODEL_ID = select(rec_models.c.model_id).where(rec_models.c.status == SERVING)


def items_changed_since(conn: Connection, since: datetime) -> Sequence[RowMapping]:
    """The serving facts of items written at or after ``since`` (index range scan).

    Asked before every served list and nearly always empty, so the question is first put as
    one indexed probe on the driver's cursor; only a hit pays for the full statement.
    """
    probe = "SELECT 1 FROM items WHERE updated_at >= :since LIMIT 1"
    if rawsql.fetchone(conn, probe, {"since": rawsql.stamp(conn, since)}) is None:
        return []
    return conn.execute(_CHANGED_SINCE, {"since": since}).mappings().all()


def serving_model_id(conn: Connection) -> str | None:
    found: str | None = conn.execute(_SERVING_MODEL_ID).scalars().first()
    return found


def item_facts(conn: Connection, item_ids: Sequence[str]) -> Sequence[RowMapping]:
    """What the serving rules need of each of ``item_ids`` that exists (one query)."""
    if not item_ids:
        return []
    ids = string_values(conn, list(item_ids))
    query = select(*_FACT_COLUMNS).where(items.c.item_id.in_(select(ids.c.value)))
    return conn.execute(query).mappings().all()


def catalog_rows(conn: Connection) -> Iterator[RowMapping]:
    """Every item (the build reads the catalog from here)."""
    yield from conn.execute(select(items).order_by(items.c.item_id)).mappings()


def upsert_categories(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        values = {c.name: bindparam(c.name, type_=c.type) for c in item_categories.c}
        conn.execute(upsert(conn, item_categories, ["category_id"], **values), rows)


def categories(conn: Connection) -> Sequence[RowMapping]:
    query = select(item_categories).order_by(item_categories.c.category_id)
    return conn.execute(query).mappings().all()


# --- models -----------------------------------------------------------------------------------


def serving_model(conn: Connection) -> RowMapping | None:
    """The model whose lists the API serves (None before the first publish)."""
    query = (
        select(rec_models)
        .where(rec_models.c.status == SERVING)
        .order_by(rec_models.c.published_at.desc(), rec_models.c.model_id.desc())
        .limit(1)
    )
    return conn.execute(query).mappings().first()


def recent_models(conn: Connection, limit: int) -> Sequence[RowMapping]:
    """The latest ``limit`` models, newest first (serving, retired and rejected)."""
    query = (
        select(rec_models)
        .order_by(rec_models.c.created_at.desc(), rec_models.c.model_id.desc())
        .limit(limit)
    )
    return conn.execute(query).mappings().all()


def get_model(conn: Connection, model_id: str) -> RowMapping | None:
    return (
        conn.execute(select(rec_models).where(rec_models.c.model_id == model_id)).mappings().first()
    )


def record_model(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(upsert(conn, rec_models, ["model_id"], **values))


def retire_others(conn: Connection, model_id: str) -> None:
    conn.execute(
        update(rec_models)
        .where(rec_models.c.status == SERVING, rec_models.c.model_id != model_id)
        .values(status=RETIRED)
    )


# --- published lists --------------------------------------------------------------------------


def _replace(conn: Connection, table: Table, rows: Iterator[list[dict[str, Any]]]) -> int:
    """Replace every row of ``table`` with ``rows`` (given in batches); how many were written."""
    conn.execute(delete(table))
    written = 0
    for batch in rows:
        if batch:
            conn.execute(insert(table), batch)
            written += len(batch)
    return written


def replace_member_lists(conn: Connection, rows: Iterator[list[dict[str, Any]]]) -> int:
    return _replace(conn, member_recommendations, rows)


def replace_similar(conn: Connection, rows: Iterator[list[dict[str, Any]]]) -> int:
    return _replace(conn, similar_items, rows)


def replace_fallbacks(conn: Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(delete(fallback_lists))
    if rows:
        conn.execute(insert(fallback_lists), rows)


_MEMBER_LIST_COLUMNS = ("member_id", "model_id", "region", "top_category", "best_hour", "entries")


def member_list(conn: Connection, member_id: str) -> dict[str, Any] | None:
    """The member's published list and serving facts (a keyed read on the driver's cursor:
    every served list starts with it)."""
    row = rawsql.fetchone(
        conn,
        f"SELECT {', '.join(_MEMBER_LIST_COLUMNS)} FROM member_recommendations "
        "WHERE member_id = :member_id",
        {"member_id": member_id},
    )
    return None if row is None else dict(zip(_MEMBER_LIST_COLUMNS, row, strict=True))


def member_lists(conn: Connection, *, after: str | None, limit: int) -> Sequence[RowMapping]:
    """Members' lists in member_id order, one keyset page."""
    query = (
        select(member_recommendations.c.member_id, member_recommendations.c.entries)
        .order_by(member_recommendations.c.member_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(member_recommendations.c.member_id > after)
    return conn.execute(query).mappings().all()


def similar_lists(conn: Connection, item_ids: Sequence[str]) -> dict[str, str]:
    """item_id -> its similar-items JSON, for those of ``item_ids`` that have one."""
    if not item_ids:
        return {}
    if len(item_ids) == 1:
        query = select(similar_items.c.item_id, similar_items.c.entries).where(
            similar_items.c.item_id == item_ids[0]
        )
    else:
        ids = string_values(conn, list(item_ids))
        query = select(similar_items.c.item_id, similar_items.c.entries).where(
            similar_items.c.item_id.in_(select(ids.c.value))
        )
    return {r[0]: r[1] for r in conn.execute(query)}


def fallbacks(conn: Connection, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
    """key -> (model_id, fallback list JSON), for those of ``keys`` that exist."""
    if not keys:
        return {}
    ids = string_values(conn, list(keys))
    query = select(fallback_lists.c.key, fallback_lists.c.model_id, fallback_lists.c.entries).where(
        fallback_lists.c.key.in_(select(ids.c.value))
    )
    return {r[0]: (r[1], r[2]) for r in conn.execute(query)}


# --- coupon suggestions -----------------------------------------------------------------------


def replace_coupon_suggestions(conn: Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(delete(coupon_suggestions))
    for start in range(0, len(rows), 10_000):
        conn.execute(insert(coupon_suggestions), rows[start : start + 10_000])


def coupon_suggestions_of(conn: Connection, member_id: str) -> Sequence[RowMapping]:
    query = (
        select(coupon_suggestions)
        .where(coupon_suggestions.c.member_id == member_id)
        .order_by(coupon_suggestions.c.uplift.desc(), coupon_suggestions.c.campaign)
    )
    return conn.execute(query).mappings().all()


def coupon_uplifts(conn: Connection, template: str, member_ids: Sequence[str]) -> dict[str, float]:
    """The highest published uplift of ``template`` for each of ``member_ids`` that has one."""
    out: dict[str, float] = {}
    ids = list(member_ids)
    for i in range(0, len(ids), 1000):
        query = (
            select(coupon_suggestions.c.member_id, func.max(coupon_suggestions.c.uplift))
            .where(
                coupon_suggestions.c.template == template,
                coupon_suggestions.c.member_id.in_(ids[i : i + 1000]),
            )
            .group_by(coupon_suggestions.c.member_id)
        )
        out.update((m, float(u)) for m, u in conn.execute(query))
    return out
