"""CLI for the demo platform: ``memberwise demo generate`` writes a synthetic platform."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from memberwise.demo.generator import (
    MEMBERS_PER_PART,
    REBUY_SHARE,
    DemoSummary,
    generate_platform,
)

app = typer.Typer(
    help="Generate a synthetic platform for demos and benchmarks.", no_args_is_help=True
)
console = Console()


@app.callback()
def _group() -> None:
    """Generate a synthetic platform for demos and benchmarks."""


def _parse_day(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from exc


def _print_summary(summary: DemoSummary) -> None:
    table = Table(title="demo platform", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("output", summary.out)
    table.add_row("days (China dates)", f"{summary.first_day} .. {summary.last_day}")
    table.add_row("members", f"{summary.members:,}")
    table.add_row("items", f"{summary.items:,}")
    table.add_row("merchants", f"{summary.merchants:,}")
    table.add_row("categories", f"{summary.categories:,}")
    table.add_row("events", f"{summary.events:,} in {summary.parts} files")
    for kind, count in summary.events_by_type.items():
        table.add_row(f"  {kind}", f"{count:,}")
    table.add_row("members spending > 100,000 CNY", f"{summary.big_spenders:,}")
    table.add_row("GMV (CNY)", f"{summary.gmv_fen / 100:,.0f}")
    table.add_row("seconds", f"{summary.seconds:.1f}")
    console.print(table)


@app.command("generate")
def generate(
    members: Annotated[int, typer.Option(min=1, help="How many members.")] = 20_000,
    days: Annotated[int, typer.Option(min=1, help="How many days of behaviour.")] = 120,
    seed: Annotated[int, typer.Option(help="Same seed, same platform.")] = 7,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("demo-platform"),
    end: Annotated[
        str | None,
        typer.Option(
            help="YYYY-MM-DD: the last generated day is the China date before this one "
            "(default: today's UTC date)."
        ),
    ] = None,
    events_per_member: Annotated[
        float, typer.Option(min=0.001, help="Average events per member over the period.")
    ] = 100.0,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: up to 2).")
    ] = None,
    rebuy_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.95,
            help="Share of purchases that are staple re-buys on each member's own cycle "
            "(0.8: a repeat-heavy grocery-like shop).",
        ),
    ] = REBUY_SHARE,
    json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON only.")] = False,
) -> None:
    """Write a synthetic platform: events, members, items, categories, merchants (the same
    options always give the same files)."""
    end_day = _parse_day(end)
    parts = -(-members // MEMBERS_PER_PART)
    with Progress(
        TextColumn("generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("parts"),
        TimeElapsedColumn(),
        console=console,
        disable=json,
        transient=True,
    ) as progress:
        task = progress.add_task("parts", total=parts)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            summary = generate_platform(
                out,
                members=members,
                days=days,
                seed=seed,
                end=end_day,
                events_per_member=events_per_member,
                progress=advance,
                workers=workers,
                rebuy_share=rebuy_share,
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    if json:
        typer.echo(orjson.dumps(summary.to_dict()).decode())
    else:
        _print_summary(summary)
