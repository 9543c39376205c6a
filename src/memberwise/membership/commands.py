"""CLI of memberships: ``memberwise tiers preview|grant``, ``memberwise managers
add|remove|list`` and ``memberwise subscriptions advance``."""

from __future__ import annotations

import json as jsonlib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from memberwise.builds import latest_build
from memberwise.config import get_settings
from memberwise.kit.db import transaction
from memberwise.kit.errors import InvalidRequest, MemberwiseError
from memberwise.kit.time import utcnow
from memberwise.membership import grants, manager_repository, stage, subscriptions
from memberwise.membership import managers as membership_managers
from memberwise.membership.schemas import TierGrant
from memberwise.privacy.schemas import Principal, Role
from memberwise.program.schemas import Program
from memberwise.program.service import current_program, load_program
from memberwise.runtime import Runtime

console = Console()
tiers_app = typer.Typer(help="Preview tier changes, grant tiers by hand.", no_args_is_help=True)
managers_app = typer.Typer(help="Account managers of black-card members.", no_args_is_help=True)
subscriptions_app = typer.Typer(help="Paid subscriptions.", no_args_is_help=True)
CLI_ACTOR = Principal(key_id="cli", role=Role.admin, name="memberwise CLI")


def _fail(exc: MemberwiseError) -> typer.Exit:
    console.print(f"[red]{exc.code}[/red]: {exc.message}")
    return typer.Exit(2)


def _program(path: Path | None) -> Program:
    return load_program(path) if path is not None else current_program(get_settings().program_file)


ProgramOption = Annotated[
    Path | None,
    typer.Option(
        "--program", exists=True, dir_okay=False, help="Program file (default: the configured one)."
    ),
]


def matrix_table(preview: dict[str, Any], program: Program) -> Table:
    names = [t.name for t in program.tiers]
    rows = [
        *[n for n in names if n in preview["transitions"]],
        *(["(none)"] if "(none)" in preview["transitions"] else []),
    ]
    table = Table(title="members: from tier (rows) -> to tier (columns)", show_edge=False)
    table.add_column("from \\ to")
    for name in names:
        table.add_column(name, justify="right")
    for source in rows:
        moves = preview["transitions"][source]
        cells = []
        for name in names:
            n = moves.get(name, 0)
            cells.append(f"[bold]{n:,}[/bold]" if n and name != source else f"{n:,}")
        table.add_row(source, *cells)
    return table


@tiers_app.command("preview")
def preview_(
    program_file: ProgramOption = None,
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """How many members would move between which tiers if PROGRAM were applied now (to the
    latest build's profiles and the tiers held today). Nothing is changed."""
    rt = Runtime.open(get_settings())
    try:
        program = _program(program_file)
        latest = latest_build(rt, ("profiles.parquet",))
        if latest is None:
            console.print("no build yet: run `memberwise build` first")
            raise typer.Exit(2)
        out = stage.preview(rt, program, latest)
    except MemberwiseError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()
    if json:
        typer.echo(jsonlib.dumps(out, indent=2, ensure_ascii=False))
        return
    console.print(
        f"program {program.name!r} on build {out['build_id']} ({out['members']:,} members)"
    )
    console.print(matrix_table(out, program))
    changes = ", ".join(f"{k} {v:,}" for k, v in out["changes"].items() if v)
    console.print(f"changes: {changes}; downgrade notices: {out['notices']:,}")
    if "invitations" in out:
        inv = out["invitations"]
        console.print(
            f"black card: {inv['eligible']:,} eligible, quota {inv['quota']:,}, "
            f"{inv['taken']:,} taken, {inv['invited']:,} new invitations"
        )


@tiers_app.command("grant")
def grant(
    member_id: str,
    tier: str,
    reason: Annotated[str, typer.Option(help="Why (kept in the tier history and audit log).")],
    until: Annotated[datetime | None, typer.Option(help="When the grant ends (UTC).")] = None,
) -> None:
    """Give MEMBER_ID the tier TIER by hand; recalculation leaves it alone."""
    rt = Runtime.open(get_settings())
    try:
        data = TierGrant(tier=tier, until=until, reason=reason)
        with transaction(rt.engine) as conn:
            out = grants.grant(conn, _program(None), member_id, data, actor=CLI_ACTOR)
    except ValidationError as exc:  # e.g. an --until in the past or millennia ahead
        first = exc.errors()[0]
        raise _fail(InvalidRequest(f"{first['loc'][0]}: {first['msg']}")) from None
    except MemberwiseError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()
    console.print(
        f"{member_id}: {out.tier.name if out.tier else '-'} ({out.tier.source if out.tier else ''})"
    )


@managers_app.command("add")
def add(
    staff_id: str,
    capacity: Annotated[int, typer.Option(min=1, help="How many members they can look after.")],
) -> None:
    """Make a service staff member an account manager (members are assigned at once)."""
    rt = Runtime.open(get_settings())
    try:
        with transaction(rt.engine) as conn:
            result = membership_managers.add_manager(
                conn, _program(None), staff_id, capacity, actor=CLI_ACTOR
            )
    except MemberwiseError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()
    console.print(f"{staff_id}: manager with capacity {capacity}; {result}")


@managers_app.command("remove")
def remove(staff_id: str) -> None:
    """A manager leaves: their members are reassigned to the others."""
    rt = Runtime.open(get_settings())
    try:
        with transaction(rt.engine) as conn:
            result = membership_managers.remove_manager(
                conn, _program(None), staff_id, actor=CLI_ACTOR
            )
    except MemberwiseError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()
    console.print(f"{staff_id}: left; {result}")


@managers_app.command("list")
def list_() -> None:
    """Managers with their load and capacity."""
    rt = Runtime.open(get_settings())
    with rt.engine.connect() as conn:
        rows = manager_repository.managers_with_load(conn)
    rt.close()
    table = Table(show_edge=False)
    for name in ("staff_id", "name", "members", "capacity", "active"):
        table.add_column(name)
    for r in rows:
        table.add_row(
            r["staff_id"], r["name"], str(r["members"]), str(r["capacity"]), str(bool(r["active"]))
        )
    console.print(table)


@subscriptions_app.command("advance")
def advance() -> None:
    """Apply what time has made due (renewal invoices, grace ends, expiries) to every open
    subscription. Reads and writes do this too; run it daily so reports are current."""
    rt = Runtime.open(get_settings())
    with transaction(rt.engine) as conn:
        counts = subscriptions.advance_all(conn, _program(None), at=utcnow())
    rt.close()
    console.print(f"subscriptions by status: {counts}")
