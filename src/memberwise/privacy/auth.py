"""The FastAPI dependency that authenticates a request's API key and checks its role."""

from __future__ import annotations

from fastapi import Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from memberwise.privacy.schemas import Principal, Role
from memberwise.privacy.service import KeyVerifier, authorize

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer mw_...`")


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
        # A key verified within the verifier's TTL is answered on the event loop (a hash and a
        # dict lookup); any other goes to the thread pool, because a miss costs a store read
        # and an argon2 verification (tens of milliseconds of CPU) that must not block the loop.
        key = credentials.credentials if credentials is not None else None
        verifier: KeyVerifier = request.app.state.runtime.verifier
        principal = verifier.cached(key) if key else None
        if principal is None:
            principal = await run_in_threadpool(verifier.verify, key)
        authorize(principal, self.roles)
        return principal
