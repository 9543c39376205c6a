"""What every section of a program file shares: immutable models that refuse unknown keys, and
problems that name where inside a value something is wrong and how to fix it.

Sections of other domains (benefits, points, coupons, predictions, recommendations) build on
:class:`Section` and report with :func:`problems_error`, so a program file's errors read the same
whichever part of it is wrong. This module imports no section, so each domain's settings module
can import it without a cycle.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError

from memberwise.profiles.fields import FIELD_TYPES
from memberwise.profiles.rules import FieldType, RuleError, parse_rule

RULE_FIX = (
    "write one true/false expression over profile fields, e.g. "
    "'events_90d >= 20 and share_events_weekend > 0.5' (fields and syntax: docs/profiles.md)"
)

Problem = dict[str, Any]


def problem(at: Sequence[str | int], message: str, fix: str, **extra: Any) -> Problem:
    """One problem found inside a value: ``at`` is the path below the value being validated."""
    return {"at": list(at), "message": message, "fix": fix, **extra}


def problems_error(problems: list[Problem]) -> PydanticCustomError:
    """A pydantic error carrying ``problems`` (the loader reports each with its own path)."""
    message = "; ".join(p["message"] for p in problems)
    return PydanticCustomError("program", "{message}", {"message": message, "problems": problems})


def suggest(name: str, choices: Sequence[str]) -> str:
    """ "did you mean ...? " for the closest of ``choices``, or ""."""
    close = difflib.get_close_matches(name, choices, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def rule_problem(
    at: Sequence[str | int],
    name: str,
    text: str,
    fields: Mapping[str, FieldType] = FIELD_TYPES,
) -> Problem | None:
    """The problem with a rule, or None when it checks against ``fields`` (by default the
    profile catalog; a section may extend it with its own fields, e.g. ``score``)."""
    try:
        parse_rule(name, text, dict(fields))
    except RuleError as exc:
        details = exc.details or {}
        unknown = re.search(r"unknown field '([^']+)'", exc.message)
        hint = suggest(unknown.group(1), list(fields)) if unknown else ""
        return problem(
            at,
            exc.message,
            hint + RULE_FIX,
            rule=details.get("rule", name),
            position=details.get("position", 1),
        )
    return None


class Section(BaseModel):
    """Base of every part of a program: immutable, and unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)
