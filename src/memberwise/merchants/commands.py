"""CLI of merchant quality: ``memberwise merchants scorecard [MERCHANT_ID]`` and
``memberwise merchants penalize``."""

from __future__ import annotations

import json as jsonlib
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memberwise.config import get_settings
from memberwise.kit.db import transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.merchants import service
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime

app = typer.Typer(help="Merchant scorecards and penalties.", no_args_is_help=True)
console = Console()
CLI_ACTOR = Principal(key_id="cli", role=Role.admin, name="memberwise CLI")
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _fail(exc: MemberwiseError) -> typer.Exit:
    console.print(f"[red]{exc.code}[/red]: {exc.message}")
    return typer.Exit(2)


@app.command("scorecard")
def scorecard(
    merchant_id: Annotated[str | None, typer.Argument(help="One merchant (default: all).")] = None,
    industry: Annotated[str | None, typer.Option(help="Only this industry.")] = None,
    best_first: Annotated[bool, typer.Option("--best-first", help="Best first.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    json: Json = False,
) -> None:
    """DSR scorecards of the latest published build (worst quality first), or one merchant's
    scorecard, penalty points and actions in force."""
    rt = Runtime.open(get_settings())
    try:
        program = rt.program()
        with transaction(rt.engine) as conn:
            if merchant_id is not None:
                one = service.scorecard(
                    conn, program.merchants, merchant_id, program.display_timezone
                )
                console.print_json(one.model_dump_json()) if json else console.print(one)
                return
            cards = service.scorecards(
                conn, industry=industry, worst_first=not best_first, limit=limit
            )
    except MemberwiseError as exc:
        raise _fail(exc) from exc
    finally:
        rt.close()
    if json:
        console.print_json(jsonlib.dumps(cards.model_dump(mode="json")))
        return
    table = Table(title="merchant scorecards (DSR over 180 days, rates over 30 days)")
    for name in (
        "merchant",
        "industry",
        "ratings",
        "described",
        "service",
        "logistics",
        "DSR pct",
        "refund",
        "dispute",
        "complaint",
        "handling h",
        "quality pct",
    ):
        table.add_column(name, justify="left" if name in ("merchant", "industry") else "right")
    for c in cards.items:

        def fmt(v: float | None, digits: int = 2) -> str:
            return "-" if v is None else f"{v:.{digits}f}"

        table.add_row(
            c.merchant_id, c.industry, f"{c.ratings:,}", fmt(c.dsr_described),
            fmt(c.dsr_service), fmt(c.dsr_logistics), fmt(c.dsr_percentile, 0),
            f"{c.refund_rate:.1%}", f"{c.dispute_rate:.2%}", f"{c.complaint_rate:.1%}",
            fmt(c.handling_hours, 1), fmt(c.quality_percentile, 0),
        )  # fmt: skip
    console.print(table)


@app.command("penalize")
def penalize(
    merchant_id: Annotated[str, typer.Argument()],
    violation: Annotated[str, typer.Option(help="A violation the program defines.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the ledger and the audit log).")],
    key: Annotated[str, typer.Option(help="Idempotency key: a re-run adds nothing.")],
    json: Json = False,
) -> None:
    """Add a violation's points to a merchant's penalty ledger; thresholds trigger actions."""
    rt = Runtime.open(get_settings())
    try:
        program = rt.program()
        with transaction(rt.engine) as conn:
            result = service.record_violation(
                conn, program.merchants, merchant_id, violation, reason, idempotency_key=key,
                tz=program.display_timezone, actor=CLI_ACTOR,
            )  # fmt: skip
    except MemberwiseError as exc:
        raise _fail(exc) from exc
    finally:
        rt.close()
    if json:
        console.print_json(result.model_dump_json())
    else:
        actions = ", ".join(a.kind for a in result.actions) or "none"
        console.print(f"{merchant_id}: {result.points} points; actions in force: {actions}")
