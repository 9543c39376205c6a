"""The ``memberwise`` command: one Typer app with every domain's commands mounted on it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console
from typer import rich_utils as typer_rich_utils
from typer.core import TyperGroup

from memberwise import __version__
from memberwise.campaigns.commands import app as campaigns_app
from memberwise.config import Settings, get_settings
from memberwise.console.commands import app as console_app
from memberwise.console.commands import console_url, demo_admin_link
from memberwise.demo.commands import app as demo_app
from memberwise.events.commands import ingest, lake_app
from memberwise.feedback.commands import app as feedback_app
from memberwise.home import bad_url, not_ready, unreachable
from memberwise.jobs.commands import build, execute_build, print_summary
from memberwise.jobs.privacy_commands import app as privacy_app
from memberwise.kit.db import make_engine, transaction
from memberwise.kit.secrets import write_secret_file
from memberwise.ledger.commands import coupons_app, points_app
from memberwise.ledger.demo_loader import load_demo_command
from memberwise.members.commands import app as members_app
from memberwise.members.commands import import_file
from memberwise.membership.commands import managers_app, subscriptions_app, tiers_app
from memberwise.merchants.commands import app as merchants_app
from memberwise.predict.commands import app as clv_app
from memberwise.privacy import service as privacy
from memberwise.privacy.commands import app as keys_app
from memberwise.privacy.commands import staff_app
from memberwise.privacy.schemas import KeyCreate, Role
from memberwise.program.service import ProgramError, current_program, load_program
from memberwise.recommend.commands import app as recommend_app
from memberwise.recommend.item_commands import app as items_app
from memberwise.recommend.item_commands import import_catalog
from memberwise.runtime import Runtime
from memberwise.service.commands import app as service_app
from memberwise.store import migrate
from memberwise.webhooks.commands import app as webhooks_app


class _Group(TyperGroup):
    """The top-level group; it keeps the command line's words for :func:`_needs_a_home` (click
    hands the group's callback none of them)."""

    def invoke(self, ctx: Any) -> Any:  # a typer Context (typer vendors its own click)
        ctx.meta["memberwise.words"] = [*getattr(ctx, "_protected_args", []), *ctx.args]
        return super().invoke(ctx)


def _unwrapped(paragraphs: list[str], markup_mode: Any = None) -> str:
    """Help paragraphs with the docstrings' source line breaks joined, as click and older Typer
    show them: Typer 0.29 keeps them and then wraps again, so ``run --help`` broke its lines in
    odd places. A line starting with space, ``-`` or ``*`` (a list, an example) keeps its
    break."""
    out = []
    for paragraph in paragraphs:
        lines = paragraph.split("\n")
        joined = lines[0]
        for line in lines[1:]:
            keep = line[:1] in (" ", "-", "*") or paragraph.startswith("\b")
            joined += ("\n" if keep else " ") + line
        out.append(joined)
    return "\n\n".join(out)


if hasattr(typer_rich_utils, "_fix_linebreaks"):  # display only: absent in other Typer versions
    typer_rich_utils._fix_linebreaks = _unwrapped

