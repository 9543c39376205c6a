"""Keyset pagination: stable pages over a sorted key, with an opaque cursor."""

from __future__ import annotations

import base64
from typing import Generic, TypeVar

from pydantic import BaseModel, Field

from memberwise.kit.errors import InvalidRequest

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


class Page(BaseModel, Generic[T]):
    """One page of items and the cursor of the next page (null on the last page)."""

    items: list[T]
    next_cursor: str | None = Field(default=None, description="Pass as `after` for the next page.")


class InvalidCursor(InvalidRequest):
    code = "invalid_cursor"


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The key a cursor stands for. Raises InvalidCursor when it was not made by us.

    The one rule for every list: a cursor is exactly what :func:`encode_cursor` makes (unpadded
    URL-safe base64 of a non-empty UTF-8 key). The decoder alone would skip characters outside
    the alphabet (``!!!!`` would read as an empty key and restart the list), so the key is
    encoded again and must give back the cursor as sent. An empty cursor is the first page.
    """
    if not cursor:  # absent or empty (`?after=`): the first page
        return None
    try:
        key = base64.b64decode(
            cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True
        ).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("the cursor is not valid; pass next_cursor from a page") from exc
    if not key or encode_cursor(key) != cursor:
        raise InvalidCursor("the cursor is not valid; pass next_cursor from a page")
    return key
