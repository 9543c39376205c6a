"""CLI for the offline pipeline: ``memberwise build``."""

from __future__ import annotations

import json as jsonlib
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from memberwise.builds import BuildResult
from memberwise.config import Engine, Settings
from memberwise.jobs.build import STAGES, BuildError, run_build
from memberwise.kit.errors import InvalidRequest
from memberwise.program.service import current_program
from memberwise.recommend.service import build_note
from memberwise.runtime import Runtime

console = Console()


def parse_as_of(value: str | None, runtime: Runtime) -> datetime | None:
    """``--as-of``: ISO date or time (no zone = UTC), ``now``, or ``latest`` (the lake's last
    event, for profiling a historical file as of its own last day)."""
    if value is None or value == "now":
        return None
    if value == "latest":
        latest = runtime.lake.latest_ts()
        if latest is None:
            raise typer.BadParameter("the lake is empty: there is no latest event")
        return latest
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not a time: use YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS][+HH:MM], now or latest"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def print_summary(result: BuildResult) -> None:
    table = Table(title=f"build {result.build_id}", show_edge=False)
    table.add_column("stage")
    table.add_column("rows", justify="right")
    table.add_column("seconds", justify="right")
    for stage in result.stages:
        table.add_row(stage.name, f"{stage.rows:,}", f"{stage.seconds:.1f}")
    console.print(table)
    console.print(
        f"members {result.members:,} · events read {result.events_read:,} · as of "
        f"{result.as_of.isoformat()} · engine {result.engine} · {result.seconds:.1f} s"
    )
    # What orders the recommendation lists (the ranker or the member's own history), and why.
    note = build_note(result.directory)
    if note:
        console.print(note, highlight=False)


def summary_dict(result: BuildResult) -> dict[str, object]:
    return {
        "build_id": result.build_id,
        "directory": str(result.directory),
        "as_of": result.as_of.isoformat(),
        "engine": str(result.engine),
        "members": result.members,
        "events_read": result.events_read,
        "seconds": round(result.seconds, 3),
        "stages": {s.name: {"rows": s.rows, "seconds": round(s.seconds, 3)} for s in result.stages},
        "recommendations": build_note(result.directory),
    }


def execute_build(
    runtime: Runtime,
    *,
    only: list[str] | None = None,
    as_of: datetime | None = None,
    engine: Engine | None = None,
    quiet: bool = False,
) -> BuildResult:
    """Run the build with a Rich progress bar per stage (none when ``quiet``)."""
    program = current_program(runtime.settings.program_file)
    if quiet:
        return run_build(runtime, program, only=only, as_of=as_of, engine=engine)
    columns = (
        TextColumn("{task.description:<9}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, step: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=step, total=total)

        result = run_build(
            runtime, program, only=only, as_of=as_of, engine=engine, progress=progress
        )
    return result


def build(
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help=f"Run just this stage (repeatable): {', '.join(STAGES)}. Inputs come from "
            "the latest earlier build.",
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Clock the windows are measured from: YYYY-MM-DD[THH:MM] (UTC unless a zone "
            "is given), now (default) or latest (the lake's last event).",
        ),
    ] = None,
    engine: Annotated[
        Engine | None,
        typer.Option("--engine", help="duckdb or spark (default: MEMBERWISE_ENGINE or duckdb)."),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON only.")] = False,
) -> None:
    """Build profiles, tags and segments from the event lake and publish them."""
    settings = Settings()
    runtime = Runtime.open(settings)
    try:
        clock = parse_as_of(as_of, runtime)
        result = execute_build(runtime, only=only, as_of=clock, engine=engine, quiet=json)
    except (BuildError, InvalidRequest) as exc:
        console.print(f"[red]build refused:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    finally:
        runtime.close()
    if json:
        typer.echo(jsonlib.dumps(summary_dict(result), indent=2))
    else:
        print_summary(result)