app = typer.Typer(
    cls=_Group,
    name="memberwise",
    help="Run a personalized membership program: events in, members, tiers, ledgers, "
    "predictions and recommendations out.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(keys_app, name="keys", help="Create, list and revoke API keys.")
app.add_typer(staff_app, name="staff", help="Add and list staff accounts.")
app.add_typer(members_app, name="members", help="Import and inspect members.")
app.add_typer(tiers_app, name="tiers", help="Preview tier changes, grant tiers by hand.")
app.add_typer(managers_app, name="managers", help="Account managers of black-card members.")
app.add_typer(subscriptions_app, name="subscriptions", help="Paid subscriptions.")
app.add_typer(demo_app, name="demo", help="Generate a synthetic platform for demos and benchmarks.")
app.add_typer(lake_app, name="lake", help="Inspect and compact the event lake.")
app.add_typer(clv_app, name="clv", help="Fit and check CLV models on a transaction file.")
app.add_typer(items_app, name="items", help="Load the platform's item catalog.")
app.add_typer(recommend_app, name="recommend", help="Evaluate and export recommendations.")
app.add_typer(points_app, name="points", help="Points: the periodic run, a member's points.")
app.add_typer(coupons_app, name="coupons", help="Coupons: issue to members or a segment.")
app.add_typer(webhooks_app, name="webhooks", help="Webhook endpoints and the sender.")
app.add_typer(campaigns_app, name="campaigns", help="Campaigns: send what is due, read results.")
app.add_typer(privacy_app, name="privacy", help="Members' data rights, erasure and retention.")
app.add_typer(service_app, name="service", help="The service desk: SLA sweep, reports, queue.")
app.add_typer(feedback_app, name="feedback", help="Feedback topics, rising complaints, analysis.")
app.add_typer(merchants_app, name="merchants", help="Merchant scorecards and penalties.")
app.add_typer(console_app, name="console", help="The staff console: passwords, sign-in links.")
app.command("load-demo-ledgers", help="Replay the lake's demo orders through the ledgers.")(
    load_demo_command
)
app.command("ingest", help="Load event files (CSV, JSONL, Parquet, Taobao) into the lake.")(ingest)
app.command("build", help="Build profiles, tags and segments from the lake and publish them.")(
    build
)
#: The program ``make run`` uses when MEMBERWISE_PROGRAM_FILE is not set (from the repository).
DEMO_PROGRAM = Path("programs/demo.yaml")

console = Console()
errors = Console(stderr=True)

#: Commands that work without a set-up home (they set it up, or read only files and the lake).
NO_STORE = frozenset({"init", "run", "version", "migrate", "demo", "clv", "lake"})
#: Those of them that never open the store (a wrong MEMBERWISE_DATABASE_URL does not stop them).
FILES_ONLY = frozenset({"version", "demo", "clv", "lake"})


@app.callback()
def _needs_a_home(ctx: typer.Context) -> None:
    """Refuse a command that needs the operational store on a home never set up, with one
    sentence and exit code 2 (instead of an SQL error from its first query)."""
    command = ctx.invoked_subcommand
    rest: list[str] = ctx.meta.get("memberwise.words", [])[1:]
    if command is None or command == "version" or "--help" in rest:
        return
    url = get_settings().db_url
    # The store commands' own check (not_ready, below) also says when the store does not answer.
    check = NO_STORE - FILES_ONLY
    wrong = (
        None
        if command in FILES_ONLY
        else bad_url(url) or (unreachable(url) if command in check else None)
    )
    if wrong is not None:
        errors.print(wrong, soft_wrap=True, highlight=False)
        raise typer.Exit(2)
    if command in NO_STORE:
        return
    if command == "recommend" and rest[:1] == ["evaluate"]:  # a file-based evaluation
        return
    problem = not_ready(get_settings())
    if problem is not None:
        errors.print(problem, soft_wrap=True, highlight=False)
        raise typer.Exit(2)


def _admin_key_file(settings: Settings) -> Path:
    return settings.home / "secrets" / "admin.key"


def bootstrap(settings: Settings) -> str | None:
    """Prepare the home directory, PII key and schema; create a first admin key if none exists.

    Returns the bootstrap admin key when one is kept in the home's secrets (the embedded demo
    keeps it there so a second ``make run`` can print it again; production creates keys with
    ``memberwise keys create`` and stores them in its own secret manager).
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.lake_root.mkdir(parents=True, exist_ok=True)
    settings.ensure_pii_key()
    engine = make_engine(settings.db_url)
    try:
        migrate(engine)
        key_file = _admin_key_file(settings)
        with transaction(engine) as conn:
            if privacy.has_active_key(conn, Role.admin):
                return key_file.read_text().strip() if key_file.exists() else None
            created = privacy.create_key(conn, KeyCreate(role=Role.admin, name="bootstrap admin"))
            write_secret_file(key_file, created.key + "\n")
            return created.key
    finally:
        engine.dispose()


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def use_program(settings: Settings, path: Path) -> None:
    """Check the program in ``path`` and keep it as the home's program (``HOME/settings.json``):
    every later command and the server opened on this home use it. Raises typer.Exit(2) with
    the program's problems when it does not load."""
    try:
        load_program(path)
    except ProgramError as exc:
        errors.print(f"{exc.code}: {exc.message}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    settings.remember(program_file=path)


@app.command()
def init(
    program: Annotated[
        Path | None,
        typer.Option(
            "--program",
            dir_okay=False,
            help="The program file this home runs (kept in HOME/settings.json; default: the "
            "one it was set up with, else the built-in empty program).",
        ),
    ] = None,
) -> None:
    """Create the home directory, the PII key, the schema and a first admin key."""
    settings = get_settings()
    if program is not None:
        use_program(settings, program)
    key = bootstrap(settings)
    console.print(f"home       {settings.home}")
    console.print(f"store      {settings.db_url}")
    console.print(f"lake       {settings.lake_root}")
    console.print(f"program    {settings.program_file or '(built-in default)'}")
    if key:
        console.print(f"admin key  [bold]{key}[/bold]  (kept in {_admin_key_file(settings)})")


@app.command("migrate")
def migrate_command() -> None:
    """Apply the operational store's migrations (idempotent)."""
    settings = get_settings()
    engine = make_engine(settings.db_url)
    migrate(engine)
    engine.dispose()
    console.print(f"schema up to date on {engine.url.render_as_string(hide_password=True)}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default MEMBERWISE_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Default MEMBERWISE_PORT.")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    access_log: Annotated[
        bool,
        typer.Option(help="Log every request (off behind a proxy that logs them: it costs CPU)."),
    ] = True,
    webhooks: Annotated[
        bool,
        typer.Option(help="Deliver webhooks from the server (off: run `webhooks send` apart)."),
    ] = True,
) -> None:
    """Serve the HTTP API (and its docs at /docs)."""
    # The workers build their settings from the environment: say it there.
    os.environ["MEMBERWISE_WEBHOOKS_SENDER"] = "true" if webhooks else "false"
    settings = get_settings()
    _refuse_a_taken_port(host or settings.host, port or settings.port)
    uvicorn.run(
        "memberwise.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level="info",
        access_log=access_log,
    )


def _refuse_a_taken_port(host: str, port: int) -> None:
    """Exit 2 with one sentence when ``host:port`` cannot be listened on (another server holds
    it), instead of uvicorn's log line after the app has started."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            errors.print(
                f"cannot listen on {host}:{port} ({exc.strerror}): another server holds the "
                "port; stop it, or choose another one with MEMBERWISE_PORT (or --port for "
                "`memberwise serve`)",
                soft_wrap=True,
                highlight=False,
            )
            raise typer.Exit(2) from None


def _ensure_demo(settings: Settings, *, members: int, days: int, seed: int) -> Path:
    """The demo platform in HOME/demo, generated once (a half-written one is made again)."""
    from memberwise.demo.generator import generate_platform

    demo_dir = settings.home / "demo"
    marker = demo_dir / ".complete"
    if marker.exists():
        console.print(f"demo platform: reusing {demo_dir}")
        return demo_dir
    shutil.rmtree(demo_dir, ignore_errors=True)
    console.print(f"demo platform: generating {members:,} members over {days} days ...")
    end = datetime.now(UTC).date()
    summary = generate_platform(
        demo_dir, members=members, days=days, seed=seed, end=end, events_per_member=100.0
    )
    marker.write_text(f"{summary.events}\n")
    console.print(f"demo platform: {summary.events:,} events in {summary.seconds:.1f} s")
    return demo_dir


def _run_stamp(settings: Settings) -> Path:
    return settings.home / "warehouse" / "run.json"


def _inputs_fingerprint(settings: Settings, rt: Runtime) -> str:
    """A digest of what a build reads that ``memberwise run`` may change: the lake's files
    (path, size, modification time), the program as loaded (an edit of its comments or layout
    changes nothing), the engine and the version."""
    digest = hashlib.sha256(f"{__version__}|{settings.engine}\n".encode())
    digest.update(current_program(settings.program_file).model_dump_json().encode())
    for line in rt.lake.signatures():  # (local files, or the object store's committed ones)
        digest.update(f"{line}\n".encode())
    return digest.hexdigest()


def _reusable_build(settings: Settings, rt: Runtime) -> str | None:
    """The id of the build the last ``memberwise run`` made, when its inputs are unchanged and
    it is still on disk (None: build again)."""
    try:
        stamp = json.loads(_run_stamp(settings).read_text())
    except (OSError, ValueError):
        return None
    build_id = stamp.get("build_id") if isinstance(stamp, dict) else None
    if not isinstance(build_id, str) or stamp.get("inputs") != _inputs_fingerprint(settings, rt):
        return None
    from memberwise.builds import BuildStore  # (wherever builds live: disk or object store)

    return build_id if BuildStore.of(rt).is_committed(build_id) else None


def _remember_build(settings: Settings, rt: Runtime, build_id: str) -> None:
    path = _run_stamp(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = {"build_id": build_id, "inputs": _inputs_fingerprint(settings, rt)}
    path.write_text(json.dumps(stamp) + "\n")


@app.command()
def run(
    members: Annotated[int, typer.Option(help="Demo platform size (members).")] = 20_000,
    days: Annotated[
        int,
        typer.Option(help="Days of demo behaviour (90 or more: the churn model's horizon)."),
    ] = 120,
    seed: Annotated[int, typer.Option(help="Demo generator seed.")] = 7,
    serve_api: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the API.")] = True,
) -> None:
    """Set everything up on the embedded default and serve the API (what `make run` does).

    Creates the home, key and schema, generates the demo platform once, ingests it (a no-op
    when already ingested), registers its members, builds profiles, tags and segments with
    the demo program (kept as the home's program; the last build is reused when nothing it
    reads changed), loads the demo's orders and coupons into the ledgers, then serves
    http://HOST:PORT (MEMBERWISE_HOST and MEMBERWISE_PORT, 127.0.0.1:8000 by default).
    """
    from memberwise.events.bulk import ingest_paths
    from memberwise.events.bulk_hooks import member_registrar

    settings = get_settings()
    if serve_api:  # said now, not after the minutes of setting up
        _refuse_a_taken_port(settings.host, settings.port)
    if settings.program_file is None and DEMO_PROGRAM.exists():
        settings.program_file = DEMO_PROGRAM.absolute()
    if settings.program_file is not None:
        # Kept in the home, so `memberwise serve` and every later command run the same program
        # without MEMBERWISE_PROGRAM_FILE exported (the server reads its settings afresh).
        use_program(settings, settings.program_file)
    key = bootstrap(settings)
    demo_dir = _ensure_demo(settings, members=members, days=days, seed=seed)
    rt = Runtime.open(settings)
    result = ingest_paths(
        [demo_dir / "events"],
        rt.lake,
        deadletter_dir=settings.home / "deadletter",
        on_members=member_registrar(settings),
    )
    console.print(
        f"ingest: {result.accepted:,} events accepted, {result.rejected:,} rejected, "
        f"{len(result.skipped_files)} file(s) already ingested"
    )
    created, registered, unchanged = import_file(rt, demo_dir / "members.parquet")
    console.print(
        f"members: {created:,} created, {registered:,} registered, {unchanged:,} unchanged"
    )
    catalog = import_catalog(
        settings.db_url, demo_dir / "items.parquet", demo_dir / "categories.parquet"
    )
    console.print(
        f"items: {catalog.created:,} created, {catalog.updated:,} updated, "
        f"{catalog.unchanged:,} unchanged"
    )
    # What operators run daily (see docs/operations.md): one file per day, so the build's
    # read needs no deduplication.
    compacted = rt.lake.compact()
    console.print(f"lake: {compacted.files_before:,} files compacted to {compacted.files_after:,}")
    changed = result.accepted + created + registered + catalog.created + catalog.updated > 0
    reused = None if changed else _reusable_build(settings, rt)
    if reused is not None:
        console.print(
            f"build: reusing build {reused} (the lake, the members and the program have not "
            "changed since; `memberwise build` makes a new one)",
            soft_wrap=True,
        )
    else:
        console.print(f"build: program {settings.program_file or '(built-in default)'}")
        done = execute_build(rt)
        print_summary(done)
        _remember_build(settings, rt, done.build_id)
    from memberwise.membership.demo import seed as seed_memberships

    made = seed_memberships(rt, current_program(settings.program_file))
    console.print(
        f"memberships: {made['subscriptions']:,} paid subscriptions, {made['managers']} account "
        f"managers, {made['accepted']} black-card invitations accepted"
    )
    # The demo's purchases and refunds through the ledgers (after the build and the
    # memberships: tiers, plans and their benefits are known).
    from memberwise.ledger.demo_loader import (
        DEMO_COUPON_MEMBERS,
        describe,
        issue_demo_coupons,
        load_demo,
    )

    program = current_program(settings.program_file)
    console.print(describe(load_demo(rt.engine, program, rt.lake)))
    held = issue_demo_coupons(rt.engine, program)
    if held:
        console.print(
            f"coupons: the first {DEMO_COUPON_MEMBERS} members hold "
            + ", ".join(f"{n:,} {name}" for name, n in held.items()),
            soft_wrap=True,
        )
    # Service traffic from the demo's complaints, routed to agents and the demo's managers.
    from memberwise.service.demo import seed as seed_service

    desk = seed_service(rt, program)
    console.print(
        f"service desk: {desk['tickets']:,} tickets, {desk['queued']} queued, "
        f"{desk['breached']} breached and escalated, {desk['approvals']} awaiting approval"
    )
    from memberwise.campaigns.demo import seed as seed_campaigns

    console.print(f"campaigns: {seed_campaigns(rt, program)}", soft_wrap=True)
    rt.close()
    base = f"http://{settings.host}:{settings.port}"
    key_line = key or "(not kept here; make one: memberwise keys create --role admin)"
    lines = [
        f"API        {base}   (docs {base}/docs)",
        f"admin key  {key_line}",
        f"console    {console_url(settings)}",
        f"sign in    {demo_admin_link(settings)}   (staff 'admin', works once)",
        f"data       {settings.home}",
        "",
        "try        export KEY=$(cat " + str(_admin_key_file(settings)) + ")",
        f'           curl -H "Authorization: Bearer $KEY" "{base}/v1/members?limit=5"',
        f'           curl -H "Authorization: Bearer $KEY" "{base}/v1/members/m00000001/profile"',
        f'           curl -H "Authorization: Bearer $KEY" "{base}/v1/segments"',
        f'           curl -H "Authorization: Bearer $KEY" "{base}/v1/tags"',
        f'           curl -H "Authorization: Bearer $KEY" "{base}/v1/members/m00000001/membership"',
        f'           curl -H "Authorization: Bearer $KEY" "{base}/v1/invitations"',
        f'           curl -H "Authorization: Bearer $KEY" "{base}/v1/service/queue"',
        f'           curl -H "Authorization: Bearer $KEY" "{base}/v1/service/reports?by=agent"',
        f'           curl -H "Authorization: Bearer $KEY" "{base}/v1/campaigns"',
    ]
    console.rule("memberwise is ready")
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)
    console.rule()
    if serve_api:
        serve(host=None, port=None, workers=1)


if __name__ == "__main__":  # pragma: no cover
    app()
