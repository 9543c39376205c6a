"""CLI for the ledgers: the periodic points run (maturation and expiry), a member's points, and
coupon issuance to a segment or listed members.

``memberwise points expire`` is meant to run from cron (hourly or daily): it makes points whose
return window passed available, expires what is left of lots past their end, and marks coupons
past their end expired. Each step is its own transaction and is idempotent, so an interrupted
run is simply run again.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from memberwise.config import get_settings
from memberwise.kit.db import make_engine, transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.kit.time import as_utc, utcnow
from memberwise.ledger import coupons, points
from memberwise.ledger import service as ledger
from memberwise.privacy.schemas import Principal, Role
from memberwise.program.service import current_program

points_app = typer.Typer(
    help="The points ledger: periodic run, a member's points.", no_args_is_help=True
)
coupons_app = typer.Typer(
    help="Coupons: issue to a segment or members, list templates.", no_args_is_help=True
)
console = Console()
RUN_ACTOR = Principal(key_id="cli:points-run", role=Role.admin, name="points run")
ISSUE_ACTOR = Principal(key_id="cli:coupons-issue", role=Role.admin, name="coupons issue")


def _at(value: str | None) -> datetime:
    if value is None:
        return utcnow()
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO-8601 time") from None


@points_app.command("expire")
def expire(
    at: Annotated[str | None, typer.Option(help="Run as of this ISO time (default now).")] = None,
) -> None:
    """Mature points past their return window, expire lots past their end, expire coupons."""
    when = _at(at)
    engine = make_engine(get_settings().db_url)
    try:
        matured = ledger.write(engine, lambda c: points.mature_due(c, at=when, actor=RUN_ACTOR))
        expired = ledger.write(engine, lambda c: points.expire_due(c, at=when, actor=RUN_ACTOR))
        ended = ledger.write(engine, lambda c: coupons.expire_due(c, at=when))
    finally:
        engine.dispose()
    console.print(
        f"{matured:,} points became available, {expired:,} points expired, "
        f"{ended:,} coupons expired (as of {when.isoformat()})"
    )


@points_app.command("show")
def show(
    member_id: Annotated[str, typer.Argument(help="The member.")],
    json: Annotated[
        bool, typer.Option("--json", help="Print the answer of GET .../points.")
    ] = False,
) -> None:
    """A member's balance and lots."""
    engine = make_engine(get_settings().db_url)
    try:
        with transaction(engine) as conn:
            out = points.points_of(conn, member_id, limit=20)
    finally:
        engine.dispose()
    if json:
        typer.echo(out.model_dump_json())
        return
    b = out.balance
    console.print(f"{member_id}: available {b.available:,}, pending {b.pending:,}, debt {b.debt:,}")
    table = Table("lot", "points", "left", "status", "available at", "expires at")
    for lot in out.lots:
        table.add_row(
            lot.lot_id,
            str(lot.points),
            str(lot.remaining),
            lot.status.value,
            f"{lot.available_at:%Y-%m-%d %H:%M}",
            f"{lot.expires_at:%Y-%m-%d %H:%M}" if lot.expires_at else "never",
        )
    console.print(table)


@coupons_app.command("issue")
def issue(
    template: Annotated[str, typer.Option(help="The program's coupon template.")],
    segment: Annotated[str | None, typer.Option(help="A segment or persona of the build.")] = None,
    member: Annotated[list[str] | None, typer.Option(help="A member id (repeatable).")] = None,
    key: Annotated[
        str | None, typer.Option(help="Idempotency key (default: template+segment+day).")
    ] = None,
) -> None:
    """Issue a template's coupons to a segment or to members (running it again with the same
    key issues nothing more)."""
    if (segment is None) == (not member):
        raise typer.BadParameter("give --segment or --member")
    settings = get_settings()
    program = current_program(settings.program_file)
    who = segment or ",".join(sorted(member or []))
    issue_key = key or f"cli:{template}:{who}:{utcnow():%Y-%m-%d}"
    engine = make_engine(settings.db_url)
    try:
        out = ledger.write(
            engine,
            lambda c: coupons.issue(
                c,
                program,
                template,
                coupons.segment_member_ids(c, segment) if segment else list(member or []),
                key=issue_key,
                actor=ISSUE_ACTOR,
            ),
        )
    except MemberwiseError as exc:
        console.print(f"[red]{exc.code}[/red]: {exc.message}")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    reasons: dict[str, int] = {}
    for code in out.refused.values():
        reasons[code] = reasons.get(code, 0) + 1
    console.print(f"{out.issued:,} coupons of {template} issued (key {issue_key})")
    for code, n in sorted(reasons.items()):
        console.print(f"  {n:,} members refused: {code}")


@coupons_app.command("templates")
def list_templates(
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    program_file: Annotated[
        Path | None, typer.Option(help="Default MEMBERWISE_PROGRAM_FILE.")
    ] = None,
) -> None:
    """The program's coupon templates and how much of their budgets is used."""
    settings = get_settings()
    program = current_program(program_file or settings.program_file)
    engine = make_engine(settings.db_url)
    try:
        with transaction(engine) as conn:
            out = coupons.templates(conn, program)
    finally:
        engine.dispose()
    if json:
        typer.echo(orjson.dumps([t.model_dump() for t in out]).decode())
        return
    table = Table("template", "kind", "issued", "redeemed", "money off", "budget (count / fen)")
    for t in out:
        table.add_row(
            t.name,
            t.kind,
            f"{t.issued:,}",
            f"{t.redeemed:,}",
            f"{t.redeemed_money:,}",
            f"{t.budget_count or '-'} / {t.budget_money or '-'}",
        )
    console.print(table)
