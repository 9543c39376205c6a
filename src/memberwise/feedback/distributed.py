"""The ``feedback`` stage on a Spark cluster: the executors analyse the texts, the driver sees
counts.

When the build's engine is Spark no member-sized table sits on the driver:

- **Text analysis in the executors.** The distinct feedback texts stay a Spark DataFrame;
  ``mapInArrow`` hands each batch of them to :func:`.analysis.score_texts`, the function the
  embedded path runs over all of them at once (the sentiment model, the aspect lexicon, jieba
  for a text without an aspect). Each text is scored on its own, so batches give the same
  rows. Each Python worker loads the model and builds the segmenter once
  (:func:`analyzer`), and Spark writes ``feedback_texts.parquet``.
- **Topics** are the embedded path's Ibis expressions (Spark SQL) over the written texts.
- **The rising-complaint test**: the counts per item and merchant are Spark SQL, the per-key
  statistics (:func:`.analysis.rising_statistics`: rates, ratio, the binomial p-value) run in
  ``mapInArrow``, and Benjamini-Hochberg's q-values are window functions over the keys that
  can be flagged. Spark writes ``feedback_rising.parquet``.
- **The driver** gets the number of distinct texts, the platform's brand names (catalog-sized,
  for jieba's user dictionary, as the embedded path builds it) and the flagged keys that go
  into ``build.json``.

An optional sentiment plug-in (:mod:`.sentiment_e5`, :mod:`.sentiment_lexicon`) runs in the
executors too: the driver decides which one is on (``MEMBERWISE_SENTIMENT_PLUGIN``) and tells
the workers, which then need its package installed like the driver.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from memberwise.feedback.analysis import (
    RISING_LEVELS,
    TEXT_SCHEMA,
    RisingTest,
    complaint_counts,
    rising_statistics,
    score_texts,
)
from memberwise.feedback.sentiment import SentimentModel, chosen_plugin, model_for
from memberwise.feedback.text import Segmenter
from memberwise.kit import sparkframes

if TYPE_CHECKING:
    from memberwise.program.feedback import FeedbackSettings

#: Distinct texts per task of the analysis (about a minute of one core at ~1 ms a text).
TEXTS_PER_TASK = 50_000
TEXTS_DDL = ", ".join(f"{f.name} {'double' if f.type == pa.float64() else 'string'}"
                      for f in TEXT_SCHEMA)  # fmt: skip
#: The statistics :func:`.analysis.rising_statistics` adds to a level's counts.
STATISTICS_DDL = (
    "recent_rate double, base_rate double, ratio double, p_value double, eligible boolean"
)

_ANALYZERS: dict[tuple[tuple[str, ...], str], tuple[SentimentModel, Segmenter]] = {}


def analyzer(words: tuple[str, ...], plugin: str) -> tuple[SentimentModel, Segmenter]:
    """The sentiment model ``plugin`` names (:func:`.sentiment.model_for`: the driver's
    choice, so every worker scores as the embedded path would) and a segmenter with the user
    dictionary ``words``, made once per Python worker (the model's arrays and jieba's
    dictionary take a second or two to load)."""
    key = (words, plugin)
    if key not in _ANALYZERS:
        _ANALYZERS[key] = (model_for(plugin), Segmenter(words))
    return _ANALYZERS[key]


def score_batches(
    batches: Iterator[pa.RecordBatch], words: tuple[str, ...], plugin: str
) -> Iterator[pa.RecordBatch]:
    """``feedback_texts`` rows of each batch of distinct texts (column ``text``), as
    :func:`.analysis.score_texts` gives them: what each executor runs."""
    for batch in batches:
        if batch.num_rows:
            model, segmenter = analyzer(words, plugin)
            texts = batch.column("text").to_pylist()
            yield from score_texts(texts, model, segmenter).to_batches()


def brand_names(con: ibis.BaseBackend, feedback: ir.Table) -> list[str | None]:
    """The brands the feedback events name (one row per brand reaches the driver)."""
    frame = sparkframes.to_spark(con, feedback.select("brand").distinct())
    return [row["brand"] for row in frame.collect()]


def scored_texts(con: ibis.BaseBackend, feedback: ir.Table, words: Sequence[str]) -> Any:
    """The distinct texts of ``feedback`` scored in the executors, as a lazy Spark DataFrame,
    and how many distinct texts there are."""
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    texts = sparkframes.to_spark(con, feedback.select("text").distinct())
    count = int(texts.count())
    parts = sparkframes.partitions_for(count, per_partition=TEXTS_PER_TASK, least=1)
    spread = texts.repartition(parts, F.col("text"))
    chosen, plugin = tuple(words), chosen_plugin()

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return score_batches(batches, chosen, plugin)

    return spread.mapInArrow(score, TEXTS_DDL), count


def rising_on_spark(
    con: ibis.BaseBackend, events: ir.Table, *, as_of: datetime, settings: FeedbackSettings
) -> Any:
    """``feedback_rising`` as a lazy Spark DataFrame: the embedded path's rows (keys with a
    recent complaint), the statistics per key from the executors, q-values by windows."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812  (the usual name)

    test = RisingTest(
        fdr=settings.fdr, min_complaints=settings.min_complaints, min_ratio=settings.min_ratio
    )
    parts = []
    for level in RISING_LEVELS:
        counts = sparkframes.to_spark(
            con,
            complaint_counts(
                events, as_of=as_of, level=level, recent_days=settings.recent_days,
                baseline_weeks=settings.baseline_weeks,
            ),
        )  # fmt: skip
        columns = [f"`{name}` {kind}" for name, kind in counts.dtypes]
        ddl = ", ".join([*columns, STATISTICS_DDL])

        def statistics(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                if batch.num_rows:
                    yield from rising_statistics(pa.Table.from_batches([batch]), test).to_batches()

        tested = counts.mapInArrow(statistics, ddl)
        parts.append(_with_q_values(tested, test.fdr, Window, F).select(
            *counts.columns, "recent_rate", "base_rate", "ratio", "p_value", "q_value", "rising",
            F.lit(level.removesuffix("_id")).alias("level"),
            F.lit(as_of).alias("as_of"),
        ))  # fmt: skip
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out


def _with_q_values(tested: Any, fdr: float, window: Any, functions: Any) -> Any:
    """Benjamini-Hochberg q-values (:func:`.analysis.bh`) of the eligible keys by window
    functions (1 for the others) and the flag, then only the keys with a recent complaint.
    The eligible keys are sorted in one task, as any global rank is; ties in the p-value get
    the same q-value whatever their order."""
    F = functions  # noqa: N806  (the usual name)
    eligible = tested.where(F.col("eligible"))
    by_p = window.orderBy(F.col("p_value"))
    n = F.count(F.lit(1)).over(window.partitionBy())
    ranked = eligible.withColumn("_scaled", F.col("p_value") * n / F.row_number().over(by_p))
    suffix = by_p.rowsBetween(window.currentRow, window.unboundedFollowing)
    with_q = ranked.withColumn("q_value", F.least(F.min("_scaled").over(suffix), F.lit(1.0)))
    others = tested.where(~F.col("eligible")).withColumn("q_value", F.lit(1.0))
    both = with_q.drop("_scaled").unionByName(others)
    flagged = both.withColumn("rising", F.col("eligible") & (F.col("q_value") <= F.lit(fdr)))
    return flagged.where(F.col("recent_complaints") > 0)


def flagged_rows(con: ibis.BaseBackend, rising: ir.Table) -> list[dict[str, Any]]:
    """The flagged keys of a written ``feedback_rising`` (the few ``build.json`` lists), by
    level and key."""
    frame = sparkframes.to_spark(
        con,
        rising.filter(rising.rising).select(
            "level", "key", "recent_complaints", "ratio", "q_value"
        ),
    )
    return [row.asDict() for row in frame.orderBy("level", "key").collect()]
