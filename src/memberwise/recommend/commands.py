"""CLI for recommendations: ``memberwise recommend evaluate`` prints the offline metrics."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.table import Table

from memberwise.recommend.evaluate import Scores, evaluate_events, evaluate_tafeng

app = typer.Typer(help="Train, evaluate and export recommendations.", no_args_is_help=True)
console = Console()


@app.callback()
def _group() -> None:
    """Train, evaluate and export recommendations."""


class Dataset(StrEnum):
    """Which data the evaluation runs on."""

    tafeng = "tafeng"
    lake = "lake"


def _parse_ks(value: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in value.split(",") if part.strip()})
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a list of integers such as 10,20") from exc
    if not ks or ks[0] < 1 or ks[-1] > 500:
        raise typer.BadParameter("each k must be between 1 and 500")
    return ks


def _lake_events() -> tuple[pa.Table, pa.Table | None, pa.Table | None]:
    """Item events of the configured lake, plus the demo catalog when there is one."""
    from memberwise.config import get_settings
    from memberwise.kit.lake import EventLake
    from memberwise.kit.warehouse import duckdb_backend

    settings = get_settings()
    lake = EventLake(settings.lake_root)
    if not lake.files():
        raise typer.BadParameter(f"the lake at {settings.lake_root} has no events: ingest first")
    con = duckdb_backend()
    events = lake.events_table(con)
    columns = ["member_id", "type", "ts", "item_id", "category_id", "price", "order_id", "region"]
    table = events.select(*columns).to_pyarrow()
    catalog: dict[str, pa.Table | None] = {}
    for name in ("items", "categories"):
        path = Path(settings.home) / "demo" / f"{name}.parquet"
        catalog[name] = pq.read_table(path) if path.exists() else None
    return table, catalog["items"], catalog["categories"]


def _print_scores(scores: list[Scores], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for col in ("method", "k", "Recall", "NDCG", "hit rate", "coverage", "repeat share"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for s in scores:
        table.add_row(
            s.method,
            str(s.k),
            f"{s.recall:.4f}",
            f"{s.ndcg:.4f}",
            f"{s.hit_rate:.4f}",
            f"{s.coverage:.4f}",
            f"{s.repeat_share:.3f}",
        )
    console.print(table)


@app.command("evaluate")
def evaluate_command(
    dataset: Annotated[
        Dataset,
        typer.Option(
            help="tafeng: the Ta-Feng next-basket protocol; lake: a time "
            "split of the configured event lake."
        ),
    ] = Dataset.tafeng,
    k: Annotated[str, typer.Option(help="Cut-offs, comma-separated.")] = "10,20",
    label_days: Annotated[
        float, typer.Option(min=0.5, help="lake only: days after the split to predict.")
    ] = 7.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Fit on the history, predict what members buy next; print the blend, each source and
    the baselines (global popular, own most frequent, own then popular)."""
    ks = _parse_ks(k)
    if dataset is Dataset.tafeng:
        scores, timings = evaluate_tafeng(ks)
    else:
        events, items, categories = _lake_events()
        scores, timings = evaluate_events(
            events, ks, label_days=label_days, items=items, categories=categories
        )
    if as_json:
        body = {
            "dataset": dataset.value,
            "k": ks,
            "scores": [s.as_dict() for s in scores],
            "seconds": {name: round(v, 3) for name, v in timings.items()},
        }
        typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    _print_scores(scores, f"{dataset.value}: {scores[0].members:,} members" if scores else "")
    console.print(
        "seconds: " + ", ".join(f"{name} {v:.1f}" for name, v in timings.items()),
        highlight=False,
    )


# `memberwise recommend export` (the serving side's command) is added below this line.


@app.command("export")
def export_command(
    n: Annotated[int, typer.Option(min=1, max=500, help="Items per member.")] = 20,
    out: Annotated[Path, typer.Option(help="Parquet file to write.")] = Path("recs.parquet"),
) -> None:
    """Write every member's published list (items on sale now) to Parquet: member_id,
    rank (1 = best), item_id, score, reason -- for batch pushes and evaluation."""
    from memberwise.config import get_settings
    from memberwise.kit.db import make_engine, transaction
    from memberwise.recommend.export import export_lists

    engine = make_engine(get_settings().db_url)
    try:
        with transaction(engine) as conn:
            members, rows = export_lists(conn, out, n=n)
    finally:
        engine.dispose()
    console.print(f"wrote {rows:,} rows for {members:,} members to {out}")
