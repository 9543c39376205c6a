"""The membership program: a YAML file of tags, segments and personas (tiers, score, benefits
and fees come later), validated by pydantic and checked against the profile field catalog.

``load_program(path)`` reads one; ``default_program()`` is used when none is configured.
"""

from __future__ import annotations

from memberwise.program.schemas import PersonaSettings, Program, Tag
from memberwise.program.service import ProgramError, default_program, load_program, parse_program

__all__ = [
    "PersonaSettings",
    "Program",
    "ProgramError",
    "Tag",
    "default_program",
    "load_program",
    "parse_program",
]
