"""CLI of members' data rights and retention (``memberwise privacy ...``): erase a member,
finish interrupted scrubs, the periodic retention jobs, and the staff queue of requests.

They live with the jobs because they reach every domain (through the holders registered in
:mod:`memberwise.jobs.holders`) and the lake.
"""

from __future__ import annotations

import json as jsonlib
from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memberwise.config import get_settings
from memberwise.jobs import holders
from memberwise.kit.db import transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.kit.time import utcnow
from memberwise.members import service as members
from memberwise.privacy import erasure, retention, rights
from memberwise.privacy.schemas import SYSTEM, RequestStatus
from memberwise.program.service import current_program
from memberwise.runtime import Runtime

app = typer.Typer(help="Members' data rights and retention.", no_args_is_help=True)
console = Console()


def _runtime() -> Runtime:
    holders.install()
    return Runtime.open(get_settings())


def _secret(rt: Runtime) -> bytes:
    return erasure.tombstone_secret(rt.settings.pii_key_bytes)


@app.command("erase")
def erase(
    member_id: Annotated[str, typer.Argument(help="The member to forget everywhere.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit row).")] = "request",
) -> None:
    """Forget a member: PII key shredded, rows deleted or pseudonymised, lake and files
    rewritten without them."""
    rt = _runtime()
    try:
        result = erasure.erase_member(
            rt.engine, rt.lake, rt.settings.home, rt.cipher, _secret(rt), member_id, reason=reason
        )
    except MemberwiseError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from exc
    finally:
        rt.close()
    typer.echo(result.model_dump_json(indent=2))


@app.command("finish-scrubs")
def finish_scrubs(
    everyone: Annotated[
        bool,
        typer.Option(help="Scrub every erased member (after re-ingesting old files)."),
    ] = False,
) -> None:
    """Remove erased members' events from the lake where a scrub did not finish."""
    rt = _runtime()
    try:
        removed = erasure.finish_scrubs(rt.engine, rt.lake, _secret(rt), everyone=everyone)
    finally:
        rt.close()
    console.print(f"removed {removed:,} events of erased members")


@app.command("retention-events")
def retention_events(
    days: Annotated[
        int | None,
        typer.Option(help="Keep this many days (default: the program's retention.events_days)."),
    ] = None,
    no_aggregate: Annotated[
        bool, typer.Option("--no-aggregate", help="Drop without keeping daily counts.")
    ] = False,
) -> None:
    """Drop events older than the retention period (daily counts kept, no member in them)."""
    rt = _runtime()
    try:
        policy = current_program(rt.settings.program_file).privacy.retention
        keep = days or policy.events_days
        if keep is None:
            console.print("no retention period: set --days or privacy.retention.events_days")
            raise typer.Exit(2)
        result = retention.drop_old_events(
            rt.lake,
            older_than_days=keep,
            now=utcnow(),
            aggregate=policy.aggregate_dropped_events and not no_aggregate,
        )
    finally:
        rt.close()
    typer.echo(jsonlib.dumps(result.__dict__))


@app.command("retention-members")
def retention_members(
    days: Annotated[
        int | None,
        typer.Option(
            help="Erase members inactive this long (default: retention.inactive_member_days)."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count them.")] = False,
) -> None:
    """Erase the members with no event and no change of their record for the period."""
    rt = _runtime()
    try:
        policy = current_program(rt.settings.program_file).privacy.retention
        period = days or policy.inactive_member_days
        if period is None:
            console.print("no period: set --days or privacy.retention.inactive_member_days")
            raise typer.Exit(2)
        cutoff = utcnow() - timedelta(days=period)
        with transaction(rt.engine) as conn:
            known = members.last_changes(conn)
        gone = retention.inactive_members(known, retention.last_seen(rt.lake), cutoff=cutoff)
        erased = 0
        if not dry_run:
            for member_id in gone:
                erasure.erase_member(
                    rt.engine,
                    rt.lake,
                    rt.settings.home,
                    rt.cipher,
                    _secret(rt),
                    member_id,
                    actor=SYSTEM,
                    reason="retention",
                )
                erased += 1
    finally:
        rt.close()
    typer.echo(jsonlib.dumps({"inactive": len(gone), "erased": erased}))


@app.command("requests")
def list_requests(
    status: Annotated[RequestStatus, typer.Option(help="Which requests.")] = RequestStatus.open,
) -> None:
    """The staff queue of data-subject requests, oldest deadline first."""
    rt = _runtime()
    try:
        with transaction(rt.engine) as conn:
            queue = rights.queue(conn, status=status)
    finally:
        rt.close()
    table = Table("request", "member", "kind", "received", "due", "overdue")
    for r in queue:
        table.add_row(
            r.request_id,
            r.member_id,
            r.kind.value,
            f"{r.received_at:%Y-%m-%d}",
            f"{r.due_at:%Y-%m-%d}",
            "yes" if r.overdue else "",
        )
    console.print(table)
