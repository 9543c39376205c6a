"""The build's ``feedback`` stage: what members' reviews, complaints, refund reasons and service
messages say, as of the build's clock.

Reads the lake's feedback events (:func:`.analysis.feedback_events`), scores each *distinct*
text once with the shipped sentiment model and the aspect lexicon (jieba's user dictionary gets
the platform's brands and category names), and writes

- ``feedback_texts.parquet`` -- per distinct text and aspect: P(positive), trigger, phrase;
- ``feedback_topics.parquet`` -- recurring problems per category, brand, item and merchant;
- ``feedback_rising.parquet`` -- the rising-complaint test per item and merchant;
- ``build.json["feedback"]`` -- the model's metadata and the counts.

Published by :func:`memberwise.feedback.service.publish_build`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ibis
import pyarrow as pa

from memberwise.feedback import distributed
from memberwise.feedback.analysis import (
    RISING_LEVELS,
    RisingTest,
    complaint_counts,
    dictionary_words,
    feedback_events,
    negative_mentions,
    rising,
    score_texts,
    topics,
)
from memberwise.feedback.sentiment import shipped_model
from memberwise.feedback.text import Segmenter
from memberwise.kit import sparkframes
from memberwise.kit.warehouse import write_parquet

if TYPE_CHECKING:
    from memberwise.builds import BuildContext

TEXTS = "feedback_texts.parquet"
TOPICS = "feedback_topics.parquet"
RISING = "feedback_rising.parquet"
OUTPUTS: tuple[str, ...] = (TEXTS, TOPICS, RISING)
INPUTS: tuple[str, ...] = ()


def _category_names(ctx: BuildContext) -> list[str]:
    """Category names from the store's catalog (none before a catalog is loaded)."""
    from memberwise.recommend import service as recommend_service

    with ctx.runtime.engine.connect() as conn:
        table = recommend_service.categories_table(conn)
    return [n for n in table.column("name").to_pylist() if n]


def stage_feedback(ctx: BuildContext) -> int:
    """Score the distinct feedback texts, count topics, run the rising test; the rows of
    topics written. On Spark the texts are scored and the test's statistics computed in the
    executors (:mod:`.distributed`)."""
    settings = ctx.program.feedback
    as_of = ctx.result.as_of
    ctx.progress("feedback", 0, 4)
    events = ctx.runtime.lake.events_table(ctx.con)
    feedback = feedback_events(events, as_of=as_of, days=settings.window_days)
    model = shipped_model()
    on_spark = sparkframes.is_spark(ctx.con)
    if on_spark:
        brands = distributed.brand_names(ctx.con, feedback)
    else:
        brands = ctx.con.to_pyarrow(feedback.select("brand").distinct()).column("brand").to_pylist()
    words = dictionary_words(brands, _category_names(ctx))
    if on_spark:
        frame, texts = distributed.scored_texts(ctx.con, feedback, words)
        write_parquet(ctx.con, sparkframes.from_spark(ctx.con, frame), ctx.path(TEXTS))
    else:
        distinct = ctx.con.to_pyarrow(feedback.select("text").distinct()).column("text")
        texts = len(distinct)
        scored = score_texts(sorted(distinct.to_pylist()), model, Segmenter(words))
        write_parquet(ctx.con, ibis.memtable(scored), ctx.path(TEXTS))
    ctx.progress("feedback", 1, 4)
    mentions = negative_mentions(feedback, ctx.table(TEXTS))
    made = topics(mentions, min_mentions=settings.min_mentions)
    rows = write_parquet(ctx.con, made.order_by(["level", "key", "aspect", "trigger"]),
                         ctx.path(TOPICS))  # fmt: skip
    ctx.progress("feedback", 2, 4)
    if on_spark:
        frame = distributed.rising_on_spark(ctx.con, events, as_of=as_of, settings=settings)
        write_parquet(ctx.con, sparkframes.from_spark(ctx.con, frame), ctx.path(RISING))
        flagged = distributed.flagged_rows(ctx.con, ctx.table(RISING))
    else:
        flagged = _rising_embedded(ctx, events)
    ctx.progress("feedback", 3, 4)
    ctx.meta.setdefault("sections", {})["feedback"] = {
        "model": model.metadata,
        "texts": texts,
        "topics": rows,
        "rising": [
            {"level": r["level"], "key": r["key"], "recent_complaints": r["recent_complaints"],
             "ratio": round(r["ratio"], 2), "q_value": r["q_value"]}
            for r in flagged
        ],
    }  # fmt: skip
    ctx.progress("feedback", 4, 4)
    return rows


def _rising_embedded(ctx: BuildContext, events: ibis.Table) -> list[dict[str, Any]]:
    """The embedded path's rising test: each level's counts in memory, tested together;
    writes ``feedback_rising.parquet`` and gives the flagged rows."""
    settings, as_of = ctx.program.feedback, ctx.result.as_of
    test = RisingTest(
        fdr=settings.fdr, min_complaints=settings.min_complaints, min_ratio=settings.min_ratio
    )
    parts = []
    for level in RISING_LEVELS:
        counts = ctx.con.to_pyarrow(
            complaint_counts(
                events, as_of=as_of, level=level, recent_days=settings.recent_days,
                baseline_weeks=settings.baseline_weeks,
            )
        )  # fmt: skip
        tested = rising(counts, test)
        tested = tested.filter(pa.compute.greater(tested.column("recent_complaints"), 0))
        name = level.removesuffix("_id")
        tested = tested.append_column("level", pa.array([name] * tested.num_rows, pa.string()))
        clock = pa.array([as_of] * tested.num_rows, pa.timestamp("us", tz="UTC"))
        parts.append(tested.append_column("as_of", clock))
    result = pa.concat_tables(parts)
    write_parquet(ctx.con, ibis.memtable(result), ctx.path(RISING))
    flagged: list[dict[str, Any]] = result.filter(result.column("rising")).to_pylist()
    return flagged
