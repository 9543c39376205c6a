"""The console sub-app: templates, static files, sessions, CSRF, role checks and error pages.

``create_console(runtime)`` builds a FastAPI app that :func:`memberwise.app.create_app` mounts at
``/console``. Pages are routers in :mod:`memberwise.console.pages`; each route takes the signed-in
user from :data:`Staff` (or a role-checked ``Depends(Require(...))``), reads through the domains'
services and renders a template with :func:`render`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from memberwise.console import service
from memberwise.console.engine_words import coder
from memberwise.console.i18n import translator, yuan
from memberwise.console.nav import page_modules, visible
from memberwise.console.schemas import ConsoleUser
from memberwise.kit.db import transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.privacy.schemas import Role
from memberwise.privacy.service import authorize
from memberwise.runtime import Runtime

HERE = Path(__file__).parent
PREFIX = "/console"
COOKIE = "mw_console"
#: Pre-session CSRF cookie of the sign-in forms (double submit: cookie == form field).
PRE_COOKIE = "mw_console_pre"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["yuan"] = yuan


def _plotly_js() -> Path:
    """plotly.min.js from the installed ``plotly`` package (MIT), served as is: no CDN."""
    spec = importlib.util.find_spec("plotly")  # located, not imported: no server start cost
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is not installed (pip install plotly)")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


class NeedSignIn(Exception):
    """Raised by :func:`current_user` when the request carries no live session."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def runtime_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def locale_of(rt: Runtime) -> str:
    try:
        return rt.program().locale
    except MemberwiseError:  # a program file that no longer loads: the console still opens
        return "zh-CN"


def current_user(request: Request) -> ConsoleUser:
    """The signed-in staff member. Raises NeedSignIn (-> the sign-in page)."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise NeedSignIn("please sign in")
    rt = runtime_of(request)
    try:
        with transaction(rt.engine) as conn:
            user = service.session_user(conn, token, idle_minutes=rt.settings.console_idle_minutes)
    except service.SessionEnded as exc:
        raise NeedSignIn(exc.message) from None
    request.state.user = user  # error pages still show the nav and the sign-out form
    return user


Staff = Annotated[ConsoleUser, Depends(current_user)]


class Require:
    """``Depends(Require(Role.operator))``: the signed-in user, if their role may (admin may)."""

    def __init__(self, *roles: Role) -> None:
        self.roles: frozenset[Role] = frozenset(roles)

    def __call__(self, user: Staff) -> ConsoleUser:
        authorize(user.principal, self.roles)
        return user


async def check_csrf(request: Request, user: Staff) -> ConsoleUser:
    """For every POST: the form's ``csrf_token`` (or htmx's ``X-CSRF-Token`` header) must be
    the session's. Raises CsrfFailed."""
    presented = request.headers.get(CSRF_HEADER)
    if presented is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    service.check_csrf(user.csrf_token, presented)
    return user


Posted = Annotated[ConsoleUser, Depends(check_csrf)]


def render(
    request: Request,
    template: str,
    user: ConsoleUser | None = None,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page (or an htmx fragment) with the shared context: labels, nav, user, CSRF token."""
    rt = runtime_of(request)
    locale = locale_of(rt)
    base = {
        "request": request,
        "user": user,
        "t": translator(locale),
        "code": coder(locale),
        "lang": "zh-CN" if locale.lower().startswith("zh") else "en",
        "nav": visible(user.role) if user is not None else [],
        "prefix": PREFIX,
        "csrf": user.csrf_token if user is not None else "",
        "path": request.url.path.removeprefix(PREFIX) or "/",
    }
    return templates.TemplateResponse(
        request, template, {**base, **context}, status_code=status_code
    )


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _install_error_pages(app: FastAPI) -> None:
    @app.exception_handler(NeedSignIn)
    async def _sign_in(request: Request, exc: NeedSignIn) -> Response:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target = f"{PREFIX}/sign-in?next={quote(back)}&why={quote(exc.message)}"
        if _is_htmx(request):
            return Response(status_code=200, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    def _page(request: Request, status: int, code: str, message: str) -> HTMLResponse:
        name = "_error_fragment.html" if _is_htmx(request) else "error.html"
        user = getattr(request.state, "user", None)
        return render(request, name, user, status_code=status, code=code, message=message)

    @app.exception_handler(MemberwiseError)
    async def _domain(request: Request, exc: MemberwiseError) -> HTMLResponse:
        return _page(request, exc.status_code, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> HTMLResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
        return _page(request, 422, "invalid_request", f"{where}: {first.get('msg')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        code = "not_found" if exc.status_code == 404 else "http_error"
        return _page(request, exc.status_code, code, str(exc.detail))


_HEADERS = {
    # Nothing but this origin: no CDN, no font, no beacon (the tests check it too).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # A sign-in link's token must not leak through the Referer of the next request.
    "Referrer-Policy": "no-referrer",
}


def create_console(rt: Runtime) -> FastAPI:
    """The console app over ``rt`` (mounted by ``create_app`` at ``/console``)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, title="memberwise console")
    app.state.runtime = rt
    app.state.limiter = service.FailureLimiter()
    _install_error_pages(app)

    @app.middleware("http")
    async def _headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.url.path.startswith((f"{PREFIX}/static", "/static")):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(
            _plotly_js(),
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    # Every module of console/pages with a ``router`` is a page (see docs/console.md).
    for module in page_modules():
        router = getattr(module, "router", None)
        if isinstance(router, APIRouter):
            app.include_router(router)
    return app
