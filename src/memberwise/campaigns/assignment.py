"""Deterministic assignment of members to an experiment's arms.

A member's arm is a pure function of (experiment salt, member id, arms): the same member gets
the same arm in every process, on every replay and after a restart, with no stored lookup on
the hot path; a new salt per experiment makes assignments independent across experiments
(one experiment's treatment group is not the next one's). The hash is SHA-256, so arms are
balanced to sampling error whatever the member ids look like.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

_SCALE = float(1 << 64)


def unit_interval(salt: str, member_id: str) -> float:
    """A uniform number in [0, 1) for this member under this salt."""
    digest = hashlib.sha256(f"{salt}\x1f{member_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def arm_of(salt: str, member_id: str, arms: Mapping[str, float]) -> str:
    """The arm of ``member_id``; ``arms`` maps names to weights (any positive scale), taken
    in sorted order so the declaration order of a program file does not matter.

    Raises ValueError when no arm has a positive weight."""
    names = sorted(arms)
    total = sum(max(arms[n], 0.0) for n in names)
    if total <= 0:
        raise ValueError("an experiment needs an arm with a positive weight")
    point = unit_interval(salt, member_id) * total
    cumulative = 0.0
    for name in names:
        cumulative += max(arms[name], 0.0)
        if point < cumulative:
            return name
    return names[-1]  # point == total only through rounding


def assign(salt: str, member_ids: Sequence[str], arms: Mapping[str, float]) -> dict[str, str]:
    """Every member's arm (see :func:`arm_of`)."""
    return {m: arm_of(salt, m, arms) for m in member_ids}
