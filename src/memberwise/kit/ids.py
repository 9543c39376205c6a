"""Identifiers: time-ordered random ids, and the one rule every entry point applies to the ids a
platform sends (members above all).

A member id travels in URL paths (``/v1/members/{id}/points``), file names of exports, the
event lake and the CLI, so it is held to characters that mean nothing special in any of them:
ASCII letters, digits, ``_``, ``-``, ``:`` and single dots, starting with a letter, digit or
``_``. That refuses NUL and other control characters, ``/`` (``x/profile`` would collide with a
route), ``..`` (a path climbing out), bidirectional overrides, emoji and whitespace. The rule
is written once here and used by the members API, event ingestion (API and bulk files, as SQL),
orders and every other body that names a member.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Annotated

from pydantic import Field, StringConstraints

#: Longest accepted identifier, in characters.
ID_MAX_LEN = 128
#: The rule without anchors (RE2 / DuckDB ``regexp_full_match`` and Python ``fullmatch``): no
#: look-around, so the same text works in pydantic (Rust regex), DuckDB and JSON Schema. A dot
#: must be followed by a non-dot character or end the id, so ``..`` never appears.
ID_BODY = r"[A-Za-z0-9_](?:\.?[A-Za-z0-9_:\-])*\.?"
#: The same rule anchored, for JSON Schema and pydantic ``pattern``.
ID_PATTERN = f"^{ID_BODY}$"
_ID_RE = re.compile(ID_BODY)

#: A member id (or any platform-given id) as every request body declares it.
#: Whitespace is never stripped (a model may strip its other strings): " m1" is refused, not
#: read as "m1", as every other entry point refuses it.
MemberId = Annotated[
    str,
    StringConstraints(
        strip_whitespace=False, min_length=1, max_length=ID_MAX_LEN, pattern=ID_PATTERN
    ),
    Field(
        description="ASCII letters, digits, '_', '-', ':' and single dots; at most 128.",
        examples=["m_10042"],
    ),
]


def is_valid_id(value: object) -> bool:
    """Whether ``value`` keeps the identifier rule (see the module docstring)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= ID_MAX_LEN
        and _ID_RE.fullmatch(value) is not None
    )


def new_id() -> str:
    """A 32-hex-character id: 16 hex of nanoseconds since the epoch, then 64 random bits."""
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"
