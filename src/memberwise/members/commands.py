"""CLI for members: import a file of registrations (e.g. the demo platform's members)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.progress import Progress

from memberwise.config import get_settings
from memberwise.kit.db import transaction
from memberwise.members import service
from memberwise.members.schemas import MemberCreate
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime

app = typer.Typer(help="Import and inspect members.", no_args_is_help=True)
console = Console()
IMPORT_ACTOR = Principal(key_id="cli:members-import", role=Role.admin, name="members import")
_BATCH = 2_000


def import_file(rt: Runtime, path: Path, *, quiet: bool = False) -> tuple[int, int, int]:
    """Register every member in a Parquet file; returns (created, registered, unchanged)."""
    wanted = set(MemberCreate.model_fields)
    pf = pq.ParquetFile(path)
    columns = [c for c in pf.schema_arrow.names if c in wanted]
    totals = [0, 0, 0]
    with Progress(console=console, disable=quiet, transient=True) as progress:
        task = progress.add_task("importing members", total=pf.metadata.num_rows)
        for batch in pf.iter_batches(batch_size=_BATCH, columns=columns):
            records: list[dict[str, Any]] = batch.to_pylist()
            for r in records:
                # Spreadsheets export phone numbers as integers; the contract wants text.
                if r.get("phone") is not None:
                    r["phone"] = str(r["phone"])
            with transaction(rt.engine) as conn:
                result = service.import_members(conn, rt.cipher, records, actor=IMPORT_ACTOR)
            totals[0] += result.created
            totals[1] += result.registered
            totals[2] += result.unchanged
            progress.advance(task, len(records))
    return totals[0], totals[1], totals[2]


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A Parquet file.")],
) -> None:
    """Register the members in a Parquet file (columns as in POST /v1/members); idempotent."""
    rt = Runtime.open(get_settings())
    try:
        created, registered, unchanged = import_file(rt, path)
    except pa.ArrowInvalid as exc:  # not Parquet (a CSV, a spreadsheet): one sentence
        Console(stderr=True).print(
            f"{path} is not a Parquet file ({exc}): `memberwise members import` reads Parquet "
            "with the columns of POST /v1/members (member_id, name, phone, email, ...)",
            soft_wrap=True,
            highlight=False,
        )
        raise typer.Exit(2) from None
    finally:
        rt.close()
    console.print(f"created {created:,}, registered {registered:,}, unchanged {unchanged:,}")


@app.command("index-contacts")
def index_contacts() -> None:
    """Give members registered before contact hashes existed the keyed hashes of their phone
    and email, so staff can find them by those (idempotent)."""
    rt = Runtime.open(get_settings())
    try:
        with transaction(rt.engine) as conn:
            done = service.index_contacts(conn, rt.cipher)
    finally:
        rt.close()
    console.print(f"contacts indexed for {done:,} member(s)")
