"""Downgrade notices and the progress to the next tier, as journeys and the desk read them.

The tiers stage marks a member whose next evaluation will downgrade them (``notice`` in their
tier details, from ``notice_days`` before the date). Publishing a build records each such notice
once in ``tier_notices`` -- keyed by member, tier at risk and downgrade date, so a rebuild finds
it given and a new period at risk gives a new one -- writes a ``member.downgrade_notice`` outbox
message in the same transaction, and hands the new notices to :data:`NOTICE_HOOKS` (the service
desk's automatic tickets register there: the desk sits above membership, so it passes its
answer in rather than being imported here).

:func:`near_next_tier` answers "who is close to their next tier" from the published tier rows
with the same shortfalls the member's membership view shows ("spend 230.00 CNY more").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
from sqlalchemy import Connection

from memberwise.kit import outbox
from memberwise.kit.storage import parquet_batches
from memberwise.kit.time import as_utc, utcnow
from memberwise.membership import member_view, notice_repository
from memberwise.membership.schemas import Shortfall, TierNoticeOut
from memberwise.membership.tiers import from_us
from memberwise.program.schemas import Program

EVENT_TYPE = "member.downgrade_notice"


@dataclass(frozen=True)
class GivenNotice:
    """A downgrade notice given by this publish (handed to :data:`NOTICE_HOOKS`)."""

    member_id: str
    tier: str
    to_tier: str
    downgrade_on: datetime
    noticed_at: datetime
    message_id: str

    @property
    def key(self) -> str:
        """The notice's stable name: one journey enrollment, one desk ticket per notice."""
        return notice_key(self.tier, self.downgrade_on)


#: Called as ``hook(conn, program, notices)`` in the publish transaction with the notices given
#: for the first time. Higher domains append to it (and remove their hook when done).
NOTICE_HOOKS: list[Callable[[Connection, Program, Sequence[GivenNotice]], None]] = []


def notice_key(tier: str, downgrade_on: datetime) -> str:
    return f"notice:{tier}:{as_utc(downgrade_on).date().isoformat()}"


def record(
    conn: Connection, program: Program, build_dir: Path, *, now: datetime | None = None
) -> int:
    """Record the build's downgrade notices not given before, announce each in the outbox and
    hand them to :data:`NOTICE_HOOKS`; returns how many were new. A replayed publish gives
    nothing twice."""
    path = build_dir / "tiers.parquet"
    manifest = build_dir / "build.json"
    if not path.exists() or not manifest.exists():
        return 0
    build_id = str(json.loads(manifest.read_text())["build_id"])
    now = as_utc(now or utcnow())
    given: list[GivenNotice] = []
    for batch in parquet_batches(path, 20_000, columns=["member_id", "tier", "details"]):
        # Most members carry no notice: filter in Arrow before parsing any JSON.
        has = pc.invert(pc.match_substring(batch.column("details"), '"notice":null'))
        rows = batch.filter(has).to_pylist()
        found = []
        for r in rows:
            notice = json.loads(r["details"]).get("notice")
            if notice:
                on = from_us(int(notice["downgrade_on_us"]))
                found.append((r["member_id"], r["tier"], str(notice["to"]), on))
        if not found:
            continue
        known = notice_repository.notice_keys(conn, [m for m, *_ in found])
        fresh = [f for f in found if (f[0], f[1], f[3]) not in known]
        messages, rows_out = [], []
        for member_id, tier, to_tier, on in fresh:
            message = outbox.message_row(
                EVENT_TYPE,
                {
                    "member_id": member_id,
                    "tier": tier,
                    "to_tier": to_tier,
                    "downgrade_on": on,
                    "text": f"will be downgraded to {to_tier} on {on.date()}",
                },
                member_id=member_id,
                at=now,
            )
            messages.append(message)
            rows_out.append(
                {
                    "member_id": member_id,
                    "tier": tier,
                    "downgrade_on": on,
                    "to_tier": to_tier,
                    "build_id": build_id,
                    "noticed_at": now,
                    "message_id": message["message_id"],
                }
            )
            given.append(GivenNotice(member_id, tier, to_tier, on, now, message["message_id"]))
        notice_repository.insert_notices(conn, rows_out)
        outbox.emit_many(conn, messages)
    if given:
        for hook in list(NOTICE_HOOKS):
            hook(conn, program, given)
    return len(given)


