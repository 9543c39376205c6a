"""Feedback analytics as pure functions of tables: which events are feedback, what each
distinct text says (sentiment, aspects), recurring problems per category/brand/item/merchant,
and which items and merchants have a rising complaint rate.

Only the per-*text* step runs Python (jieba and the model), over the distinct texts, which on a
real platform are far fewer than the events (the same complaint reasons and short reviews
recur); everything per *event* is an Ibis expression, so the same code runs on DuckDB or Spark
over 100 M events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import ibis
import ibis.expr.types as ir
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from scipy import stats

from memberwise.feedback.aspects import find_aspects
from memberwise.feedback.sentiment import SentimentModel
from memberwise.feedback.text import Segmenter

#: Event types whose text is feedback.
FEEDBACK_TYPES: tuple[str, ...] = ("review", "complaint", "service", "refund")
#: Levels topics are counted at (event columns).
LEVELS: tuple[str, ...] = ("category_id", "brand", "item_id", "merchant_id")
#: Levels the rising test runs at.
RISING_LEVELS: tuple[str, ...] = ("item_id", "merchant_id")
#: A review at or below this many stars is negative whatever its text says.
NEGATIVE_STARS = 2
TEXT_SCHEMA = pa.schema(
    [
        pa.field("text", pa.string()),
        pa.field("positive", pa.float64()),
        pa.field("aspect", pa.string()),
        pa.field("trigger", pa.string()),
        pa.field("phrase", pa.string()),
    ]
)


def feedback_events(events: ir.Table, *, as_of: datetime, days: int) -> ir.Table:
    """Events with text of the feedback types in the ``days`` before ``as_of``."""
    start = as_of - timedelta(days=days)
    return events.filter(
        events.type.isin(list(FEEDBACK_TYPES)),
        events.text.notnull(),
        events.ts > ibis.literal(start),
        events.ts <= ibis.literal(as_of),
    ).select(
        "event_id", "member_id", "type", "ts", "item_id", "category_id", "brand",
        "merchant_id", "rating", "text",
    )  # fmt: skip


def score_texts(texts: Sequence[str], model: SentimentModel, segmenter: Segmenter) -> pa.Table:
    """One row per (distinct text, aspect) -- texts without an aspect get one row with aspect
    ``other`` and their first content word as trigger -- with the text's P(positive)."""
    positive = model.predict_proba(list(texts))
    rows: dict[str, list[object]] = {name: [] for name in TEXT_SCHEMA.names}
    for text, p in zip(texts, positive, strict=True):
        hits = find_aspects(text)
        if hits:
            found = [(h.aspect, h.trigger, h.phrase) for h in hits]
        else:
            words = segmenter.keywords(text)
            found = [("other", words[0] if words else text[:8], text[:40])]
        for aspect, trigger, phrase in found:
            rows["text"].append(text)
            rows["positive"].append(float(p))
            rows["aspect"].append(aspect)
            rows["trigger"].append(trigger)
            rows["phrase"].append(phrase)
    return pa.table(rows, schema=TEXT_SCHEMA)


def negative_mentions(feedback: ir.Table, scored: ir.Table) -> ir.Table:
    """One row per negative feedback event and aspect: complaints and refund reasons always,
    reviews with few stars or negative text, service messages with negative text."""
    joined = feedback.join(scored, "text")
    negative = (
        joined.type.isin(["complaint", "refund"])
        | ((joined.type == "review") & (joined.rating.fill_null(5) <= NEGATIVE_STARS))
        | (joined.positive < 0.5)
    )
    return joined.filter(negative)


def topics(mentions: ir.Table, *, min_mentions: int = 3, examples: int = 3) -> ir.Table:
    """Recurring problems: per level (category, brand, item, merchant), key, aspect and
    trigger, the mentions, distinct members, share of the key's negative mentions, the most
    frequent phrase and the ``examples`` most frequent texts (null-padded)."""
    parts = []
    for level in LEVELS:
        rows = mentions.filter(mentions[level].notnull()).mutate(key=mentions[level])
        group = ["key", "aspect", "trigger"]
        counts = rows.group_by(group).aggregate(
            mentions=rows.count(),
            members=rows.member_id.nunique(),
            first_seen=rows.ts.min(),
            last_seen=rows.ts.max(),
        )
        total = rows.group_by("key").aggregate(key_mentions=rows.count())
        per_text = rows.group_by([*group, "text", "phrase"]).aggregate(n=rows.count())
        ranked = per_text.mutate(
            r=ibis.row_number().over(
                group_by=[per_text.key, per_text.aspect, per_text.trigger],
                order_by=[ibis.desc(per_text.n), per_text.text],
            )
        )
        # One column per example rank (an ordered collect is not portable to Spark).
        top = (
            ranked.filter(ranked.r < examples)
            .group_by(group)
            .aggregate(
                label=ranked.phrase.arbitrary(where=ranked.r == 0),
                **{f"example_{k}": ranked.text.arbitrary(where=ranked.r == k)
                   for k in range(examples)},
            )
        )  # fmt: skip
        made = counts.filter(counts.mentions >= min_mentions).join(total, "key").join(top, group)
        parts.append(
            made.select(
                level=ibis.literal(level.removesuffix("_id")),
                key=made.key,
                aspect=made.aspect,
                trigger=made.trigger,
                label=made.label,
                mentions=made.mentions.cast("int64"),
                members=made.members.cast("int64"),
                share=(made.mentions / made.key_mentions).cast("float64"),
                # Most frequent first; null where a topic has fewer distinct texts.
                examples=ibis.array([made[f"example_{k}"] for k in range(examples)]),
                first_seen=made.first_seen,
                last_seen=made.last_seen,
            )
        )
    return ibis.union(*parts)


