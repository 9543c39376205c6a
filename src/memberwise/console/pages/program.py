"""Program: the active program file, a tier preview of an edited file (the transition matrix as a
heat map; nothing is applied), and the black-card ranking with each invitation's explanation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from memberwise.builds import latest_build
from memberwise.console import charts, engine_words, i18n, service
from memberwise.console.nav import ANALYSTS, NavEntry, may
from memberwise.console.schemas import ConsoleUser
from memberwise.console.web import Posted, Require, render, runtime_of
from memberwise.kit.db import transaction
from memberwise.kit.errors import NotFound
from memberwise.membership import grants as membership_grants
from memberwise.membership import stage
from memberwise.privacy.schemas import Role
from memberwise.privacy.service import authorize
from memberwise.program.schemas import Program
from memberwise.program.service import parse_program
from memberwise.runtime import Runtime

router = APIRouter()
NAV = NavEntry("/program", "nav.program", ANALYSTS, order=30)
Analyst = Annotated[ConsoleUser, Depends(Require(*ANALYSTS))]
#: Who may make an edited program the running one (it changes every member's rules).
APPLIERS = frozenset({Role.operator})
#: Who may read the black-card invitations (GET /v1/invitations).
INVITATION_READERS = frozenset({Role.operator, Role.service})
MAX_PROGRAM_BYTES = 1_000_000

i18n.add(
    {
        "program.title": ("会员方案", "Program"),
        "program.file": ("当前方案文件", "Active program file"),
        "program.builtin": ("内置默认方案（未配置文件）", "The built-in default (no file set)"),
        "program.preview": ("等级预演", "Tier preview"),
        "program.preview_help": (
            "修改下面的方案并预演：按最近一次构建计算等级变化，不会写入任何数据。",
            "Edit the program below and preview it: tier moves on the latest build; "
            "nothing is written.",
        ),
        "program.edit": ("方案 YAML", "Program YAML"),
        "program.run_preview": ("预演", "Preview"),
        "program.apply": ("应用此方案", "Apply this program"),
        "program.applied": ("已应用，下一次构建按新方案计算", "Applied; the next build uses it"),
        "program.matrix": ("等级迁移矩阵（从 → 到）", "Tier transitions (from → to)"),
        "program.changes": ("变化", "Changes"),
        "program.notices": ("降级提醒", "Downgrade notices"),
        "program.ranking": ("黑卡邀请排名", "Black-card ranking"),
        "program.no_build": (
            "还没有构建：先运行 memberwise build",
            "No build yet: run memberwise build",
        ),
        "col.rank": ("名次", "Rank"),
        "col.member": ("会员", "Member"),
        "col.from": ("从", "From"),
        "col.to": ("到", "To"),
    }
)


class NoBuild(NotFound):
    code = "no_build"


def _program_text(program_file: Path | None) -> str:
    if program_file is None or not program_file.exists():
        return ""
    return program_file.read_text(encoding="utf-8")


def _invitation_rows(rt: Runtime, program: Program) -> list[tuple[str, ...]]:
    """The black-card ranking, each invitation's status and explanation in the page's words."""
    with transaction(rt.engine) as conn:
        page = membership_grants.list_invitations(conn, status=None, after=None, limit=100)
    locale = program.locale
    code = engine_words.coder(locale)
    criteria = {c.field: c for c in program.black_card.ranking} if program.black_card else {}
    return [
        (
            str(inv.rank),
            inv.member_id,
            code("invitation", inv.status),
            f"{inv.score:.3f}",
            engine_words.invitation_reason(inv.explanation, criteria, locale),
        )
        for inv in sorted(page.items, key=lambda i: i.rank)
    ]


@router.get("/program", include_in_schema=False)
def program_page(request: Request, user: Analyst) -> HTMLResponse:
    rt = runtime_of(request)
    program = rt.program()
    may_rank = may(user.role, INVITATION_READERS)
    return render(
        request,
        "program.html",
        user,
        program=program,
        program_file=rt.settings.program_file,
        text=_program_text(rt.settings.program_file),
        ranking=_invitation_rows(rt, program) if may_rank else None,
        can_apply=may(user.role, APPLIERS),
    )


def preview_context(rt: Runtime, program: Program) -> dict[str, Any]:
    """The preview of ``program`` on the latest build: matrix figure, its table, changes."""
    latest = latest_build(rt, ("profiles.parquet",))
    if latest is None:
        raise NoBuild("no build yet: run `memberwise build` first")
    out = stage.preview(rt, program, latest)
    moves: dict[str, dict[str, int]] = out["transitions"]
    names = [t.name for t in program.tiers]
    sources = [n for n in [*names, "(none)"] if n in moves]
    z = [[moves[s].get(n, 0) for n in names] for s in sources]
    return {
        "build_id": out["build_id"],
        "members": out["members"],
        "figure": charts.heatmap(sources, names, z),
        "rows": [(s, n, f"{moves[s][n]:,}") for s in sources for n in names if moves[s].get(n)],
        "changes": [(k, f"{v:,}") for k, v in out["changes"].items()],
        "notices": out["notices"],
        "invitations": out.get("invitations"),
    }


@router.post("/program/preview", include_in_schema=False)
async def preview(
    request: Request,
    user: Posted,
    program_text: Annotated[str, Form(max_length=MAX_PROGRAM_BYTES)],
) -> HTMLResponse:
    authorize(user.principal, ANALYSTS)
    rt = runtime_of(request)
    program = parse_program(program_text, source="the edited program")
    # The preview reads the build's profiles with DuckDB: seconds of work, off the loop.
    ctx = await run_in_threadpool(preview_context, rt, program)
    return render(request, "_program_preview.html", user, p=ctx)


@router.post("/program/apply", include_in_schema=False)
def apply(
    request: Request,
    user: Posted,
    program_text: Annotated[str, Form(max_length=MAX_PROGRAM_BYTES)],
) -> HTMLResponse:
    """Make the edited program the home's (checked first; a refusal changes nothing)."""
    authorize(user.principal, APPLIERS)
    rt = runtime_of(request)
    with transaction(rt.engine) as conn:
        path, name = service.apply_program(conn, rt.settings, program_text, actor=user.principal)
    t = i18n.translator(rt.program().locale)
    return render(
        request, "_action_done.html", user, message=f"{t('program.applied')}: {name} ({path})"
    )
