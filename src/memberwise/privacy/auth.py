"""The FastAPI dependency that authenticates a request's API key and checks its role."""

from __future__ import annotations

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from memberwise.privacy.schemas import Principal, Role
from memberwise.privacy.service import authorize

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer mw_...`")


class Authorize:
    """``Depends(Authorize(Role.platform))``: the caller's principal, if its role is allowed.

    ``roles`` is kept on the instance so tests can walk the route table and check every route.
    Admin is always allowed.
    """

    def __init__(self, *roles: Role) -> None:
        self.roles: frozenset[Role] = frozenset(roles)

    def __call__(
        self,
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Security(_bearer),
    ) -> Principal:
        # Sync on purpose: FastAPI runs it in the thread pool, off the event loop, because a
        # cache miss costs an argon2 verification (tens of milliseconds of CPU).
        key = credentials.credentials if credentials is not None else None
        principal: Principal = request.app.state.runtime.verifier.verify(key)
        authorize(principal, self.roles)
        return principal
