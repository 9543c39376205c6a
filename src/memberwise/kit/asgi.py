"""ASGI plumbing the API needs under every route."""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("memberwise.api")


class AnswerUnexpectedErrors:
    """ASGI middleware: an unexpected exception becomes a logged ``500 internal_error`` answer,
    and the exception goes no further.

    Starlette's outermost ``ServerErrorMiddleware`` sends its 500 and then re-raises, so the
    server (uvicorn) sees an exception after the response started and closes the connection:
    a client's next request on that keep-alive connection fails with a reset. Answered here,
    the connection stays usable. An exception after the response started (mid-body) still
    propagates: the answer is broken and the connection must be closed.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            logger.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = JSONResponse(
                {
                    "code": "internal_error",
                    "message": "an unexpected error happened; it has been logged",
                },
                status_code=500,
            )
            await response(scope, receive, send)
