"""``create_app(settings)``: the FastAPI application with every domain's router mounted.

OpenAPI docs are served from bundled assets (``fastapi-offline``): the machines that run
memberwise may have no internet, so nothing is loaded from a CDN.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from memberwise import __version__
from memberwise.campaigns.endpoints import journeys_router
from memberwise.campaigns.endpoints import router as campaigns_router
from memberwise.config import Settings, get_settings
from memberwise.console import favicon, member_center, member_endpoints
from memberwise.events.endpoints import router as events_router
from memberwise.feedback.endpoints import router as feedback_router
from memberwise.jobs import holders
from memberwise.kit.asgi import AnswerUnexpectedErrors
from memberwise.kit.db import transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.kit.openapi import document_errors
from memberwise.ledger.benefit_endpoints import router as benefits_router
from memberwise.ledger.endpoints import router as ledger_router
from memberwise.members.endpoints import router as members_router
from memberwise.membership.endpoints import router as membership_router
from memberwise.merchants import service as merchants_service
from memberwise.merchants.endpoints import router as merchants_router
from memberwise.predict.endpoints import router as predict_router
from memberwise.privacy.auth import AuthenticateFirst
from memberwise.privacy.endpoints import consent_router
from memberwise.privacy.endpoints import router as privacy_router
from memberwise.profiles.endpoints import router as profiles_router
from memberwise.recommend.endpoints import router as recommend_router
from memberwise.runtime import Runtime
from memberwise.service.endpoints import router as service_router
from memberwise.webhooks.endpoints import router as webhooks_router

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MemberwiseError)
    async def _domain(_: Request, exc: MemberwiseError) -> JSONResponse:
        return _error(exc.status_code, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # One mistake, one code on every route: a body that is not JSON at all is
        # 400 malformed_json, as POST /v1/events (which parses its body by hand) answers.
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                reason = (e.get("ctx") or {}).get("error", "invalid JSON")
                return _error(400, "malformed_json", f"the body is not valid JSON: {reason}")
        details = [
            {"loc": list(e.get("loc", ())), "type": e.get("type"), "message": e.get("msg")}
            for e in exc.errors()
        ]
        first = details[0] if details else {"loc": [], "message": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        message = f"{where}: {first['message']}" if where else str(first["message"])
        return _error(422, "invalid_request", message, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:  # pragma: no cover
        return _error(500, "internal_error", "an unexpected error happened; it has been logged")


def tune_gc() -> None:
    """Make the garbage collector run less often in a server process.

    A 10,000-event batch allocates hundreds of thousands of short-lived objects, which would
    trigger a young-generation collection every 700 allocations by default; measured, this
    costs about a third of ingest throughput. Objects alive at startup are frozen out of
    collection (they live as long as the process).
    """
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


@asynccontextmanager
async def _webhook_sender(rt: Runtime) -> AsyncIterator[None]:
    """The webhook sender as a task of the server's loop, when the settings ask for it."""
    if not rt.settings.webhooks_sender:
        yield
        return
    from memberwise.webhooks.sender import Sender

    stop = asyncio.Event()
    async with Sender(rt.engine, rt.cipher) as sender:
        task = asyncio.create_task(sender.run(stop), name="webhook-sender")
        try:
            yield
        finally:
            stop.set()
            await task


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """The API for ``settings`` (or an already-open ``runtime``, e.g. in tests)."""
    rt = runtime or Runtime.open(settings or get_settings())
    holders.install()  # what each domain holds about a member, for export and erasure

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tune_gc()
        async with _webhook_sender(rt):
            yield
        if runtime is None:
            rt.close()

    app = FastAPIOffline(
        title="memberwise",
        version=__version__,
        description="Personalized membership programs: members, events, tiers, ledgers, "
        "predictions and recommendations. Every route but /health needs an API key "
        "(`Authorization: Bearer mw_...`).",
        lifespan=lifespan,
    )
    app.state.runtime = rt
    _install_error_handlers(app)
    # Outermost last: unexpected errors are answered here (the connection stays open), and
    # every /v1 request is authenticated before its body is read.
    app.add_middleware(AuthenticateFirst, verifier=rt.verifier)
    app.add_middleware(AnswerUnexpectedErrors)
    fastapi_openapi = app.openapi
    app.openapi = lambda: document_errors(fastapi_openapi())  # type: ignore[method-assign]

    @app.get("/health", tags=["health"], summary="Liveness and store reachability (no key)")
    def health() -> JSONResponse:
        try:
            with transaction(rt.engine) as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return _error(503, "store_unavailable", "the operational store does not answer")
        # Which program this server runs (the home's, see Settings.remember), so a deployment
        # can be checked from outside; None when its file no longer loads.
        try:
            program: str | None = rt.program().name
        except MemberwiseError:
            program = None
        return JSONResponse({"status": "ok", "version": __version__, "program": program})

    # FastAPI tries routers in order, scanning each one's routes: the routers of the hot reads
    # (benefits, recommendations) come first.
    app.include_router(benefits_router)
    app.include_router(recommend_router)
    app.include_router(ledger_router)
    app.include_router(events_router)
    app.include_router(members_router)
    app.include_router(membership_router)
    app.include_router(predict_router)
    app.include_router(privacy_router)
    app.include_router(consent_router)
    app.include_router(profiles_router)
    app.include_router(campaigns_router)
    app.include_router(journeys_router)
    app.include_router(webhooks_router)
    app.include_router(service_router)
    app.include_router(feedback_router)
    app.include_router(merchants_router)
    # The member center (pages a member opens through a signed link) and its link API.
    app.include_router(member_center.router)
    app.include_router(member_endpoints.router)
    # The browsers' /favicon.ico (no key, outside the OpenAPI).
    app.include_router(favicon.router)
    # Recommendations leave out kept-away merchants' items (the program's merchants section).
    merchants_service.install_recommendation_hook(lambda: rt.program().merchants)
    # The staff console (issue 18): server-rendered pages at /console, outside the OpenAPI.
    from memberwise.console.web import create_console

    app.mount("/console", create_console(rt))
    return app
