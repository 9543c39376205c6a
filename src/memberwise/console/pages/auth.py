"""Sign-in (password or one-time link) and sign-out.

The sign-in forms have no session yet, so their CSRF check is a double-submit cookie: a random
value in a SameSite=Strict cookie that the form must repeat.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from memberwise.console import service
from memberwise.console.web import (
    COOKIE,
    PRE_COOKIE,
    PREFIX,
    Posted,
    render,
    runtime_of,
)
from memberwise.kit.db import transaction
from memberwise.privacy.schemas import StaffOut

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only a path of the console itself (no open redirect)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//"):
        return target
    return PREFIX + "/"


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _form_page(
    request: Request, template: str, *, status_code: int = 200, **context: object
) -> HTMLResponse:
    """A sign-in form with a fresh pre-session CSRF value in cookie and field."""
    pre = secrets.token_urlsafe(24)
    response = render(request, template, None, status_code=status_code, pre=pre, **context)
    response.set_cookie(
        PRE_COOKIE,
        pre,
        httponly=True,
        samesite="strict",
        secure=runtime_of(request).settings.console_secure_cookie,
        path=PREFIX,
        max_age=3600,
    )
    return response


def _signed_in(request: Request, staff: StaffOut, *, method: str, target: str) -> Response:
    rt = runtime_of(request)
    with transaction(rt.engine) as conn:
        token = service.open_session(conn, staff, method=method)
    response = RedirectResponse(_safe_next(target), status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=rt.settings.console_secure_cookie,
        path=PREFIX,
    )
    response.delete_cookie(PRE_COOKIE, path=PREFIX)
    return response


def _check_pre(request: Request, presented: str) -> None:
    expected = request.cookies.get(PRE_COOKIE) or ""
    if not expected:
        raise service.CsrfFailed("the sign-in form expired; reload the page and try again")
    service.check_csrf(expected, presented)


@router.get("/sign-in", include_in_schema=False)
def sign_in_page(request: Request, next: str = "", why: str = "") -> HTMLResponse:
    return _form_page(request, "sign_in.html", next=_safe_next(next), why=why[:200])


@router.post("/sign-in", include_in_schema=False)
def sign_in(
    request: Request,
    staff_id: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    rt = runtime_of(request)
    limiter: service.FailureLimiter = request.app.state.limiter
    keys = (f"staff:{staff_id}", f"ip:{_client(request)}")
    try:
        _check_pre(request, csrf_token)
        limiter.check(*keys)
        with transaction(rt.engine) as conn:
            staff = service.check_password(conn, staff_id, password)
    except service.SignInFailed as exc:
        limiter.failed(*keys)
        return _form_page(
            request, "sign_in.html", status_code=401, next=_safe_next(next), error=exc.message
        )
    except (service.TooManyAttempts, service.CsrfFailed) as exc:
        return _form_page(
            request,
            "sign_in.html",
            status_code=exc.status_code,
            next=_safe_next(next),
            error=exc.message,
        )
    return _signed_in(request, staff, method="password", target=next)


@router.get("/link", include_in_schema=False)
def link_page(request: Request, token: str = "") -> HTMLResponse:
    # A GET never uses the link (mail scanners and previews open links): the page asks for a
    # click, and the POST that click sends signs in.
    return _form_page(request, "link.html", token=token[:200])


@router.post("/link", include_in_schema=False)
def use_link(
    request: Request,
    token: Annotated[str, Form(max_length=200)],
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    rt = runtime_of(request)
    limiter: service.FailureLimiter = request.app.state.limiter
    keys = (f"ip:{_client(request)}",)
    try:
        _check_pre(request, csrf_token)
        limiter.check(*keys)
        with transaction(rt.engine) as conn:
            staff = service.use_link(conn, token)
    except service.SignInFailed as exc:
        limiter.failed(*keys)
        return _form_page(request, "link.html", status_code=401, token="", error=exc.message)
    except (service.TooManyAttempts, service.CsrfFailed) as exc:
        return _form_page(
            request, "link.html", status_code=exc.status_code, token=token, error=exc.message
        )
    return _signed_in(request, staff, method="link", target=PREFIX + "/")


@router.post("/sign-out", include_in_schema=False)
def sign_out(request: Request, user: Posted) -> Response:
    rt = runtime_of(request)
    token = request.cookies.get(COOKIE, "")
    with transaction(rt.engine) as conn:
        service.end_session(conn, token)
    response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response
