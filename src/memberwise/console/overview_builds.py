"""The overview's per-build figures, computed once per published build and kept in memory.

Members by tier and by segment over the recent builds, the CLV and churn-risk distributions and
the black-card summary only change when a build is published (or, between builds, when an
erasure or an identity merge removes rows): on a 20,000-member home they are most of the
overview's time. :func:`build_figures` recomputes them when :func:`build_key` changes and
returns the kept copy otherwise. The key is read in the caller's transaction on every request,
so a build published by another process (``memberwise build`` beside the server) is seen by the
next request; nothing here depends on the clock (the live parts of the overview, points expiring
and the rest, are read on every request). One entry per engine (weakly held: it goes with the
runtime).
"""

from __future__ import annotations

import bisect
import math
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine

from memberwise.membership import service as membership
from memberwise.predict import service as predict
from memberwise.profiles import service as profiles

#: Churn-risk bins (the chart and the table), and the CLV table's bins in yuan.
RISK_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CLV_EDGES_YUAN = (0, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 10**9)
#: At most this many bins in the CLV chart (of a round width, as Plotly's own ``nbinsx``).
CLV_CHART_BINS = 30


@dataclass(frozen=True)
class Histogram:
    """Counts of values in ``[edges[i], edges[i+1])`` (the last bin closed)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True)
class BuildFigures:
    """Everything of the overview that a published build fixes, with the key it was read at."""

    key: tuple[object, ...]
    recent: list[tuple[str, datetime]]
    segments: dict[str, dict[str, int]]
    tiers_then: dict[str, dict[str, int]]
    clv_chart: Histogram
    clv_table: Histogram
    risk: Histogram
    quota: dict[str, int]


_kept: weakref.WeakKeyDictionary[Engine, BuildFigures] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def build_figures(conn: Connection, engine: Engine) -> BuildFigures:
    """The per-build figures as of ``conn``'s reads: the kept ones when the key is unchanged."""
    key = build_key(conn)
    with _lock:
        kept = _kept.get(engine)
    if kept is not None and kept.key == key:
        return kept
    recent = key[0]
    assert isinstance(recent, tuple)
    builds = list(recent)
    clv, risk = predict.prediction_values(conn)
    clv_yuan = [c / 100 for c in clv]
    made = BuildFigures(
        key=key,
        recent=builds,
        segments=profiles.segments_by_build(conn, [b for b, _ in builds]),
        tiers_then={b: membership.members_by_tier(conn, as_of) for b, as_of in builds},
        clv_chart=histogram(clv_yuan, round_edges(clv_yuan, CLV_CHART_BINS)),
        clv_table=histogram(clv_yuan, CLV_EDGES_YUAN),
        risk=histogram(risk, RISK_EDGES),
        quota=latest_black_card(conn),
    )
    with _lock:
        _kept[engine] = made
    return made


def build_key(conn: Connection, limit: int = 12) -> tuple[object, ...]:
    """What the per-build figures depend on, in a few index reads: the newest ``limit`` builds
    (id, as of), the scored members, and the tier-history rows up to the newest build's as of
    with their members.

    A build publishes its builds row, tier history and predictions in one transaction, so a new
    build changes the first part. Between builds, rows up to that as of only go away or change
    hands: an erasure deletes a member's rows (a count drops), an identity merge moves the
    source's rows to the target (the members drop when both had some; otherwise the counts by
    tier are unchanged). Tier changes outside a build are stamped when they happen, after the
    newest as of, and only the live members-by-tier shows them."""
    recent = profiles.recent_builds(conn, limit)
    history = (0, 0)
    if recent:
        history = membership.tier_history_extent(conn, max(a for _, a in recent))
    return (tuple(recent), predict.scored_members(conn), history)


def latest_black_card(conn: Connection) -> dict[str, int]:
    """The newest build's black-card summary: active members, eligible, quota, taken, slots,
    invited (empty before a build with a black card)."""
    tiers = profiles.latest_build_summary(conn).get("tiers") or {}
    found = tiers.get("invitations") or {} if isinstance(tiers, dict) else {}
    return {str(k): int(v) for k, v in found.items() if isinstance(v, int | float)}


def histogram(values: Sequence[float], edges: Sequence[float]) -> Histogram:
    """How many values fall in each ``[edges[i], edges[i+1])``, the last bin closed; values
    outside the edges are not counted."""
    counts = [0] * (len(edges) - 1)
    last = len(edges) - 2
    for v in values:
        i = bisect.bisect_right(edges, v) - 1
        if 0 <= i <= last:
            counts[i] += 1
        elif i == last + 1 and v == edges[-1]:
            counts[last] += 1
    return Histogram(tuple(edges), tuple(counts))


def round_edges(values: Sequence[float], at_most: int) -> tuple[float, ...]:
    """Edges of bins of a round width (1, 2 or 5 times a power of ten, the smallest giving
    about ``at_most`` bins) covering every value; one bin of width 1 when every value is the
    same (spreads under a millionth count as the same: edges are rounded to 9 decimals), none
    for no values."""
    if not values:
        return ()
    low, high = min(values), max(values)
    raw = (high - low) / at_most
    if raw < 1e-6:
        return (float(math.floor(low)), math.floor(high) + 1.0)
    power = 10.0 ** math.floor(math.log10(raw))
    width = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(low / width) * width
    n = max(1, math.ceil((high - start) / width))
    edges = [round(start + i * width, 9) for i in range(n + 1)]
    if edges[0] > low:  # a tiny negative low rounds its first edge up to 0: one bin below
        edges.insert(0, round(edges[0] - width, 9))
    while edges[-1] < high:  # float rounding: the last (closed) bin must reach the maximum
        edges.append(round(edges[-1] + width, 9))
    return tuple(edges)
