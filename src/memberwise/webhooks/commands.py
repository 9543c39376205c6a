"""CLI of webhooks: ``memberwise webhooks send`` (the sender), ``endpoints``, ``add``."""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memberwise.config import get_settings
from memberwise.kit.db import transaction
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime
from memberwise.webhooks import service
from memberwise.webhooks.schemas import EndpointCreate, EventType
from memberwise.webhooks.sender import Sender, SenderConfig

console = Console()
app = typer.Typer(help="Webhook endpoints and the sender.", no_args_is_help=True)
CLI_ACTOR = Principal(key_id="cli", role=Role.admin, name="memberwise CLI")


@app.command("send")
def send(
    once: Annotated[bool, typer.Option(help="One pass, then exit.")] = False,
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Deliveries a pass.")] = 500,
    concurrency: Annotated[int, typer.Option(min=1, max=1024, help="Requests in flight.")] = 64,
    lease_seconds: Annotated[
        float, typer.Option(min=1, help="How long a claimed delivery is ours before retaken.")
    ] = 60.0,
) -> None:
    """Deliver the outbox to the registered endpoints (until Ctrl-C, or once)."""
    rt = Runtime.open(get_settings())
    config = SenderConfig(
        batch=batch, concurrency=concurrency, lease=timedelta(seconds=lease_seconds)
    )

    async def main() -> None:
        async with Sender(rt.engine, rt.cipher, config) as sender:
            if once:
                report = await sender.run_once()
                console.print(report.model_dump())
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            console.print("webhook sender running (Ctrl-C stops)")
            await sender.run(stop)

    try:
        asyncio.run(main())
    finally:
        rt.close()


@app.command("add")
def add(
    url: str,
    event_type: Annotated[
        list[EventType] | None, typer.Option("--event", help="Repeat; none means every type.")
    ] = None,
    description: str | None = None,
) -> None:
    """Register an endpoint and print its signing secret (shown once)."""
    rt = Runtime.open(get_settings())
    try:
        body = EndpointCreate.model_validate(
            {"url": url, "event_types": event_type or [], "description": description}
        )
        with transaction(rt.engine) as conn:
            created = service.create_endpoint(conn, rt.cipher, body, actor=CLI_ACTOR)
    finally:
        rt.close()
    console.print(f"endpoint {created.endpoint_id} -> {created.url}")
    console.print(f"signing secret (shown once): {created.secret}")


@app.command("endpoints")
def endpoints() -> None:
    """List endpoints with their state and failure streak."""
    rt = Runtime.open(get_settings())
    try:
        with transaction(rt.engine) as conn:
            rows = service.list_endpoints(conn)
    finally:
        rt.close()
    table = Table(show_edge=False)
    for column in ("endpoint", "url", "types", "status", "failures"):
        table.add_column(column)
    for e in rows:
        table.add_row(
            e.endpoint_id,
            e.url,
            ", ".join(e.event_types) or "all",
            e.status + (f" ({e.disabled_reason})" if e.disabled_reason else ""),
            str(e.consecutive_failures),
        )
    console.print(table)
