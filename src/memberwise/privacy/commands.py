"""CLI for API keys: create (shown once), list, revoke."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from memberwise.config import get_settings
from memberwise.kit.db import make_engine, transaction
from memberwise.privacy import service
from memberwise.privacy.schemas import KeyCreate, Role, StaffCreate

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
staff_app = typer.Typer(help="Add and list staff accounts.", no_args_is_help=True)
console = Console()


@app.command("create")
def create(
    role: Annotated[Role, typer.Option(help="What the key may do.")],
    name: Annotated[str, typer.Option(help="Who or what the key is for.")] = "",
    staff: Annotated[str | None, typer.Option(help="Staff account the key belongs to.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print {key, role} as JSON.")] = False,
) -> None:
    """Create an API key and print it (it is shown only this once)."""
    engine = make_engine(get_settings().db_url)
    with transaction(engine) as conn:
        created = service.create_key(conn, KeyCreate(role=role, name=name, staff_id=staff))
    if json:
        typer.echo(orjson.dumps({"key": created.key, "role": created.role.value}).decode())
        return
    console.print(f"[bold]{created.key}[/bold]")
    console.print(
        f"role {created.role.value}, id {created.key_id}: store it now, it is not shown again"
    )


@app.command("list")
def list_() -> None:
    """List keys (ids, roles, names; never secrets)."""
    engine = make_engine(get_settings().db_url)
    with transaction(engine) as conn:
        keys = service.list_keys(conn)
    table = Table("key id", "role", "name", "created", "revoked")
    for k in keys:
        table.add_row(
            k.key_id,
            k.role.value,
            k.name,
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
        )
    console.print(table)


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (second part of mw_ID_...).")],
) -> None:
    """Revoke a key; running servers stop accepting it within api_key_cache_seconds."""
    engine = make_engine(get_settings().db_url)
    with transaction(engine) as conn:
        service.revoke_key(conn, key_id)
    console.print(f"revoked {key_id}")


@staff_app.command("add")
def add_staff(
    staff_id: Annotated[str, typer.Argument(help="The platform's id for the person.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    role: Annotated[Role, typer.Option(help="What their keys may do.")],
) -> None:
    """Add a staff account (then: memberwise keys create --staff ID --role ROLE)."""
    engine = make_engine(get_settings().db_url)
    with transaction(engine) as conn:
        person = service.create_staff(conn, StaffCreate(staff_id=staff_id, name=name, role=role))
    console.print(f"staff {person.staff_id} ({person.name}, {person.role.value})")


@staff_app.command("list")
def list_staff() -> None:
    """List staff accounts."""
    engine = make_engine(get_settings().db_url)
    with transaction(engine) as conn:
        people = service.list_staff(conn)
    table = Table("staff id", "name", "role", "active")
    for p in people:
        table.add_row(p.staff_id, p.name, p.role.value, "yes" if p.active else "no")
    console.print(table)
