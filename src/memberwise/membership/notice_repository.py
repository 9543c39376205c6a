"""Every query of tier notices (downgrade warnings, near-next-tier nudges): the notices sent, and
the published tier rows they are computed from, read in batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, select

from memberwise.kit.db import insert_ignore
from memberwise.membership.tables import member_tiers, tier_notices

# --- downgrade notices ----------------------------------------------------------------------


def notice_keys(conn: Connection, member_ids: Sequence[str]) -> set[tuple[str, str, datetime]]:
    """(member, tier, downgrade_on) of the notices already given to ``member_ids``."""
    out: set[tuple[str, str, datetime]] = set()
    ids = list(member_ids)
    for i in range(0, len(ids), 1000):
        stmt = select(
            tier_notices.c.member_id, tier_notices.c.tier, tier_notices.c.downgrade_on
        ).where(tier_notices.c.member_id.in_(ids[i : i + 1000]))
        out.update((m, t, on) for m, t, on in conn.execute(stmt))
    return out


def insert_notices(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert_ignore(conn, tier_notices), rows)


def notices_after(conn: Connection, at: datetime) -> list[RowMapping]:
    """Notices whose downgrade date is still ahead of ``at``."""
    stmt = (
        select(tier_notices)
        .where(tier_notices.c.downgrade_on > at)
        .order_by(tier_notices.c.member_id, tier_notices.c.tier)
    )
    return list(conn.execute(stmt).mappings())


def notices_of(conn: Connection, member_id: str) -> list[RowMapping]:
    stmt = (
        select(tier_notices)
        .where(tier_notices.c.member_id == member_id)
        .order_by(tier_notices.c.noticed_at.desc(), tier_notices.c.tier)
    )
    return list(conn.execute(stmt).mappings())


def tier_rows(conn: Connection, member_ids: Sequence[str]) -> dict[str, RowMapping]:
    """The tier rows (tier, source, since, score, details) of ``member_ids``."""
    out: dict[str, RowMapping] = {}
    ids = list(member_ids)
    for i in range(0, len(ids), 1000):
        stmt = select(member_tiers).where(member_tiers.c.member_id.in_(ids[i : i + 1000]))
        out.update((r["member_id"], r) for r in conn.execute(stmt).mappings())
    return out


def auto_tier_rows(
    conn: Connection, below: Sequence[str], batch: int = 20_000
) -> Iterator[list[RowMapping]]:
    """Batches of automatic tier rows (member_id, tier, since, score, details) of members
    holding one of the tiers ``below`` (those with a higher automatic tier to reach), in member
    order: read a batch at a time so a million members never sit in memory at once."""
    after = ""
    while True:
        stmt = (
            select(
                member_tiers.c.member_id,
                member_tiers.c.tier,
                member_tiers.c.since,
                member_tiers.c.score,
                member_tiers.c.details,
            )
            .where(
                member_tiers.c.source == "auto",
                member_tiers.c.tier.in_(list(below)),
                member_tiers.c.member_id > after,
            )
            .order_by(member_tiers.c.member_id)
            .limit(batch)
        )
        rows = list(conn.execute(stmt).mappings())
        if not rows:
            return
        yield rows
        after = rows[-1]["member_id"]
