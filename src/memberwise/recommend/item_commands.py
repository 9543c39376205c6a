"""CLI for the item catalog: ``memberwise items import FILE`` loads the platform's items.

How items reach memberwise: the platform owns its catalog, so memberwise keeps a copy in the
operational store's ``items`` table, filled in bulk from a file (this command; ``memberwise
run`` imports the demo platform's ``items.parquet`` the same way) and kept current one item at
a time with ``PUT /v1/items/{id}`` (stock, hiding, price, launch time). The build reads the
catalog from the store (new arrivals, consumables, early access) and serving checks each
recommended item against it at request time, so an item hidden or sold out a second ago is
never shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from memberwise.config import get_settings
from memberwise.kit.db import make_engine, transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.recommend import catalog
from memberwise.recommend.schemas import ItemsImportResult

app = typer.Typer(help="Load and inspect the platform's item catalog.", no_args_is_help=True)
console = Console()


@app.callback()
def _group() -> None:
    """Load and inspect the platform's item catalog."""


def import_catalog(db_url: str, path: Path, categories: Path | None = None) -> ItemsImportResult:
    """Import ``path`` (and parent categories from ``categories``) in one transaction."""
    table = catalog.read_table_file(path)
    parents = catalog.read_table_file(categories) if categories is not None else None
    engine = make_engine(db_url)
    try:
        with transaction(engine) as conn:
            return catalog.import_items(conn, table, categories=parents)
    finally:
        engine.dispose()


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="Items as .parquet, .csv or .jsonl.")],
    categories: Annotated[
        Path | None,
        typer.Option(help="Categories file (category_id, parent_id) for parent categories."),
    ] = None,
) -> None:
    """Create or replace the file's items (item_id, title, category_id, brand, merchant_id,
    price in fen, launched_at, consumable, rebuy_days, in_stock, hidden)."""
    try:
        result = import_catalog(get_settings().db_url, file, categories)
    except MemberwiseError as exc:
        console.print(f"[red]{exc.code}[/red]: {exc.message}")
        raise typer.Exit(1) from exc
    console.print(
        f"items: {result.created:,} created, {result.updated:,} updated, "
        f"{result.unchanged:,} unchanged"
    )
