"""Every query of the campaigns domain."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, func, insert, select, update

from memberwise.campaigns.tables import (
    campaign_members,
    campaigns,
    journey_enrollments,
    journeys,
)
from memberwise.kit.db import insert_ignore

C, M = campaigns, campaign_members


def insert_campaign(conn: Connection, row: Mapping[str, Any]) -> None:
    conn.execute(insert(C), [dict(row)])


def get_campaign(conn: Connection, campaign_id: str) -> RowMapping | None:
    return conn.execute(select(C).where(C.c.campaign_id == campaign_id)).mappings().first()


def list_campaigns(conn: Connection) -> list[RowMapping]:
    return list(conn.execute(select(C).order_by(C.c.created_at.desc())).mappings())


def update_campaign(conn: Connection, campaign_id: str, values: Mapping[str, Any]) -> int:
    """Update; with ``status`` in ``values`` only a draft moves (a launch happens once)."""
    query = update(C).where(C.c.campaign_id == campaign_id)
    if values.get("status") == "running":
        query = query.where(C.c.status == "draft")
    return conn.execute(query.values(**values)).rowcount


def status_counts(conn: Connection, campaign_id: str) -> dict[str, int]:
    query = (
        select(M.c.status, func.count()).where(M.c.campaign_id == campaign_id).group_by(M.c.status)
    )
    return {s: int(n) for s, n in conn.execute(query)}


def insert_members(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    for i in range(0, len(rows), 5000):
        conn.execute(insert_ignore(conn, M), [dict(r) for r in rows[i : i + 5000]])


def due(conn: Connection, now: datetime, limit: int) -> list[RowMapping]:
    query = (
        select(M.c.campaign_id, M.c.member_id, M.c.arm)
        .where(M.c.status == "scheduled", M.c.send_at <= now)
        .order_by(M.c.send_at, M.c.campaign_id, M.c.member_id)
        .limit(limit)
    )
    return list(conn.execute(query).mappings())


def sent_since(conn: Connection, member_ids: Sequence[str], since: datetime) -> set[str]:
    """Members with any campaign send at or after ``since`` (the frequency cap)."""
    out: set[str] = set()
    ids = list(member_ids)
    for i in range(0, len(ids), 1000):
        query = select(M.c.member_id).where(
            M.c.member_id.in_(ids[i : i + 1000]), M.c.status == "sent", M.c.sent_at >= since
        )
        out.update(conn.execute(query).scalars())
    return out


def mark(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Record sends and skips; only a still-scheduled row moves (a replayed pass is a no-op)."""
    if not rows:
        return
    conn.execute(
        update(M)
        .where(
            M.c.campaign_id == bindparam("b_campaign"),
            M.c.member_id == bindparam("b_member"),
            M.c.status == "scheduled",
        )
        .values(
            status=bindparam("b_status"),
            reason=bindparam("b_reason"),
            sent_at=bindparam("b_sent_at"),
            message_id=bindparam("b_message_id"),
        ),
        [
            {
                "b_campaign": r["campaign_id"],
                "b_member": r["member_id"],
                "b_status": r["status"],
                "b_reason": r.get("reason"),
                "b_sent_at": r.get("sent_at"),
                "b_message_id": r.get("message_id"),
            }
            for r in rows
        ],
    )


def sent_by_arm(conn: Connection, campaign_id: str) -> dict[str, int]:
    """Sends so far per arm (the points budget counts each arm's points)."""
    query = (
        select(M.c.arm, func.count())
        .where(M.c.campaign_id == campaign_id, M.c.status == "sent")
        .group_by(M.c.arm)
    )
    return {a: int(n) for a, n in conn.execute(query)}


def arm_status_counts(conn: Connection, campaign_id: str) -> dict[str, dict[str, int]]:
    """The exposure log by arm: members per status."""
    query = (
        select(M.c.arm, M.c.status, func.count())
        .where(M.c.campaign_id == campaign_id)
        .group_by(M.c.arm, M.c.status)
    )
    out: dict[str, dict[str, int]] = {}
    for arm, status, n in conn.execute(query):
        out.setdefault(arm, {})[status] = int(n)
    return out