def notices_of(conn: Connection, member_id: str) -> list[TierNoticeOut]:
    """Every downgrade notice given to the member, newest first."""
    return [
        TierNoticeOut(
            tier=r["tier"],
            to_tier=r["to_tier"],
            downgrade_on=r["downgrade_on"],
            noticed_at=r["noticed_at"],
            build_id=r["build_id"],
        )
        for r in notice_repository.notices_of(conn, member_id)
    ]


def pending_notices(conn: Connection, now: datetime) -> list[tuple[str, str]]:
    """(member, notice key) of every notice whose downgrade date is still ahead."""
    return [
        (r["member_id"], notice_key(r["tier"], r["downgrade_on"]))
        for r in notice_repository.notices_after(conn, now)
    ]


def notices_standing(conn: Connection, wanted: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Of ``wanted`` (member, notice key), those still in force: the member holds the tier at
    risk and the latest build still warns of that date (they did not requalify, and were not
    downgraded yet)."""
    rows = notice_repository.tier_rows(conn, sorted({m for m, _ in wanted}))
    out = set()
    for member_id, key in wanted:
        row = rows.get(member_id)
        if row is None:
            continue
        notice = json.loads(row["details"] or "{}").get("notice")
        if notice and notice_key(row["tier"], from_us(int(notice["downgrade_on_us"]))) == key:
            out.add((member_id, key))
    return out


@dataclass(frozen=True)
class NearTier:
    """A member within reach of their next tier, and how far (the membership view's words)."""

    member_id: str
    key: str
    target: str
    text: str


def _next_automatic(program: Program, index: int) -> int | None:
    return next(
        (j for j in range(index + 1, len(program.tiers)) if program.tiers[j].automatic), None
    )


def _closest(
    program: Program, shortfalls: Sequence[Shortfall], within_fen: int, within_points: int
) -> Shortfall | None:
    """The qualification the member is nearest to meeting within the limits (None: none)."""
    near = [
        s
        for s in shortfalls
        if s.missing
        and s.missing > 0
        and s.missing <= (within_fen if s.unit == "fen" else within_points)
    ]
    return min(near, key=lambda s: (s.unit != "fen", s.missing or 0), default=None)


def near_next_tier(
    conn: Connection, program: Program, *, within_fen: int, within_points: int = 0
) -> list[NearTier]:
    """Members on an automatic tier who miss their next automatic tier by at most
    ``within_fen`` of net spend or ``within_points`` of score or points (0: not considered).
    The key names the target tier and the current tier's start, so one tier period gives one
    occurrence. Reads the published tier rows in batches (one pass over the holders of the
    tiers below the top)."""
    names = [t.name for t in program.tiers]
    below = [t.name for i, t in enumerate(program.tiers) if _next_automatic(program, i) is not None]
    out = []
    for batch in notice_repository.auto_tier_rows(conn, below):
        for r in batch:
            index = names.index(r["tier"])
            target = _next_automatic(program, index)
            if target is None:
                continue
            details: dict[str, Any] = json.loads(r["details"] or "{}")
            shortfalls = member_view.shortfalls(program, target, details, r["score"])
            if any(s.missing == 0 and s.rule is None for s in shortfalls):
                continue  # already qualifies: the next build moves them up
            best = _closest(program, shortfalls, within_fen, within_points)
            if best is None:
                continue
            tier = names[target]
            since = as_utc(r["since"]).date().isoformat()
            out.append(
                NearTier(r["member_id"], f"near:{tier}:{since}", tier, f"{best.text} for {tier}")
            )
    return out


def tiers_reached(
    conn: Connection, program: Program, wanted: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Of ``wanted`` (member, ``near:`` key), those whose member now holds the target tier or a
    higher one (the trigger resolved)."""
    rank = {t.name: i for i, t in enumerate(program.tiers)}
    rows = notice_repository.tier_rows(conn, sorted({m for m, _ in wanted}))
    out = set()
    for member_id, key in wanted:
        target = key.removeprefix("near:").rsplit(":", 1)[0]
        row = rows.get(member_id)
        if row is not None and rank.get(row["tier"], -1) >= rank.get(target, len(rank)):
            out.add((member_id, key))
    return out
