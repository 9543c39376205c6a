"""Errors: the API's refusals with their stable ``code``, and failures to reach it."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """The API refused the request: ``status`` (HTTP), ``code`` (stable, to branch on),
    ``message`` (a sentence for people) and ``details`` when there are any."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class TransportError(Exception):
    """The API could not be reached (after the retries)."""
