"""Authentication of API keys: an ASGI middleware that checks the key before anything reads the
body, and the FastAPI dependency that checks the authenticated key's role per route."""

from __future__ import annotations

from fastapi import Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from memberwise.kit.errors import MemberwiseError
from memberwise.privacy.schemas import Principal, Role
from memberwise.privacy.service import KeyVerifier, authorize

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer mw_...`")

#: Paths whose every route needs a key (the docs and /health do not).
PROTECTED_PREFIX = "/v1"
#: Where the middleware leaves the principal: a key of the request's own scope (the scope's
#: ``state`` dict may be shared with the lifespan state, so it is not written to).
_SCOPE_KEY = "memberwise.principal"


async def _verify(verifier: KeyVerifier, key: str | None) -> Principal:
    # A key verified within the verifier's TTL is answered on the event loop (a hash and a
    # dict lookup); any other goes to the thread pool, because a miss costs a store read
    # and an argon2 verification (tens of milliseconds of CPU) that must not block the loop.
    principal = verifier.cached(key) if key else None
    if principal is None:
        principal = await run_in_threadpool(verifier.verify, key)
    return principal


def _bearer_key(scope: Scope) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header (HTTPBearer's reading)."""
    value = Headers(scope=scope).get("authorization")
    if not value:
        return None
    scheme, _, key = value.partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


class AuthenticateFirst:
    """ASGI middleware: a request to ``/v1`` is authenticated before its body is read.

    FastAPI reads and parses a route's body before it runs the route's dependencies, so a
    dependency alone would answer malformed JSON sent with no key with a 422 (telling an
    anonymous caller about the route's schema) and read a 50 MB body in full before the 401.
    Here the key is checked first and a refusal is sent without touching the body; the
    principal is left in the request's scope, where :class:`Authorize` finds it.
    """

    def __init__(self, app: ASGIApp, *, verifier: KeyVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PROTECTED_PREFIX and not path.startswith(PROTECTED_PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        try:
            principal = await _verify(self.verifier, _bearer_key(scope))
        except MemberwiseError as exc:
            response = JSONResponse(
                exc.to_dict(), status_code=exc.status_code, headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        scope[_SCOPE_KEY] = principal
        await self.app(scope, receive, send)


class Authorize:
    """``Depends(Authorize(Role.platform))``: the caller's principal, if its role is allowed.

    ``roles`` is kept on the instance so tests can walk the route table and check every route.
    Admin is always allowed.
    """

    def __init__(self, *roles: Role) -> None:
        self.roles: frozenset[Role] = frozenset(roles)

    async def __call__(
        self,
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Security(_bearer),
    ) -> Principal:
        principal: Principal | None = request.scope.get(_SCOPE_KEY)
        if principal is None:  # a route outside /v1, or an app without the middleware
            key = credentials.credentials if credentials is not None else None
            principal = await _verify(request.app.state.runtime.verifier, key)
        authorize(principal, self.roles)
        return principal