def arms(conn: Connection, campaign_id: str) -> list[tuple[str, str]]:
    """(member, arm) of every targeted member."""
    query = select(M.c.member_id, M.c.arm).where(M.c.campaign_id == campaign_id)
    return [(m, a) for m, a in conn.execute(query)]


def page_members(
    conn: Connection,
    campaign_id: str,
    *,
    after: str | None,
    limit: int,
    status: str | None,
    arm: str | None,
) -> list[RowMapping]:
    query = select(M).where(M.c.campaign_id == campaign_id).order_by(M.c.member_id).limit(limit)
    if after is not None:
        query = query.where(M.c.member_id > after)
    if status is not None:
        query = query.where(M.c.status == status)
    if arm is not None:
        query = query.where(M.c.arm == arm)
    return list(conn.execute(query).mappings())


# -- journeys -------------------------------------------------------------------------------

J, JE = journeys, journey_enrollments


def insert_journey(conn: Connection, row: Mapping[str, Any]) -> None:
    conn.execute(insert(J), [dict(row)])


def get_journey(conn: Connection, journey_id: str) -> RowMapping | None:
    return conn.execute(select(J).where(J.c.journey_id == journey_id)).mappings().first()


def list_journeys(conn: Connection, status: str | None = None) -> list[RowMapping]:
    query = select(J).order_by(J.c.created_at.desc())
    if status is not None:
        query = query.where(J.c.status == status)
    return list(conn.execute(query).mappings())


def enrollment_counts(conn: Connection, journey_id: str) -> dict[str, int]:
    query = (
        select(JE.c.status, func.count()).where(JE.c.journey_id == journey_id).group_by(JE.c.status)
    )
    return {s: int(n) for s, n in conn.execute(query)}


def enroll(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert new enrollments; a (journey, member, trigger) already there is left alone."""
    before = conn.execute(select(func.count()).select_from(JE)).scalar_one()
    for i in range(0, len(rows), 5000):
        conn.execute(insert_ignore(conn, JE), [dict(r) for r in rows[i : i + 5000]])
    return int(conn.execute(select(func.count()).select_from(JE)).scalar_one() - before)


def due_enrollments(conn: Connection, journey_id: str, now: datetime) -> list[RowMapping]:
    query = (
        select(JE)
        .where(JE.c.journey_id == journey_id, JE.c.status == "active", JE.c.next_at <= now)
        .order_by(JE.c.next_at, JE.c.member_id)
    )
    return list(conn.execute(query).mappings())


def advance(conn: Connection, row: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    """Move one enrollment on from the step it was read at; False when another runner did
    (so each step runs once even with two runners)."""
    query = (
        update(JE)
        .where(
            JE.c.journey_id == row["journey_id"],
            JE.c.member_id == row["member_id"],
            JE.c.trigger_key == row["trigger_key"],
            JE.c.step == row["step"],
            JE.c.status == "active",
        )
        .values(**values)
    )
    return conn.execute(query).rowcount == 1


def page_enrollments(
    conn: Connection, journey_id: str, *, after: str | None, limit: int, status: str | None
) -> list[RowMapping]:
    key = JE.c.member_id + "\x1f" + JE.c.trigger_key
    query = select(JE).where(JE.c.journey_id == journey_id).order_by(key).limit(limit)
    if after is not None:
        query = query.where(key > after)
    if status is not None:
        query = query.where(JE.c.status == status)
    return list(conn.execute(query).mappings())


def note(conn: Connection, row: Mapping[str, Any], reason: str, at: datetime) -> None:
    """Keep why a step was skipped on its enrollment."""
    conn.execute(
        update(JE)
        .where(
            JE.c.journey_id == row["journey_id"],
            JE.c.member_id == row["member_id"],
            JE.c.trigger_key == row["trigger_key"],
        )
        .values(exit_reason=reason, updated_at=at)
    )
