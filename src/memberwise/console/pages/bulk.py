"""Bulk actions operators need: issue a coupon to a selection (listed member ids or a segment or
persona of the published build), and export a segment's members as CSV.

Roles as in the API: issuing coupons is for operators (``POST /v1/coupons/issuances``); reading
and exporting segments for operators and analysts (``GET /v1/segments/...``). An issuance form
carries a key made when the page was rendered, so a double submit issues once. An export is
audited (who took which list out).
"""

from __future__ import annotations

import csv
import io
import re
import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import ValidationError

from memberwise.console import i18n
from memberwise.console.nav import NavEntry, may
from memberwise.console.schemas import ConsoleUser
from memberwise.console.web import Posted, Require, render, runtime_of
from memberwise.kit.db import transaction
from memberwise.kit.errors import InvalidRequest
from memberwise.ledger import coupons
from memberwise.ledger.schemas import IssueIn, IssueOut
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import Role
from memberwise.privacy.service import authorize
from memberwise.profiles import service as profiles
from memberwise.runtime import Runtime

router = APIRouter(prefix="/bulk")
READ_ROLES = frozenset({Role.operator, Role.analyst})
NAV = NavEntry("/bulk", "nav.bulk", READ_ROLES, order=90)
ISSUE_ROLES = frozenset({Role.operator})
Reader = Annotated[ConsoleUser, Depends(Require(*READ_ROLES))]
#: Members read per page while a CSV is written (the API's largest page).
CHUNK = 1000

i18n.add(
    {
        "nav.bulk": ("批量操作", "Bulk actions"),
        "bulk.title": ("批量操作", "Bulk actions"),
        "bulk.issue": ("向选定会员发券", "Issue a coupon to a selection"),
        "bulk.template": ("券模板", "Coupon template"),
        "bulk.members": ("会员 ID（每行一个）", "Member ids (one a line)"),
        "bulk.or_segment": ("或选择分群", "or a segment"),
        "bulk.none": ("（不选）", "(none)"),
        "bulk.issued": ("已发放", "Issued"),
        "bulk.refused": ("未发放", "Not issued"),
        "bulk.export": ("导出分群", "Export a segment"),
        "bulk.download": ("下载 CSV", "Download CSV"),
        "bulk.segment": ("分群", "Segment"),
        "bulk.no_build": ("还没有发布的构建。", "No build is published yet."),
    }
)


class SelectionInvalid(InvalidRequest):
    code = "selection_invalid"


def _groups(rt: Runtime) -> list[tuple[str, str, int]]:
    """(name, label, members) of every segment and persona of the published build."""
    with transaction(rt.engine) as conn:
        found = profiles.list_segments(conn)
    return [(s.name, s.name, s.members) for s in found.segments] + [
        (p.name, p.label, p.members) for p in found.personas
    ]


def _page(request: Request, user: ConsoleUser, result: IssueOut | None = None) -> HTMLResponse:
    rt = runtime_of(request)
    refused: dict[str, int] = {}
    for code in result.refused.values() if result else []:
        refused[code] = refused.get(code, 0) + 1
    return render(
        request, "bulk.html", user, groups=_groups(rt), templates=sorted(rt.program().coupons),
        may_issue=may(user.role, ISSUE_ROLES),
        key=secrets.token_urlsafe(12), result=result, refused=sorted(refused.items()),
    )  # fmt: skip


@router.get("", include_in_schema=False)
def bulk(request: Request, user: Reader) -> HTMLResponse:
    return _page(request, user)


@router.post("/coupons", include_in_schema=False)
def issue(
    request: Request,
    user: Posted,
    template: Annotated[str, Form(min_length=1, max_length=64)],
    key: Annotated[str, Form(min_length=1, max_length=200)],
    member_ids: Annotated[str, Form(max_length=400_000)] = "",
    segment: Annotated[str, Form(max_length=128)] = "",
) -> HTMLResponse:
    """Issue one coupon of ``template`` to each listed member or to a segment, once per form.
    Raises SelectionInvalid (neither or both), the ledger's refusals (4xx pages)."""
    authorize(user.principal, ISSUE_ROLES)
    ids = [m for m in re.split(r"[\s,;]+", member_ids) if m]
    try:
        data = IssueIn(template=template, member_ids=ids, segment=segment or None)
    except ValidationError as exc:
        raise SelectionInvalid(
            "list member ids or choose a segment (one of them): "
            + "; ".join(str(e["msg"]) for e in exc.errors())
        ) from None
    rt = runtime_of(request)
    program = rt.program()
    with transaction(rt.engine) as conn:
        result = coupons.issue_once(conn, program, data, key, actor=user.principal)
    return _page(request, user, result)


def _csv_rows(rt: Runtime, name: str, user: ConsoleUser) -> Iterator[str]:
    """The CSV, a page of members at a time (a large segment is never held in memory)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["member_id", "segment", "persona", "tags"])
    cursor: str | None = None
    total = 0
    while True:
        with transaction(rt.engine) as conn:
            page = profiles.segment_members(conn, name, cursor, CHUNK)
        for m in page.items:
            writer.writerow([m.member_id, m.segment, "" if m.persona is None else m.persona,
                             " ".join(m.tags)])  # fmt: skip
        total += len(page.items)
        yield out.getvalue()
        out.seek(0)
        out.truncate()
        cursor = page.next_cursor
        if cursor is None:
            break
    with transaction(rt.engine) as conn:
        privacy.audit(
            conn, user.principal, "segment.export", "segment", name, details={"members": total}
        )


@router.get("/segments/{name}.csv", include_in_schema=False)
def export(request: Request, name: str, user: Reader) -> StreamingResponse:
    """The segment's (or persona's) members as CSV. Raises SegmentNotFound (a 404 page)."""
    rt = runtime_of(request)
    with transaction(rt.engine) as conn:
        profiles.segment_members(conn, name, None, 1)  # refuse an unknown name before streaming
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return StreamingResponse(
        _csv_rows(rt, name, user),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="segment-{safe}.csv"'},
    )
