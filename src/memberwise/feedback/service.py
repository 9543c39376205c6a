"""Feedback: analyse texts with the shipped model, publish a build's topics and rising test,
and read them back. Never commits (the caller's unit of work does)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection

from memberwise.feedback import repository
from memberwise.feedback.aspects import find_aspects
from memberwise.feedback.schemas import (
    AnalyzeOut,
    AspectOut,
    Level,
    RisingLevel,
    RisingListOut,
    RisingOut,
    TextAnalysis,
    TopicOut,
    TopicsOut,
)
from memberwise.feedback.sentiment import shipped_model
from memberwise.feedback.stage import RISING, TOPICS
from memberwise.feedback.tables import feedback_rising
from memberwise.feedback.text import default_segmenter
from memberwise.kit.errors import InvalidRequest
from memberwise.kit.storage import parquet_batches


class TextTooLong(InvalidRequest):
    code = "feedback_text_too_long"


#: Longest text :func:`analyze` accepts (a review is a few hundred characters).
MAX_TEXT = 5_000


def analyze(texts: list[str]) -> AnalyzeOut:
    """Sentiment, aspects with their trigger phrases, and words of each text.

    Raises TextTooLong when a text exceeds :data:`MAX_TEXT` characters."""
    for i, text in enumerate(texts):
        if len(text) > MAX_TEXT:
            raise TextTooLong(
                f"texts[{i}] has {len(text)} characters; at most {MAX_TEXT}",
                details={"index": i, "max": MAX_TEXT},
            )
    model = shipped_model()
    positive = model.predict_proba(texts)
    segmenter = default_segmenter()
    return AnalyzeOut(
        model=model.metadata,
        results=[
            TextAnalysis(
                text=text,
                positive=round(float(p), 4),
                sentiment="positive" if p >= 0.5 else "negative",
                aspects=[AspectOut(aspect=h.aspect, trigger=h.trigger, phrase=h.phrase)
                         for h in find_aspects(text)],
                words=segmenter.words_of(text),
            )
            for text, p in zip(texts, positive, strict=True)
        ],
    )  # fmt: skip


def _rows(
    path: Path, build_id: str, json_columns: tuple[str, ...] = ()
) -> Iterator[dict[str, Any]]:
    for batch in parquet_batches(path, 5_000):
        for row in batch.to_pylist():
            for name in json_columns:
                row[name] = orjson.dumps([v for v in row[name] or [] if v is not None]).decode()
            row["build_id"] = build_id
            yield row


def publish_build(conn: Connection, build_dir: Path) -> int:
    """Replace the published topics and rising-test rows with the build's; the topics count
    (0 when the build has no feedback stage output)."""
    if not (build_dir / TOPICS).exists():
        return 0
    build_id = build_dir.name
    count = repository.replace_topics(conn, _rows(build_dir / TOPICS, build_id, ("examples",)))
    columns = {c.name for c in feedback_rising.c}
    rising_rows = (
        {k: v for k, v in row.items() if k in columns}
        for row in _rows(build_dir / RISING, build_id)
    )
    repository.replace_rising(conn, rising_rows)
    return count


def topics(
    conn: Connection,
    *,
    level: Level | None = None,
    key: str | None = None,
    aspect: str | None = None,
    limit: int = 50,
) -> TopicsOut:
    """Published recurring problems, most mentioned first."""
    rows = repository.topics(
        conn, level=level.value if level else None, key=key, aspect=aspect, limit=limit
    )
    return TopicsOut(
        build_id=repository.build_id(conn),
        topics=[
            TopicOut.model_validate({**dict(r), "examples": orjson.loads(r["examples"])})
            for r in rows
        ],
    )


def rising(
    conn: Connection, *, level: RisingLevel | None = None, only_rising: bool = True,
    limit: int = 50,
) -> RisingListOut:  # fmt: skip
    """Published rising-complaint results (by default only the flagged ones), most
    significant first."""
    rows = repository.rising(
        conn, level=level.value if level else None, only_rising=only_rising, limit=limit
    )
    return RisingListOut(
        build_id=repository.build_id(conn),
        items=[RisingOut.model_validate(dict(r)) for r in rows],
    )
