"""CLI of feedback: ``memberwise feedback topics``, ``rising`` and ``analyze``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memberwise.config import get_settings
from memberwise.feedback import service
from memberwise.feedback.schemas import Level, RisingLevel
from memberwise.kit.db import transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.runtime import Runtime

app = typer.Typer(help="Feedback topics, rising complaints, text analysis.", no_args_is_help=True)
console = Console()
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _fail(exc: MemberwiseError) -> typer.Exit:
    console.print(f"[red]{exc.code}[/red]: {exc.message}")
    return typer.Exit(2)


@app.command("topics")
def topics(
    level: Annotated[Level | None, typer.Option(help="category, brand, item or merchant.")] = None,
    key: Annotated[str | None, typer.Option(help="One category/brand/item/merchant id.")] = None,
    aspect: Annotated[str | None, typer.Option(help="One aspect, e.g. logistics.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    json: Json = False,
) -> None:
    """Recurring problems of the latest published build, most mentioned first."""
    rt = Runtime.open(get_settings())
    try:
        with transaction(rt.engine) as conn:
            found = service.topics(conn, level=level, key=key, aspect=aspect, limit=limit)
    finally:
        rt.close()
    if json:
        console.print_json(found.model_dump_json())
        return
    table = Table(title=f"recurring problems (build {found.build_id or 'none'})")
    for name in ("level", "key", "aspect", "trigger", "mentions", "members", "share", "examples"):
        table.add_column(
            name, justify="right" if name in ("mentions", "members", "share") else "left"
        )
    for t in found.topics:
        table.add_row(t.level.value, t.key, t.aspect, t.trigger, f"{t.mentions:,}",
                      f"{t.members:,}", f"{t.share:.0%}", " / ".join(t.examples))  # fmt: skip
    console.print(table)


@app.command("rising")
def rising(
    level: Annotated[RisingLevel | None, typer.Option(help="item or merchant.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    json: Json = False,
) -> None:
    """Items and merchants whose complaint rate rose (the latest published build's test)."""
    rt = Runtime.open(get_settings())
    try:
        with transaction(rt.engine) as conn:
            found = service.rising(conn, level=level, limit=limit)
    finally:
        rt.close()
    if json:
        console.print_json(found.model_dump_json())
        return
    table = Table(title=f"rising complaint rates (build {found.build_id or 'none'})")
    for name in ("level", "key", "recent", "orders", "baseline", "orders ", "ratio", "q"):
        table.add_column(name, justify="left" if name in ("level", "key") else "right")
    for r in found.items:
        table.add_row(r.level.value, r.key, str(r.recent_complaints), str(r.recent_orders),
                      str(r.base_complaints), str(r.base_orders), f"{r.ratio:.1f}",
                      f"{r.q_value:.2g}")  # fmt: skip
    console.print(table)


@app.command("analyze")
def analyze(
    texts: Annotated[list[str], typer.Argument(help="Chinese texts to analyse.")],
    json: Json = False,
) -> None:
    """Sentiment and aspects (with the phrase that triggered each) of TEXTS."""
    try:
        found = service.analyze(texts)
    except MemberwiseError as exc:
        raise _fail(exc) from exc
    if json:
        console.print_json(found.model_dump_json())
        return
    for r in found.results:
        aspects = ", ".join(f"{a.aspect}({a.trigger})" for a in r.aspects) or "-"
        console.print(f"{r.sentiment:8} {r.positive:.2f}  {aspects}  {r.text}")