def complaint_counts(
    events: ir.Table, *, as_of: datetime, level: str, recent_days: int = 7, baseline_weeks: int = 4
) -> ir.Table:
    """Per key of ``level``: complaints and orders (purchase lines) in the last
    ``recent_days`` before ``as_of``, and in the ``baseline_weeks`` weeks before those."""
    recent_start = as_of - timedelta(days=recent_days)
    base_start = recent_start - timedelta(weeks=baseline_weeks)
    rows = events.filter(
        events.type.isin(["purchase", "complaint"]),
        events[level].notnull(),
        events.ts > ibis.literal(base_start),
        events.ts <= ibis.literal(as_of),
    )
    recent = rows.ts > ibis.literal(recent_start)
    complaint = rows.type == "complaint"
    purchase = rows.type == "purchase"
    return rows.group_by(key=rows[level]).aggregate(
        recent_complaints=(complaint & recent).sum().cast("int64"),
        recent_orders=(purchase & recent).sum().cast("int64"),
        base_complaints=(complaint & ~recent).sum().cast("int64"),
        base_orders=(purchase & ~recent).sum().cast("int64"),
    )


@dataclass(frozen=True)
class RisingTest:
    """Thresholds of the rising-complaint test."""

    #: False-discovery rate over all keys tested at one level (Benjamini-Hochberg).
    fdr: float = 0.01
    #: At least this many complaints in the recent window ...
    min_complaints: int = 3
    #: ... and a recent complaint rate at least this multiple of the baseline's.
    min_ratio: float = 2.0


def rising(counts: pa.Table, test: RisingTest = RisingTest()) -> pa.Table:
    """Add ``p_value``, ``q_value``, ``ratio`` and ``rising`` to :func:`complaint_counts`.

    The test: conditional on the key's complaints in both windows, the recent ones are
    binomial with the recent window's share of the orders if the rate did not change (the
    exact conditional test for two Poisson rates, Przyborowski & Wilenski 1940); one-sided,
    with Benjamini-Hochberg q-values across the keys that could be flagged (at least
    ``min_complaints`` recent complaints and ``min_ratio``). Keys with no orders in a window
    use half an order (a continuity guard) so a brand-new item can still be tested.
    """
    tested = rising_statistics(counts, test)
    eligible = tested.column("eligible").to_numpy(zero_copy_only=False)
    p = tested.column("p_value").to_numpy()
    q = np.ones(len(p))
    q[eligible] = bh(p[eligible])
    flag = eligible & (q <= test.fdr)
    return (
        tested.drop_columns(["eligible"])
        .append_column("q_value", pa.array(q))
        .append_column("rising", pa.array(flag))
    )


def rising_statistics(counts: pa.Table, test: RisingTest = RisingTest()) -> pa.Table:
    """The per-key part of :func:`rising` (everything but the q-values, which need all the
    keys): ``recent_rate``, ``base_rate``, ``ratio``, ``p_value`` (1 for a key that cannot be
    flagged) and ``eligible`` (whether it is tested). Row by row, so the Spark path runs it on
    each batch of keys in the executors."""
    c1 = np.asarray(counts.column("recent_complaints").to_numpy(), dtype=np.int64)
    n1 = np.asarray(counts.column("recent_orders").to_numpy(), dtype=np.float64)
    c0 = np.asarray(counts.column("base_complaints").to_numpy(), dtype=np.int64)
    n0 = np.asarray(counts.column("base_orders").to_numpy(), dtype=np.float64)
    e1, e0 = np.maximum(n1, 0.5), np.maximum(n0, 0.5)
    share = e1 / (e1 + e0)
    p = stats.binom.sf(c1 - 1, c1 + c0, share)
    rate1, rate0 = c1 / e1, (c0 + 0.5) / e0
    ratio = rate1 / rate0
    # Only keys that could be flagged are tested (the rest would only dilute the FDR).
    eligible = (c1 >= test.min_complaints) & (ratio >= test.min_ratio)
    p = np.where(eligible, p, 1.0)
    return (
        counts.append_column("recent_rate", pa.array(rate1))
        .append_column("base_rate", pa.array(c0 / e0))
        .append_column("ratio", pa.array(ratio))
        .append_column("p_value", pa.array(p, pa.float64()))
        .append_column("eligible", pa.array(eligible, pa.bool_()))
    )


def bh(p: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Benjamini-Hochberg adjusted p-values (q-values), in input order."""
    values = np.asarray(p, dtype=np.float64)
    n = len(values)
    if n == 0:
        return values
    order = np.argsort(values)
    scaled = values[order] * n / np.arange(1, n + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def dictionary_words(brands: Iterable[str | None], categories: Iterable[str | None]) -> list[str]:
    """The platform's words for the segmenter's user dictionary (brands and category names;
    category paths like ``母婴 / 纸尿裤`` give each part)."""
    words: list[str] = []
    for value in (*brands, *categories):
        if value:
            words.extend(part.strip() for part in str(value).split("/") if part.strip())
    return list(dict.fromkeys(words))
