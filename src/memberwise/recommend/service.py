"""Recommendations served from the operational store: each member's published list re-ranked
with the member's last minutes, similar items and coupon suggestions.

The item catalog lives in :mod:`~memberwise.recommend.catalog`, publishing a build (and its
gate) in :mod:`~memberwise.recommend.publishing`, the batch export in
:mod:`~memberwise.recommend.export`. What the build stage and the other domains read from those
is re-exported here, so this module stays the domain's one door.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, RowMapping

from memberwise.kit.errors import InvalidRequest
from memberwise.kit.time import utcnow
from memberwise.recommend import repository
from memberwise.recommend.catalog import ItemNotFound
from memberwise.recommend.catalog import catalog_table as catalog_table
from memberwise.recommend.catalog import categories_table as categories_table
from memberwise.recommend.publishing import COUPONS as COUPONS
from memberwise.recommend.publishing import FALLBACKS as FALLBACKS
from memberwise.recommend.publishing import GATE_METRICS as GATE_METRICS
from memberwise.recommend.publishing import RECOMMENDATIONS as RECOMMENDATIONS
from memberwise.recommend.publishing import SECTION as SECTION
from memberwise.recommend.publishing import SIMILAR as SIMILAR
from memberwise.recommend.publishing import build_note as build_note
from memberwise.recommend.publishing import publish_build as publish_build
from memberwise.recommend.schemas import (
    CouponSuggestion,
    CouponSuggestionsOut,
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


class InvalidContext(InvalidRequest):
    code = "invalid_context"


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


def coupon_uplifts(conn: Connection, template: str, member_ids: Sequence[str]) -> dict[str, float]:
    """The coupon targeting's published uplift of ``template`` for the members it scored (the
    others were not targeted with it): campaigns evaluate the targeting by Qini / AUUC on an
    experiment's arms with these scores."""
    return repository.coupon_uplifts(conn, template, member_ids)


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
