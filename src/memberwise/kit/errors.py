"""One base error with an HTTP status and a stable machine ``code``; domains subclass it.

The API renders every :class:`MemberwiseError` as ``{"code": ..., "message": ...}`` (plus
``details`` when there are any), so clients branch on ``code`` and show ``message``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class MemberwiseError(Exception):
    """A refusal the caller can understand and act on (never a bug)."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class NotFound(MemberwiseError):
    status_code = 404
    code = "not_found"


class Conflict(MemberwiseError):
    status_code = 409
    code = "conflict"


class InvalidRequest(MemberwiseError):
    status_code = 422
    code = "invalid_request"


class Unauthenticated(MemberwiseError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(MemberwiseError):
    status_code = 403
    code = "forbidden"


class PayloadTooLarge(MemberwiseError):
    status_code = 413
    code = "payload_too_large"
