"""The recommender's operational tables: the item catalog the platform keeps up to date, and the
lists a build publishes (per member, per item, fallbacks, coupon suggestions) with the model
that made them.

Every published list is one JSON text keyed by its owner (member, item or fallback key), so
the API answers a request with a few keyed reads and never joins or sorts at request time.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from memberwise.kit.db import metadata
from memberwise.kit.time import UTCDateTime

#: The platform's items as it tells memberwise about them (``memberwise items import`` for the
#: whole catalog, ``PUT /v1/items/{id}`` for one item's changes such as stock or hiding).
items = Table(
    "items",
    metadata,
    Column("item_id", String(128), primary_key=True),
    Column("title", Text, nullable=True),
    Column("category_id", String(128), nullable=True),
    # The category's parent (e.g. the top-level category), so `?category=` matches either.
    Column("parent_category_id", String(128), nullable=True),
    Column("brand", String(128), nullable=True),
    Column("merchant_id", String(128), nullable=True),
    # Minor units (fen).
    Column("price", BigInteger, nullable=True),
    # Items launched after "now" are shown only to members whose tier grants early access.
    Column("launched_at", UTCDateTime, nullable=True),
    Column("consumable", Boolean, nullable=False),
    Column("rebuy_days", Integer, nullable=True),
    Column("in_stock", Boolean, nullable=False),
    Column("hidden", Boolean, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Serving keeps item facts in memory and re-reads only the items changed since it last
    # looked: one index range scan per request, empty almost always.
    Index("ix_items_updated_at", "updated_at"),
)

#: The platform's category tree (names make reasons readable: "popular in 母婴 near you").
item_categories = Table(
    "item_categories",
    metadata,
    Column("category_id", String(128), primary_key=True),
    Column("parent_id", String(128), nullable=True),
    Column("name", Text, nullable=False),
)

#: Every model a build trained, with its offline metrics; exactly one is ``serving`` once any
#: was published (``retired``: served once; ``rejected``: worse than the one serving).
rec_models = Table(
    "rec_models",
    metadata,
    Column("model_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("as_of", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("published_at", UTCDateTime, nullable=True),
    # JSON text: the evaluation's metrics ({"recall@10": ..., ...}).
    Column("metrics", Text, nullable=False),
    # JSON text: the settings the lists were made with, also what serving applies.
    Column("config", Text, nullable=False),
    # Why it serves or was rejected, in a sentence.
    Column("decision", Text, nullable=False),
)

#: One precomputed list per member: JSON ``[[item_id, score, reason, source], ...]`` best first.
member_recommendations = Table(
    "member_recommendations",
    metadata,
    Column("member_id", String(128), primary_key=True),
    Column("model_id", String(64), nullable=False),
    # The member's region and top category (for the fallback fill without another read).
    Column("region", String(128), nullable=True),
    Column("top_category", String(128), nullable=True),
    # Best hour to reach the member, 0-23 in the program's time zone (null: no habit known).
    Column("best_hour", Integer, nullable=True),
    Column("entries", Text, nullable=False),
)

#: Items bought or browsed together: JSON ``[[similar_item_id, score], ...]`` best first.
similar_items = Table(
    "similar_items",
    metadata,
    Column("item_id", String(128), primary_key=True),
    Column("model_id", String(64), nullable=False),
    Column("entries", Text, nullable=False),
)

#: Fallback lists for members without their own: ``key`` is ``all``, ``new``,
#: ``region:<r>``, ``category:<c>`` or ``region:<r>|category:<c>``; JSON
#: ``[[item_id, score, reason], ...]`` best first.
fallback_lists = Table(
    "fallback_lists",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("model_id", String(64), nullable=False),
    Column("entries", Text, nullable=False),
)

#: Which coupon template each member should get from which campaign, and when to send it.
coupon_suggestions = Table(
    "coupon_suggestions",
    metadata,
    Column("member_id", String(128), nullable=False),
    Column("campaign", String(128), nullable=False),
    Column("build_id", String(64), nullable=False),
    Column("template", String(128), nullable=False),
    Column("value", BigInteger, nullable=False),
    Column("uplift", Float, nullable=False),
    Column("p_purchase", Float, nullable=False),
    Column("best_hour", Integer, nullable=True),
    Column("reason", Text, nullable=False),
    PrimaryKeyConstraint("member_id", "campaign"),
)
