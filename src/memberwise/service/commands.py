"""CLI of the service desk: ``memberwise service sweep|report|queue|agent|auto``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memberwise.config import get_settings
from memberwise.kit.db import transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.kit.time import utcnow
from memberwise.ledger import service as ledger
from memberwise.privacy.schemas import Principal, Role
from memberwise.program.schemas import Program
from memberwise.program.service import current_program, load_program
from memberwise.runtime import Runtime
from memberwise.service import agents, auto, reports, service, sweeps
from memberwise.service.schemas import AgentIn

console = Console()
app = typer.Typer(help="The service desk: SLA sweep, reports, queue, agents.", no_args_is_help=True)
CLI_ACTOR = Principal(key_id="cli", role=Role.admin, name="memberwise CLI")

ProgramOption = Annotated[
    Path | None,
    typer.Option(
        "--program", exists=True, dir_okay=False, help="Program file (default: the configured one)."
    ),
]


def _program(path: Path | None) -> Program:
    return load_program(path) if path is not None else current_program(get_settings().program_file)


def _fail(exc: MemberwiseError) -> typer.Exit:
    console.print(f"[red]{exc.code}[/red]: {exc.message}")
    return typer.Exit(2)


@app.command("sweep")
def sweep_(program_file: ProgramOption = None) -> None:
    """Record the SLA warnings and breaches that have come (each once) and escalate breaches;
    run it every minute (cron, a systemd timer)."""
    rt = Runtime.open(get_settings())
    try:
        program = _program(program_file)
        out = ledger.write(rt.engine, lambda conn: sweeps.sweep(conn, program))
    except MemberwiseError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()
    console.print(
        f"warnings {out.warnings:,}  breaches {out.breaches:,}  escalations {out.escalations:,}  "
        f"late after-sales steps {out.late_steps:,}"
    )


@app.command("report")
def report_(
    by: Annotated[str, typer.Option(help="agent, team or tier")] = "agent",
    days: Annotated[int, typer.Option(min=1, max=366, help="Window: the last N days.")] = 30,
    program_file: ProgramOption = None,
) -> None:
    """SLA attainment, first-contact resolution, handle time, backlog, CSAT and compensation
    against budget, per agent, team or tier."""
    if by not in ("agent", "team", "tier"):
        console.print("[red]invalid_request[/red]: --by is agent, team or tier")
        raise typer.Exit(2)
    rt = Runtime.open(get_settings())
    try:
        program = _program(program_file)
        until = utcnow()
        with transaction(rt.engine) as conn:
            out = reports.report(
                conn, program, by=by, since=until - timedelta(days=days), until=until
            )
    finally:
        rt.close()
    table = Table(title=f"service desk by {by}, last {days} days", show_edge=False)
    for column in (
        "",
        "tickets",
        "resolved",
        "backlog",
        "SLA met",
        "breached",
        "attainment",
        "FCR",
        "handle min",
        "CSAT",
        "paid fen",
        "budget fen",
    ):
        table.add_column(column, justify="left" if not column else "right")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.0%}"

    for r in out.rows:
        table.add_row(
            r.key,
            f"{r.tickets:,}",
            f"{r.resolved:,}",
            f"{r.backlog:,}",
            f"{r.sla_met:,}",
            f"{r.sla_breached:,}",
            pct(r.sla_attainment),
            pct(r.first_contact_resolution),
            "-" if r.mean_handle_minutes is None else f"{r.mean_handle_minutes:,.0f}",
            "-" if r.csat is None else f"{r.csat:.2f}",
            f"{r.compensation_paid:,}",
            "-" if r.compensation_budget is None else f"{r.compensation_budget:,}",
        )
    console.print(table)


@app.command("queue")
def queue_(limit: Annotated[int, typer.Option(min=1, max=500)] = 20) -> None:
    """The unassigned tickets, highest tier first, then nearest deadline."""
    rt = Runtime.open(get_settings())
    try:
        with transaction(rt.engine) as conn:
            out = service.queue(conn, limit=limit)
    finally:
        rt.close()
    table = Table(title="queue", show_edge=False)
    for column in ("ticket", "member", "tier", "kind", "priority", "due (UTC)"):
        table.add_column(column)
    for t in out.items:
        due = "-" if t.due_at is None else t.due_at.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(t.ticket_id, t.member_id, t.tier or "-", t.kind, t.priority, due)
    console.print(table)


@app.command("agent")
def agent_(
    staff_id: Annotated[str, typer.Argument(help="A staff member with the service role.")],
    skills: Annotated[str, typer.Option(help="Comma-separated, e.g. after_sales,finance")] = "",
    capacity: Annotated[int, typer.Option(min=1, help="Live tickets at most.")] = 20,
    authority: Annotated[
        str, typer.Option(help="Row of the program's authority matrix.")
    ] = "agent",
    team: Annotated[str, typer.Option()] = "desk",
    supervisor: Annotated[str | None, typer.Option(help="Escalations go to them.")] = None,
    program_file: ProgramOption = None,
) -> None:
    """Make a service staff member a desk agent (or change them)."""
    data = AgentIn(
        team=team,
        skills=[s for s in skills.split(",") if s],
        capacity=capacity,
        authority=authority,
        supervisor_id=supervisor,
    )
    rt = Runtime.open(get_settings())
    try:
        program = _program(program_file)
        out = ledger.write(
            rt.engine,
            lambda conn: agents.put_agent(conn, program, staff_id, data, actor=CLI_ACTOR),
        )
    except MemberwiseError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()
    console.print(f"{out.staff_id}: {out.authority}, capacity {out.capacity}, load {out.load}")


@app.command("reapply")
def reapply_(program_file: ProgramOption = None) -> None:
    """Move every live ticket to the program's current SLA policies (after editing them); the
    clocks keep their elapsed time."""
    rt = Runtime.open(get_settings())
    try:
        program = _program(program_file)
        changed = ledger.write(
            rt.engine, lambda conn: sweeps.reapply_policies(conn, program, actor=CLI_ACTOR)
        )
    finally:
        rt.close()
    console.print(f"{changed:,} live tickets moved to the program's policies")


@app.command("auto")
def auto_(
    hours: Annotated[float, typer.Option(min=0.1, help="Events of the last N hours.")] = 24.0,
    limit: Annotated[int, typer.Option(min=1, help="At most this many events.")] = 10_000,
    program_file: ProgramOption = None,
) -> None:
    """Open the tickets the program's automatic rules ask for, from the lake's recent events
    (complaints, reviews, ...); an event that already opened its ticket opens none (run it
    from cron after each ingest)."""
    rt = Runtime.open(get_settings())
    try:
        program = _program(program_file)
        types = sorted({rule.event for rule in program.service.auto})
        days = int(hours // 24) + 1
        found = auto.lake_events(rt.lake, types, days=days, limit=limit)
        events = auto.since(found, max((e["ts"] for e in found), default=utcnow()), hours)
        opened = ledger.write(
            rt.engine,
            lambda conn: auto.open_for_events(conn, program, events, actor=CLI_ACTOR),
        )
    finally:
        rt.close()
    console.print(f"{len(events):,} events read, {len(opened):,} tickets opened or found")
