"""Recommendations in the operational store: the item catalog, publishing a build's lists,
serving them re-ranked with the member's last minutes, similar items, coupon suggestions and
the batch export.

Publishing applies the one gate on models: a build's lists replace the serving ones only if
its offline metrics are at least those of the serving model (:func:`decide`); otherwise the
model is recorded as ``rejected`` with the reason and the old lists keep serving.
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Connection, Engine, RowMapping

from memberwise.kit.errors import InvalidRequest, NotFound
from memberwise.kit.storage import parquet_sql, read_table
from memberwise.kit.time import as_utc, utcnow
from memberwise.recommend import repository
from memberwise.recommend.schemas import (
    CouponSuggestion,
    CouponSuggestionsOut,
    ItemIn,
    ItemOut,
    ItemsImportResult,
    RecModelOut,
    RecModelsOut,
    RecommendationsOut,
    RecommendedItem,
    SimilarItem,
    SimilarOut,
)
from memberwise.recommend.serving import (
    Context,
    ItemFacts,
    RecentEvents,
    RerankInput,
    ServingCache,
    fallback_keys,
    fill,
    rerank,
    signals,
)


class ItemNotFound(NotFound):
    code = "item_not_found"


class InvalidContext(InvalidRequest):
    code = "invalid_context"


class InvalidItems(InvalidRequest):
    code = "invalid_items"


#: Build artifacts the publisher reads (written by :mod:`memberwise.recommend.stage`).
RECOMMENDATIONS = "recommendations.parquet"
SIMILAR = "similar_items.parquet"
FALLBACKS = "fallbacks.parquet"
COUPONS = "coupon_suggestions.parquet"
#: build.json key of the recommendations stage's record.
SECTION = "recommendations"
#: Metrics the publish gate compares, when the build does not name its own.
GATE_METRICS: tuple[str, ...] = ("recall@10", "ndcg@10")
_BATCH = 10_000

# --- the item catalog -------------------------------------------------------------------------

ITEM_COLUMNS: tuple[str, ...] = tuple(ItemIn.model_fields)


def _item_out(row: RowMapping) -> ItemOut:
    return ItemOut.model_validate(dict(row))


def put_item(conn: Connection, item_id: str, item: ItemIn) -> ItemOut:
    """Store the item's full state (creating it if new); a replay changes nothing.

    Raises InvalidItems when ``item_id`` is empty or longer than 128 characters.
    """
    if not 0 < len(item_id) <= 128:
        raise InvalidItems("an item_id has 1 to 128 characters")
    row = {"item_id": item_id, **item.model_dump(), "updated_at": utcnow()}
    current = repository.existing_items(conn, [item_id]).get(item_id)
    if current is None or any(current[k] != row[k] for k in ITEM_COLUMNS):
        repository.upsert_items(conn, [row])
    stored = repository.get_item(conn, item_id)
    assert stored is not None
    return _item_out(stored)


def get_item(conn: Connection, item_id: str) -> ItemOut:
    """The stored item. Raises ItemNotFound."""
    row = repository.get_item(conn, item_id)
    if row is None:
        raise ItemNotFound(f"no item {item_id!r} in the catalog")
    return _item_out(row)


def _column(table: pa.Table, name: str, type_: pa.DataType) -> list[Any]:
    if name not in table.column_names:
        return [None] * table.num_rows
    values: list[Any] = pc.cast(table.column(name), type_).to_pylist()
    return values


def import_items(
    conn: Connection, table: pa.Table, *, categories: pa.Table | None = None
) -> ItemsImportResult:
    """Create or replace the items of ``table`` (column ``item_id`` and any of
    :data:`ITEM_COLUMNS`; ``consumable`` is true when ``rebuy_days`` is set and the column is
    absent). ``categories`` (``category_id``, ``parent_id``, ``name``) fills
    ``parent_category_id`` and the category names that reasons show.

    Raises InvalidItems when ``item_id`` is missing, empty or repeated, or a value does not
    convert (nothing is written then).
    """
    if "item_id" not in table.column_names:
        raise InvalidItems("the items file has no item_id column")
    try:
        ids = _column(table, "item_id", pa.string())
        parents = _column(table, "parent_category_id", pa.string())
        leaves = _column(table, "category_id", pa.string())
        if categories is not None and "parent_id" in categories.column_names:
            parent_of = dict(
                zip(
                    _column(categories, "category_id", pa.string()),
                    _column(categories, "parent_id", pa.string()),
                    strict=True,
                )
            )
            parents = [p or parent_of.get(c or "") for p, c in zip(parents, leaves, strict=True)]
        rebuy = _column(table, "rebuy_days", pa.int64())
        consumable = (
            _column(table, "consumable", pa.bool_())
            if "consumable" in table.column_names
            else [r is not None for r in rebuy]
        )
        launched = _column(table, "launched_at", pa.timestamp("us", tz="UTC"))
        columns = {
            "title": _column(table, "title", pa.string()),
            "category_id": leaves,
            "parent_category_id": parents,
            "brand": _column(table, "brand", pa.string()),
            "merchant_id": _column(table, "merchant_id", pa.string()),
            "price": _column(table, "price", pa.int64()),
            "launched_at": launched,
            "consumable": consumable,
            "rebuy_days": rebuy,
            "in_stock": _column(table, "in_stock", pa.bool_()),
            "hidden": _column(table, "hidden", pa.bool_()),
        }
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidItems(f"the items file has a value that does not convert: {exc}") from exc
    if categories is not None and {"category_id", "name"} <= set(categories.column_names):
        repository.upsert_categories(
            conn,
            [
                {"category_id": c, "parent_id": p, "name": n}
                for c, p, n in zip(
                    _column(categories, "category_id", pa.string()),
                    _column(categories, "parent_id", pa.string()),
                    _column(categories, "name", pa.string()),
                    strict=True,
                )
                if c and n
            ],
        )
    bad = [i for i, v in enumerate(ids) if not v or len(v) > 128]
    if bad:
        raise InvalidItems(f"row {bad[0] + 1}: item_id must have 1 to 128 characters")
    if len(set(ids)) != len(ids):
        raise InvalidItems("the items file lists an item_id more than once")
    now = utcnow()
    created = updated = unchanged = 0
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start : start + _BATCH]
        current = repository.existing_items(conn, chunk)
        rows = []
        for offset, item_id in enumerate(chunk):
            i = start + offset
            values = {name: values[i] for name, values in columns.items()}
            values["consumable"] = bool(values["consumable"])
            values["in_stock"] = True if values["in_stock"] is None else values["in_stock"]
            values["hidden"] = bool(values["hidden"])
            try:
                item = ItemIn.model_validate(values)
            except ValueError as exc:
                raise InvalidItems(f"row {i + 1} ({item_id}): {exc}") from exc
            row = {"item_id": item_id, **item.model_dump(), "updated_at": now}
            old = current.get(item_id)
            if old is None:
                created += 1
            elif any(old[k] != row[k] for k in ITEM_COLUMNS):
                updated += 1
            else:
                unchanged += 1
                continue
            rows.append(row)
        repository.upsert_items(conn, rows)
    return ItemsImportResult(created=created, updated=updated, unchanged=unchanged)


def read_table_file(path: Path) -> pa.Table:
    """A Parquet, CSV or JSON-lines file as an Arrow table. Raises InvalidItems."""
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson

    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        if path.suffix == ".csv":
            return pacsv.read_csv(path)
        if path.suffix in (".jsonl", ".ndjson", ".json"):
            return pajson.read_json(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InvalidItems(f"cannot read {path}: {exc}") from exc
    raise InvalidItems(f"{path}: use a .parquet, .csv or .jsonl file")


def catalog_table(conn: Connection) -> pa.Table:
    """The whole catalog as Arrow (what the build's recommender reads)."""
    from memberwise.recommend.tables import items

    names = [c.name for c in items.c]
    rows = list(repository.catalog_rows(conn))
    data = {n: [r[n] for r in rows] for n in names}
    types = {
        "price": pa.int64(),
        "rebuy_days": pa.int32(),
        "launched_at": pa.timestamp("us", tz="UTC"),
        "updated_at": pa.timestamp("us", tz="UTC"),
        "consumable": pa.bool_(),
        "in_stock": pa.bool_(),
        "hidden": pa.bool_(),
    }
    return pa.table({n: pa.array(data[n], types.get(n, pa.string())) for n in names})


def categories_table(conn: Connection) -> pa.Table:
    """The category tree (category_id, parent_id, name) as Arrow."""
    rows = repository.categories(conn)
    return pa.table(
        {
            "category_id": pa.array([r["category_id"] for r in rows], pa.string()),
            "parent_id": pa.array([r["parent_id"] for r in rows], pa.string()),
            "name": pa.array([r["name"] for r in rows], pa.string()),
        }
    )


# --- publishing a build -----------------------------------------------------------------------


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
    for batch in con.sql(sql).to_arrow_reader(_BATCH):
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


# --- serving ----------------------------------------------------------------------------------

_CONFIGS: dict[str, dict[str, Any]] = {}


def _config(conn: Connection, model_id: str | None) -> dict[str, Any]:
    """The serving settings the model was published with (cached: a model never changes)."""
    if model_id is None:
        return {}
    found = _CONFIGS.get(model_id)
    if found is None:
        row = repository.get_model(conn, model_id)
        found = orjson.loads(row["config"]) if row is not None else {}
        _CONFIGS[model_id] = found
    return found


def _fact(r: RowMapping) -> ItemFacts:
    return ItemFacts(
        category_id=r["category_id"],
        parent_category_id=r["parent_category_id"],
        title=r["title"],
        in_stock=bool(r["in_stock"]),
        hidden=bool(r["hidden"]),
        launched_at=r["launched_at"],
        consumable=bool(r["consumable"]),
    )


_CACHES: weakref.WeakKeyDictionary[Engine, ServingCache] = weakref.WeakKeyDictionary()


def _cache(conn: Connection) -> ServingCache:
    """The process's serving cache of this connection's store."""
    cache = _CACHES.get(conn.engine)
    if cache is None:
        cache = _CACHES.setdefault(conn.engine, ServingCache())
    return cache


def sync_catalog(conn: Connection) -> ServingCache:
    """The store's serving cache, with the items changed since its last look re-read."""
    cache = _cache(conn)
    since = cache.changed_since(utcnow())
    # The first look reads the whole catalog (one scan, ~0.3 s a 100k items), so requests
    # never wait for item reads afterwards; later looks read what changed.
    changed = repository.items_changed_since(conn, since or datetime.min.replace(tzinfo=UTC))
    if changed:
        cache.update_facts({r["item_id"]: _fact(r) for r in changed})
    return cache


def _facts(
    conn: Connection, item_ids: Sequence[str], cache: ServingCache | None = None
) -> dict[str, ItemFacts]:
    """Facts of the known ones of ``item_ids``: from memory, the misses in one query."""
    cache = cache or sync_catalog(conn)
    known = cache.facts
    missing = [i for i in dict.fromkeys(item_ids) if i not in known]
    if missing:
        found: dict[str, ItemFacts | None] = dict.fromkeys(missing)
        found.update({r["item_id"]: _fact(r) for r in repository.item_facts(conn, missing)})
        cache.update_facts(found)
        known = cache.facts
    out: dict[str, ItemFacts] = {}
    for i in item_ids:
        fact = known.get(i)
        if fact is not None:
            out[i] = fact
    return out


def _similar(
    conn: Connection, cache: ServingCache, model_id: str | None, item_ids: Sequence[str]
) -> dict[str, list[tuple[str, float]]]:
    """Similar-items lists of ``item_ids`` (cached by the serving model)."""
    if not item_ids:
        return {}
    model = model_id or repository.serving_model_id(conn) or ""
    out: dict[str, list[tuple[str, float]]] = {}
    missing = []
    for item in item_ids:
        hit = cache.get_list("similar", model, item)
        if hit is None:
            missing.append(item)
        elif hit:
            out[item] = hit  # type: ignore[assignment]
    if missing:
        found = repository.similar_lists(conn, missing)
        for item in missing:
            entries = (
                [(str(i), float(s)) for i, s in orjson.loads(found[item])] if item in found else []
            )
            cache.put_list("similar", model, item, entries)
            if entries:
                out[item] = entries
    return out


def _fallbacks(
    conn: Connection, cache: ServingCache, model_id: str | None, keys: Sequence[str]
) -> tuple[str | None, list[tuple[str, list[tuple[str, float, str]]]]]:
    """(the model that made them, the fallback lists of ``keys`` that exist, in order)."""
    model = model_id or repository.serving_model_id(conn)
    if model is None:
        return None, []
    lists: dict[str, list[tuple[str, float, str]]] = {}
    missing = []
    for key in keys:
        hit = cache.get_list("fallback", model, key)
        if hit is None:
            missing.append(key)
        else:
            lists[key] = hit  # type: ignore[assignment]
    if missing:
        found = repository.fallbacks(conn, missing)
        for key in missing:
            entries = (
                [(str(i), float(s), str(r)) for i, s, r in orjson.loads(found[key][1])]
                if key in found
                else []
            )
            cache.put_list("fallback", model, key, entries)
            lists[key] = entries
    return model, [(k, lists[k]) for k in keys if lists.get(k)]


def parse_context(text: str) -> Context:
    """Raises InvalidContext for anything but home, cart or item:{id}."""
    context = Context.parse(text)
    if context is None:
        raise InvalidContext(
            f"context {text!r} is not one of home, cart or item:{{item_id}}",
            details={"context": text},
        )
    return context


#: Exclusions registered by higher domains (merchants keeps members away from bad shops):
#: ``hook(conn, member_id)`` returns item ids the member must not be shown.
EXCLUSION_HOOKS: list[Callable[[Connection, str], frozenset[str]]] = []
#: Boosts registered by higher domains (merchants favours badge holders): ``hook(conn,
#: member_id)`` returns score multipliers by item id; the list is re-ordered by them.
BOOST_HOOKS: list[Callable[[Connection, str], Mapping[str, float]]] = []


def recommend(
    conn: Connection,
    recent: RecentEvents,
    member_id: str,
    *,
    n: int = 20,
    category: str | None = None,
    context: str = "home",
    now: datetime | None = None,
    personalize: bool = True,
) -> RecommendationsOut:
    """The member's list for ``context``: precomputed, lifted by the last minutes, filtered,
    filled from the fallback chain. Always ``n`` items when the catalog has them.

    ``personalize=False`` (the member refused personalised recommendations) uses nothing of
    the member's: no own list, no recent events, no region; only the general fallback lists.

    Raises InvalidContext.
    """
    where = parse_context(context)
    now = now or utcnow()
    row = repository.member_list(conn, member_id) if personalize else None
    events = recent.for_member(member_id, now) if personalize else []
    strength = signals(events, where, now)
    bought = frozenset(e.item_id for e in events if e.type == "purchase")
    base: list[tuple[str, float, str, str]] = []
    model_id = region = top_category = None
    if row is not None:
        base = [
            (str(i), float(s), str(r), str(src)) for i, s, r, src in orjson.loads(row["entries"])
        ]
        model_id, region, top_category = row["model_id"], row["region"], row["top_category"]
    cache = sync_catalog(conn)
    similar = _similar(conn, cache, model_id, list(strength))
    wanted = [i for i, *_ in base] + [i for lst in similar.values() for i, _ in lst]
    wanted += list(strength) + list(bought)
    facts = _facts(conn, wanted, cache)
    titles = {k: f.title for k, f in facts.items()}
    config = _config(conn, model_id)
    chosen = rerank(
        RerankInput(
            base=base, signals=strength, similar=similar, facts=facts, titles=titles, bought=bought
        ),
        n=n,
        now=now,
        category=category,
        context=where,
        diversity_share=float(config.get("diversity_share", 0.5)),
    )
    blocked = frozenset().union(*(hook(conn, member_id) for hook in EXCLUSION_HOOKS))
    chosen = [e for e in chosen if e.item_id not in blocked]
    boost: dict[str, float] = {}
    for boost_hook in BOOST_HOOKS:
        boost.update(boost_hook(conn, member_id))
    if boost:
        chosen.sort(key=lambda e: (-e.score * boost.get(e.item_id, 1.0), e.item_id))
    personalized = bool(chosen)
    if len(chosen) < n:
        keys = fallback_keys(region, category or top_category)
        fallback_model, lists = _fallbacks(conn, cache, model_id, keys)
        model_id = model_id or fallback_model
        facts.update(_facts(conn, [i for _, lst in lists for i, _, _ in lst], cache))
        exclude = (set(strength) & {where.item_id or ""}) | blocked
        exclude |= {i for i in bought if (f := facts.get(i)) is not None and not f.consumable}
        chosen = fill(
            chosen, lists, facts, n=n, now=now, category=category, exclude=frozenset(exclude)
        )
    return RecommendationsOut(
        member_id=member_id,
        model_id=model_id,
        context=str(where),
        personalized=personalized,
        consent_withheld=not personalize,
        items=[
            RecommendedItem(
                rank=rank,
                item_id=e.item_id,
                score=round(e.score, 6),
                reason=e.reason,
                source=e.source,
                title=facts[e.item_id].title,
                category_id=facts[e.item_id].category_id,
            )
            for rank, e in enumerate(chosen, start=1)
        ],
    )


def similar_items(conn: Connection, item_id: str, *, n: int = 20) -> SimilarOut:
    """Items bought or browsed with ``item_id`` that are on sale now; when it has no learned
    neighbours, the popular items of its category. Raises ItemNotFound for an item neither
    in the catalog nor in the published lists."""
    found = repository.similar_lists(conn, [item_id])
    own = repository.item_facts(conn, [item_id])
    if not found and not own:
        raise ItemNotFound(f"no item {item_id!r} in the catalog")
    now = utcnow()
    entries = [(i, float(s)) for i, s in orjson.loads(found[item_id])] if found else []
    model_id = None
    facts = _facts(conn, [i for i, _ in entries])
    fallback = False
    kept = [
        (i, s)
        for i, s in entries
        if i != item_id
        and (f := facts.get(i))
        and not f.hidden
        and f.in_stock
        and (f.launched_at is None or f.launched_at <= now)
    ]
    if len(kept) < n and own:
        category = own[0]["category_id"]
        keys = [k for k in (f"category:{category}" if category else None, "all") if k]
        lists = repository.fallbacks(conn, keys)
        extra = [(i, float(s)) for k in keys if k in lists for i, s, _ in orjson.loads(lists[k][1])]
        facts.update(_facts(conn, [i for i, _ in extra]))
        seen = {i for i, _ in kept} | {item_id}
        top = max((s for _, s in extra), default=1.0) or 1.0
        floor = min((s for _, s in kept), default=1.0)
        for i, s in extra:
            f = facts.get(i)
            if len(kept) >= n or i in seen or f is None or f.hidden or not f.in_stock:
                continue
            if f.launched_at is not None and f.launched_at > now:
                continue
            seen.add(i)
            kept.append((i, 0.1 * floor * s / top))
            fallback = True
    return SimilarOut(
        item_id=item_id,
        model_id=model_id,
        fallback=fallback and not entries,
        items=[
            SimilarItem(
                rank=rank,
                item_id=i,
                score=round(s, 6),
                title=facts[i].title,
                category_id=facts[i].category_id,
            )
            for rank, (i, s) in enumerate(kept[:n], start=1)
        ],
    )


def suggested_coupons(conn: Connection, member_id: str) -> CouponSuggestionsOut:
    """The coupons the latest build's targeting chose for the member (maybe none)."""
    rows = repository.coupon_suggestions_of(conn, member_id)
    listed = repository.member_list(conn, member_id)
    best_hour = listed["best_hour"] if listed is not None else None
    if best_hour is None and rows:
        best_hour = rows[0]["best_hour"]
    return CouponSuggestionsOut(
        member_id=member_id,
        build_id=rows[0]["build_id"] if rows else None,
        best_hour=best_hour,
        suggestions=[
            CouponSuggestion(
                campaign=r["campaign"],
                template=r["template"],
                value=r["value"],
                uplift=r["uplift"],
                p_purchase=r["p_purchase"],
                best_hour=r["best_hour"],
                reason=r["reason"],
            )
            for r in rows
        ],
    )


# --- export -----------------------------------------------------------------------------------

EXPORT_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string()),
        pa.field("rank", pa.int32()),
        pa.field("item_id", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("reason", pa.string()),
    ]
)


