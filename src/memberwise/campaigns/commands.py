"""CLI of campaigns: ``memberwise campaigns send`` (run it periodically) and ``results``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from memberwise.campaigns import journeys, outcomes, service
from memberwise.config import get_settings
from memberwise.kit.db import transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.runtime import Runtime

console = Console()
app = typer.Typer(help="Campaigns: send what is due, read results.", no_args_is_help=True)


@app.command("send")
def send(limit: Annotated[int, typer.Option(min=1, help="Sends at most.")] = 5000) -> None:
    """Send every running campaign's due messages (idempotent; run it every few minutes)."""
    rt = Runtime.open(get_settings())
    try:
        with transaction(rt.engine) as conn:
            report = service.send_due(conn, rt.program(), limit=limit)
    finally:
        rt.close()
    console.print(f"sent {report.sent:,}, skipped {report.skipped:,}")


@app.command("journeys")
def run_journeys() -> None:
    """Enroll new triggers of every active journey and run due steps (idempotent)."""
    rt = Runtime.open(get_settings())
    try:
        with transaction(rt.engine) as conn:
            report = journeys.run(conn, rt.program(), lake=rt.lake)
    finally:
        rt.close()
    console.print(report.model_dump())


@app.command("results")
def results(campaign_id: str) -> None:
    """A campaign's treatment-vs-holdout results as JSON."""
    rt = Runtime.open(get_settings())
    try:
        with transaction(rt.engine) as conn:
            out = outcomes.results(conn, campaign_id)
    except MemberwiseError as exc:
        console.print(f"[red]{exc.code}[/red]: {exc.message}")
        raise typer.Exit(2) from exc
    finally:
        rt.close()
    console.print_json(json.dumps(out.model_dump(mode="json")))
