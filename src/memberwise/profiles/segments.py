"""Lifecycle segments: ordered rules over profile fields, the first that matches names a member's
segment.

The built-in :data:`LIFECYCLE` is written in the rule language like any operator's rules, so a
program file can replace it (``segments:`` in the program, see :mod:`memberwise.program`). The
rules and why each sits where it does (``docs/profiles.md`` says the same to operators):

============ ============================================================ ==========================
segment      rule                                                         who, and why here
============ ============================================================ ==========================
new          ``tenure_days <= 30``                                        first month: onboarding
                                                                          comes before any value
                                                                          judgement (their scores
                                                                          rest on a few days)
champion     ``r_score >= 4 and f_score >= 4 and m_score >= 4``           the best buyers on all
                                                                          three RFM axes
at_risk      ``f_score >= 3 and recency_days > 60``                       bought often, silent for
                                                                          two months: win them back
                                                                          before they are lost
loyal        ``f_score >= 4 and r_score >= 3``                            frequent, still recent
active       ``recency_days <= 30``                                       bought in the last month
potential    ``recency_days <= 90 or (recency_days is null and            bought this quarter, or
             days_since_last_seen <= 30)``                                never bought but browsing
                                                                          this month: convert them
hibernating  ``recency_days <= 180 or days_since_last_seen <= 90``        half a year without a
                                                                          purchase, or a quarter
                                                                          without a visit
lost         ``true``                                                     everyone else
============ ============================================================ ==========================

``at_risk`` comes before ``loyal`` on purpose: ``r_score`` is a quintile among the year's
buyers, so on a platform where people buy rarely ``r_score >= 3`` still holds at 70+ days, and a
frequent buyer who went quiet would keep the "loyal" label and miss the win-back. The absolute
60 days makes "at risk" mean the same thing on every platform; a champion stays a champion
because ``r_score >= 4`` is the recent 40 % of buyers.

Rules read ``null`` as false (a member who never bought has no ``recency_days``, no scores):
never-buyers fall through to ``potential``, ``hibernating`` or ``lost`` by their last visit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import ibis
import ibis.expr.types as ir
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from sqlglot import exp

from memberwise.profiles.fields import FIELD_TYPES
from memberwise.profiles.rules import Rule, compile_rule, parse_rule

#: Names of segments and tags: lowercase identifiers (they become API values and column names).
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,62}")


def check_name(value: str, what: str) -> str:
    """``value`` if it is a valid segment or tag name; ValueError saying how to fix it if not."""
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"{what} name {value!r} is not a lowercase identifier: use lowercase letters, digits "
            "and '_', starting with a letter (at most 63 characters)"
        )
    return value


class Segment(BaseModel):
    """One segment: its name, its rule and what it means.

    The rule is checked against the field catalog where it is used: by the program loader
    (which reports the file and the path) and by :func:`segment_column`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    rule: str
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        if not isinstance(data, dict | Segment):
            raise ValueError(
                f"a segment is a mapping with 'name', 'rule' and an optional 'description', "
                f"not {data!r}: write e.g. {{name: lost, rule: 'true'}}"
            )
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "segment")

    @field_validator("rule", mode="before")
    @classmethod
    def _yaml_boolean(cls, value: object) -> object:
        # YAML reads a bare `rule: true` as a boolean; it means the rule `true`.
        return str(value).lower() if isinstance(value, bool) else value


def is_catch_all(rule: Rule) -> bool:
    """Whether a checked rule is the literal ``true`` (it matches every member)."""
    tree = rule.tree
    while isinstance(tree, exp.Paren):
        tree = tree.this
    return isinstance(tree, exp.Boolean) and tree.this is True


def _segment(name: str, rule: str, description: str) -> Segment:
    return Segment(name=name, rule=rule, description=description)


#: The built-in lifecycle segments, in the order they are tried (first match wins).
LIFECYCLE: tuple[Segment, ...] = (
    _segment("new", "tenure_days <= 30", "joined in the last 30 days"),
    _segment(
        "champion",
        "r_score >= 4 and f_score >= 4 and m_score >= 4",
        "top buyers on recency, frequency and spend",
    ),
    _segment(
        "at_risk",
        "f_score >= 3 and recency_days > 60",
        "bought often, but not in the last 60 days",
    ),
    _segment("loyal", "f_score >= 4 and r_score >= 3", "frequent buyers who still buy"),
    _segment("active", "recency_days <= 30", "bought in the last 30 days"),
    _segment(
        "potential",
        "recency_days <= 90 or (recency_days is null and days_since_last_seen <= 30)",
        "bought in the last 90 days, or never bought but visited in the last 30",
    ),
    _segment(
        "hibernating",
        "recency_days <= 180 or days_since_last_seen <= 90",
        "bought in the last 180 days or visited in the last 90",
    ),
    _segment("lost", "true", "everyone else"),
)


def segment_column(table: ir.Table, segments: Sequence[Segment]) -> ir.StringColumn:
    """Each row's segment: the name of the first segment whose rule matches.

    Parameters
    ----------
    table
        Profiles, one row per member, with (at least) the fields the rules read.
    segments
        The segments in order, e.g. :data:`LIFECYCLE` or a program's ``segments``. A row that
        matches none gets null; a program's list always ends with a catch-all, so it never does.

    Returns
    -------
    ibis.expr.types.StringColumn
        A ``CASE WHEN`` over the compiled rules; it runs on every engine Ibis runs rules on.
    """
    if not segments:
        raise ValueError("segment_column needs at least one segment")
    branches = [
        (compile_rule(parse_rule(s.name, s.rule, FIELD_TYPES), table), ibis.literal(s.name))
        for s in segments
    ]
    column: ir.StringColumn = ibis.cases(*branches, else_=ibis.null("string"))
    return column