def export_lists(conn: Connection, out: Path, *, n: int = 20) -> tuple[int, int]:
    """Write every member's published list (its first ``n`` items that are on sale now) to
    Parquet (``member_id, rank (1 = best), item_id, score, reason``); (members, rows)."""
    import os

    tmp = out.with_name(f".tmp-{out.name}")
    members = rows = 0
    after: str | None = None
    hidden = _unavailable(conn)
    with pq.ParquetWriter(tmp, EXPORT_SCHEMA, compression="zstd") as writer:
        while True:
            page = repository.member_lists(conn, after=after, limit=_BATCH)
            if not page:
                break
            columns: dict[str, list[Any]] = {name: [] for name in EXPORT_SCHEMA.names}
            for row in page:
                rank = 0
                for item_id, score, reason, _source in orjson.loads(row["entries"]):
                    if item_id in hidden:
                        continue
                    rank += 1
                    if rank > n:
                        break
                    columns["member_id"].append(row["member_id"])
                    columns["rank"].append(rank)
                    columns["item_id"].append(item_id)
                    columns["score"].append(float(score))
                    columns["reason"].append(reason)
                members += 1
                rows += min(rank, n)
            writer.write_table(pa.table(columns, schema=EXPORT_SCHEMA))
            after = page[-1]["member_id"]
    os.replace(tmp, out)
    return members, rows


def _unavailable(conn: Connection) -> set[str]:
    """Items that are hidden, out of stock or not launched yet (not exported)."""
    now = utcnow()
    return {
        r["item_id"]
        for r in repository.catalog_rows(conn)
        if r["hidden"]
        or not r["in_stock"]
        or (r["launched_at"] is not None and r["launched_at"] > now)
    }
