"""Published feedback analysis: the latest build's recurring problems (topics) and its
rising-complaint test results. Both are replaced whole at each publish."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, String, Table, Text

from memberwise.kit.db import metadata
from memberwise.kit.time import UTCDateTime

feedback_topics = Table(
    "feedback_topics",
    metadata,
    # category, brand, item or merchant
    Column("level", String(16), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("aspect", String(32), primary_key=True),
    Column("trigger", String(64), primary_key=True),
    Column("label", Text, nullable=True),
    Column("mentions", BigInteger, nullable=False),
    Column("members", BigInteger, nullable=False),
    Column("share", Float, nullable=False),
    # JSON list of the most frequent example texts.
    Column("examples", Text, nullable=False),
    Column("first_seen", UTCDateTime, nullable=True),
    Column("last_seen", UTCDateTime, nullable=True),
    Column("build_id", String(64), nullable=False),
    Index("ix_feedback_topics_mentions", "level", "mentions"),
)

feedback_rising = Table(
    "feedback_rising",
    metadata,
    # item or merchant
    Column("level", String(16), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("recent_complaints", BigInteger, nullable=False),
    Column("recent_orders", BigInteger, nullable=False),
    Column("base_complaints", BigInteger, nullable=False),
    Column("base_orders", BigInteger, nullable=False),
    Column("ratio", Float, nullable=False),
    Column("p_value", Float, nullable=False),
    Column("q_value", Float, nullable=False),
    Column("rising", Boolean, nullable=False),
    Column("as_of", UTCDateTime, nullable=False),
    Column("build_id", String(64), nullable=False),
)
