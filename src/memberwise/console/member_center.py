"""The member center: server-rendered pages a member opens from the platform's app through a
signed link (:mod:`memberwise.console.member_links`), to embed in a web view or copy.

No script runs on these pages and nothing is loaded from elsewhere; a strict Content Security
Policy says so, with ``frame-ancestors`` from the settings so the platform may embed them.
Every refusal is a page in the member's language with a 4xx status, never a 500: a broken or
expired link is the ordinary case here, not an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException

from memberwise.console import member_center_view as member_view
from memberwise.console import member_links
from memberwise.console.member_i18n import Words, choose_locale
from memberwise.console.member_links import LinkInvalid, SignedLink
from memberwise.kit.db import transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.kit.time import utcnow
from memberwise.ledger.service import MemberUnknown
from memberwise.privacy.schemas import ConsentStatus
from memberwise.recommend.serving import recent_events
from memberwise.runtime import Runtime, get_runtime

ROOT = "/member-center"
HERE = Path(__file__).parent
_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_CSS = (HERE / "static" / "member" / "member.css").read_bytes()

router = APIRouter(prefix=ROOT, include_in_schema=False)
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Text = Annotated[str | None, Query(max_length=200)]


@lru_cache(maxsize=8)
def _secret(configured: str | None, pii_key: bytes) -> bytes:
    return member_links.shared_secret(configured, pii_key)


def link_secret(rt: Runtime) -> bytes:
    """The secret member-center links of this runtime are signed with."""
    configured = rt.settings.member_center_secret
    return _secret(configured.get_secret_value() if configured else None, rt.settings.pii_key_bytes)


def security_headers(rt: Runtime) -> dict[str, str]:
    """No script, nothing from elsewhere, embeddable only where the settings allow."""
    csp = (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        f"base-uri 'none'; frame-ancestors {rt.settings.member_center_frame_ancestors}"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _csrf(secret: bytes, link: SignedLink) -> str:
    """The form token of a link: only a page rendered from that link carries it."""
    return hmac.new(secret, f"csrf\n{link.sig}".encode(), hashlib.sha256).hexdigest()[:32]


def _words(rt: Runtime, lang: str | None) -> Words:
    try:
        program = rt.program()
    except MemberwiseError:  # a program file that no longer loads: the refusal page still shows
        return Words(choose_locale("zh-CN", lang), rt.settings.display_timezone)
    return Words(choose_locale(program.locale, lang), program.display_timezone)


def _page(rt: Runtime, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _env.get_template(f"member/{name}.html").render(root=ROOT, **context)
    return HTMLResponse(html, status_code=status, headers=security_headers(rt))


def _refusal(rt: Runtime, exc: MemberwiseError, lang: str | None) -> HTMLResponse:
    words = _words(rt, lang)
    message = words.label("member_unknown") if isinstance(exc, MemberUnknown) else exc.message
    return _page(
        rt, "error", exc.status_code, t=words, message=message, code=exc.code, query="", program=""
    )


def _link(rt: Runtime, member: str | None, expires: str | None, sig: str | None) -> SignedLink:
    secret = link_secret(rt)
    member_id = member_links.verify(
        secret,
        member,
        expires,
        sig,
        now=utcnow(),
        max_seconds=rt.settings.member_center_max_link_seconds,
    )
    return SignedLink(member_id, int(expires or 0), (sig or "").lower())


def _query(link: SignedLink, words: Words) -> str:
    return urlencode({**link.query(), "lang": words.locale})


@router.get("", response_class=HTMLResponse)
def home(rt: RuntimeDep, member: Text = None, expires: Text = None, sig: Text = None,
         lang: Text = None) -> HTMLResponse:  # fmt: skip
    """The member's tier, benefits, points, coupons and recommendations."""
    try:
        link = _link(rt, member, expires, sig)
        words = _words(rt, lang)
        program = rt.program()
        with transaction(rt.engine) as conn:
            mc = member_view.gather(
                conn, program, recent_events(rt.lake), link.member_id, words=words, now=utcnow()
            )
    except MemberwiseError as exc:
        return _refusal(rt, exc, lang)
    return _page(rt, "home", t=words, mc=mc, page="home", query=_query(link, words),
                 program=program.name, money_kinds=member_view.MONEY_KINDS)  # fmt: skip


@router.get("/privacy", response_class=HTMLResponse)
def privacy(rt: RuntimeDep, member: Text = None, expires: Text = None, sig: Text = None,
            lang: Text = None, saved: Text = None) -> HTMLResponse:  # fmt: skip
    """The member's consents, each with a button to change it."""
    try:
        link = _link(rt, member, expires, sig)
        words = _words(rt, lang)
        program = rt.program()
        with transaction(rt.engine) as conn:
            consents = member_view.consents(conn, program, link.member_id)
    except MemberwiseError as exc:
        return _refusal(rt, exc, lang)
    return _page(
        rt,
        "privacy",
        t=words,
        page="privacy",
        query=_query(link, words),
        program=program.name,
        consents=consents,
        descriptions={k: v.description for k, v in program.privacy.purposes.items()},
        link=link,
        csrf=_csrf(link_secret(rt), link),
        request_id=secrets.token_urlsafe(12),
        saved=bool(saved),
    )


class _FormRefused(MemberwiseError):
    code = "form_invalid"


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) and len(value) <= 200 else None


@router.post("/consents")
async def change_consent(request: Request, rt: RuntimeDep) -> Response:
    """The member allows or withdraws one purpose; then back to the privacy page (303)."""
    lang = None
    try:
        try:
            form = await request.form(max_files=0, max_fields=20)
        except HTTPException as exc:  # not a form (multipart limits, a broken body)
            raise _FormRefused("the form could not be read; reload the page") from exc
        lang = _field(form, "lang")
        link = _link(rt, _field(form, "member"), _field(form, "expires"), _field(form, "sig"))
        csrf = _field(form, "csrf") or ""
        if not hmac.compare_digest(_csrf(link_secret(rt), link), csrf):
            raise LinkInvalid("the form does not belong to this link; reload the page")
        purpose, status = _field(form, "purpose"), _field(form, "status")
        request_id = _field(form, "request_id")
        if not purpose or not request_id or status not in ("granted", "revoked", "denied"):
            raise _FormRefused("the form is incomplete; reload the page")
        program = rt.program()
        with transaction(rt.engine) as conn:
            member_view.change_consent(
                conn, program, link.member_id, purpose, ConsentStatus(status), request_id
            )
    except MemberwiseError as exc:
        return _refusal(rt, exc, lang)
    words = _words(rt, lang)
    target = f"{ROOT}/privacy?{_query(link, words)}&saved=1"
    return RedirectResponse(target, status_code=303, headers=security_headers(rt))


@router.get("/static/member.css")
def stylesheet() -> Response:
    return Response(
        _CSS,
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
