"""CLI for events: ``memberwise ingest FILES...`` and ``memberwise lake compact|stats``."""

from __future__ import annotations

import json as jsonlib
import threading
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from memberwise.config import Settings
from memberwise.events.bulk import BulkFormat, ingest_paths
from memberwise.events.bulk_results import BulkResult
from memberwise.events.bulk_results import Progress as IngestProgress
from memberwise.events.timeline import mark
from memberwise.kit.lake import EventLake
from memberwise.kit.objectlake import lake_of

if TYPE_CHECKING:
    from memberwise.events.bulk_hooks import MemberRegistrar

lake_app = typer.Typer(help="Inspect and compact the event lake.", no_args_is_help=True)
console = Console()
FORMATS = ("auto", "csv", "jsonl", "parquet", "taobao")


def ingest(
    paths: Annotated[
        list[Path],
        typer.Argument(exists=True, help="Event files, or directories of them (sorted)."),
    ],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="auto (by extension: .parquet, .csv, .jsonl/.json) or csv, jsonl, parquet, "
            "taobao (header-less Taobao UserBehavior CSV).",
        ),
    ] = "auto",
    deadletter: Annotated[
        Path | None,
        typer.Option(help="Directory for dead-letter files; default HOME/deadletter."),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Load event files into the lake: good rows land, bad rows go to a dead-letter CSV with
    row number and reason. Re-running the same files is a no-op; exit code 1 if a file failed."""
    if format not in FORMATS:
        raise typer.BadParameter(f"expected one of {', '.join(FORMATS)}", param_hint="--format")
    settings = Settings()
    lake = lake_of(settings)  # (on the storage URI: a local directory or an object store)
    target = deadletter or settings.home / "deadletter"
    on_members = _LazyRegistrar(settings)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[rows]:>12,} rows"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=json,
    ) as bar:
        task = bar.add_task("ingesting", total=1.0, rows=0)

        def show(p: IngestProgress) -> None:
            bar.update(
                task,
                description=f"{p.index}/{p.files} {p.path.name}",
                completed=p.fraction,
                rows=p.rows,
            )

        result = ingest_paths(
            paths,
            lake,
            fmt=cast(BulkFormat, format),
            deadletter_dir=target,
            on_members=on_members,
            progress=show,
        )
    scrubbed = on_members.scrub_erased(lake)
    mark("done")
    if scrubbed and not json:
        console.print(f"removed {scrubbed:,} events of erased members again (their tombstones)")
    if json:
        typer.echo(jsonlib.dumps(result.to_dict(), indent=2))
    else:
        console.print(_summary(result))
        for path in result.deadletter_paths:
            console.print(f"dead letter: {path}")
        for path, error in result.failed_files:
            console.print(f"[red]failed[/red] {path}: {error}")
        for f in result.files:
            for warning in f.warnings:
                console.print(f"[yellow]warning[/yellow] {f.path.name}: {warning}")
    raise typer.Exit(0 if result.ok else 1)


#: ``memberwise ingest`` on its own, so the command starts without importing every domain
#: (see :mod:`memberwise.entry`); ``memberwise.cli`` mounts the same function.
ingest_app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
ingest_app.command("ingest", help="Load event files (CSV, JSONL, Parquet, Taobao) into the lake.")(
    ingest
)


@ingest_app.callback()
def _ingest_root() -> None:
    """memberwise (ingest only)."""


class _LazyRegistrar:
    """The operational store's member registrar, loaded on first use.

    Bulk ingest first calls it from its member-registration thread while DuckDB validates the
    first batches, so importing and connecting the store's side (SQLAlchemy tables, members,
    privacy) overlaps the pass instead of delaying its start.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.inner: MemberRegistrar | None = None
        self.lock = threading.Lock()

    def __call__(self, member_ids: list[str]) -> None:
        with self.lock:
            if self.inner is None:
                from memberwise.events.bulk_hooks import member_registrar

                self.inner = member_registrar(self.settings)
        self.inner(member_ids)

    def scrub_erased(self, lake: EventLake) -> int:
        """See :meth:`memberwise.events.bulk_hooks.MemberRegistrar.scrub_erased` (0 when no
        member was registered, so no erased one was seen)."""
        return self.inner.scrub_erased(lake) if self.inner is not None else 0


def _summary(result: BulkResult) -> Table:
    """One row per file, then the totals (rate in events read per second)."""
    table = Table(title="ingest", show_footer=True)
    rate = result.rows_read / result.seconds if result.seconds else 0.0
    totals = {
        "file": f"{len(result.files)} files",
        "status": f"{len(result.skipped_files)} skipped, {len(result.failed_files)} failed",
        "read": f"{result.rows_read:,}",
        "accepted": f"{result.accepted:,}",
        "dupl.": f"{result.duplicates:,}",
        "rejected": f"{result.rejected:,}",
        "seconds": f"{result.seconds:.2f}",
        "events/s": f"{rate:,.0f}",
    }
    for name, footer in totals.items():
        left = name in ("file", "status")
        table.add_column(name, footer=footer, justify="left" if left else "right")
    for f in result.files:
        speed = f.rows_read / f.seconds if f.seconds and f.rows_read else 0.0
        table.add_row(
            f.path.name,
            f.status,
            f"{f.rows_read:,}",
            f"{f.accepted:,}",
            f"{f.duplicates:,}",
            f"{f.rejected:,}",
            f"{f.seconds:.2f}",
            f"{speed:,.0f}",
        )
    return table


@lake_app.command()
def compact(
    day: Annotated[
        list[str] | None,
        typer.Option("--day", help="Only these partitions (YYYY-MM-DD); repeatable."),
    ] = None,
) -> None:
    """Merge each day's small files into one and drop stored duplicates (safe to interrupt)."""
    lake = lake_of(Settings())
    days = [date.fromisoformat(d) for d in day] if day else None
    result = lake.compact(partitions=days)
    console.print(
        f"compacted {result.partitions:,} partitions: {result.files_before:,} files -> "
        f"{result.files_after:,}, {result.rows:,} rows kept, "
        f"{result.duplicates_removed:,} duplicates removed"
    )


@lake_app.command()
def stats(
    json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Partitions, files, stored rows (copies included) and bytes of the lake."""
    lake = lake_of(Settings())
    s = lake.stats()
    values = {
        "root": getattr(lake, "uri", str(lake.root)),
        "partitions": s.partitions,
        "files": s.files,
        "rows": s.rows,
        "bytes": s.bytes,
        "uncommitted_files": s.uncommitted_files,
    }
    if json:
        typer.echo(jsonlib.dumps(values, indent=2))
        return
    table = Table(title="event lake", show_header=False)
    for key, value in values.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
