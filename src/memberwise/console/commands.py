"""CLI of the console: set a staff member's password, print a one-time sign-in link."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from memberwise.config import Settings, get_settings
from memberwise.console import service
from memberwise.kit.db import make_engine, transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import Role, StaffCreate

app = typer.Typer(help="The staff console at /console: passwords and sign-in links.")
console = Console()
errors = Console(stderr=True)

#: The demo's admin staff account, made by `memberwise run` so the console can be opened.
DEMO_ADMIN = "admin"


def console_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.port}/console"


def link_url(settings: Settings, token: str) -> str:
    return f"{console_url(settings)}/link?token={token}"


@app.command("passwd")
def passwd(
    staff: Annotated[str, typer.Option(help="The staff id (see `memberwise staff list`).")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            help="The new password (prompted, hidden, when not given).",
        ),
    ],
) -> None:
    """Set a staff member's console password (argon2id; at least 12 characters)."""
    engine = make_engine(get_settings().db_url)
    try:
        with transaction(engine) as conn:
            service.set_password(conn, staff, password)
    except MemberwiseError as exc:
        errors.print(f"{exc.code}: {exc.message}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    console.print(f"console password set for {staff}")


@app.command("link")
def link(
    staff: Annotated[str, typer.Option(help="The staff id (see `memberwise staff list`).")],
) -> None:
    """Print a one-time sign-in link for a staff member (works once, expires soon)."""
    settings = get_settings()
    engine = make_engine(settings.db_url)
    try:
        with transaction(engine) as conn:
            token = service.create_link(conn, staff, minutes=settings.console_link_minutes)
    except MemberwiseError as exc:
        errors.print(f"{exc.code}: {exc.message}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    typer.echo(link_url(settings, token))


def demo_admin_link(settings: Settings) -> str:
    """A fresh sign-in link for the demo's admin staff account (made when missing)."""
    engine = make_engine(settings.db_url)
    with transaction(engine) as conn:
        if privacy.get_staff(conn, DEMO_ADMIN) is None:
            privacy.create_staff(
                conn, StaffCreate(staff_id=DEMO_ADMIN, name="Demo admin", role=Role.admin)
            )
        token = service.create_link(conn, DEMO_ADMIN, minutes=settings.console_link_minutes)
    engine.dispose()
    return link_url(settings, token)
