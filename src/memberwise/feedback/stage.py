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

from typing import TYPE_CHECKING

import ibis
import pyarrow as pa

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
    topics written."""
    settings = ctx.program.feedback
    as_of = ctx.result.as_of
    ctx.progress("feedback", 0, 4)
    events = ctx.runtime.lake.events_table(ctx.con)
    feedback = feedback_events(events, as_of=as_of, days=settings.window_days)
    texts = ctx.con.to_pyarrow(feedback.select("text").distinct()).column("text").to_pylist()
    brands = ctx.con.to_pyarrow(feedback.select("brand").distinct()).column("brand").to_pylist()
    segmenter = Segmenter(dictionary_words(brands, _category_names(ctx)))
    model = shipped_model()
    scored = score_texts(sorted(texts), model, segmenter)
    write_parquet(ctx.con, ibis.memtable(scored), ctx.path(TEXTS))
    ctx.progress("feedback", 1, 4)
    mentions = negative_mentions(feedback, ctx.table(TEXTS))
    made = topics(mentions, min_mentions=settings.min_mentions)
    rows = write_parquet(ctx.con, made.order_by(["level", "key", "aspect", "trigger"]),
                         ctx.path(TOPICS))  # fmt: skip
    ctx.progress("feedback", 2, 4)
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
    ctx.progress("feedback", 3, 4)
    flagged = result.filter(result.column("rising"))
    ctx.meta.setdefault("sections", {})["feedback"] = {
        "model": model.metadata,
        "texts": len(texts),
        "topics": rows,
        "rising": [
            {"level": r["level"], "key": r["key"], "recent_complaints": r["recent_complaints"],
             "ratio": round(r["ratio"], 2), "q_value": r["q_value"]}
            for r in flagged.to_pylist()
        ],
    }  # fmt: skip
    ctx.progress("feedback", 4, 4)
    return rows
