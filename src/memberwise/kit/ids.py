"""Identifiers: time-ordered random ids, so rows sort by creation and shard without a sequence."""

from __future__ import annotations

import secrets
import time


def new_id() -> str:
    """A 32-hex-character id: 16 hex of nanoseconds since the epoch, then 64 random bits."""
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"
