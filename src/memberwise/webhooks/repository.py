"""Every query of the webhooks domain."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    RowMapping,
    and_,
    bindparam,
    delete,
    exists,
    insert,
    or_,
    select,
    update,
)

from memberwise.kit.db import insert_ignore
from memberwise.kit.outbox import outbox
from memberwise.webhooks.tables import (
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_secrets,
)

E, S, D, A = webhook_endpoints, webhook_secrets, webhook_deliveries, webhook_attempts


# -- endpoints and secrets ------------------------------------------------------------------


def insert_endpoint(conn: Connection, row: Mapping[str, Any]) -> None:
    conn.execute(insert(E), [dict(row)])


def insert_secret(conn: Connection, row: Mapping[str, Any]) -> None:
    conn.execute(insert(S), [dict(row)])


def get_endpoint(conn: Connection, endpoint_id: str) -> RowMapping | None:
    return conn.execute(select(E).where(E.c.endpoint_id == endpoint_id)).mappings().first()


def list_endpoints(conn: Connection) -> list[RowMapping]:
    return list(conn.execute(select(E).order_by(E.c.created_at, E.c.endpoint_id)).mappings())


def active_endpoints(conn: Connection) -> list[RowMapping]:
    query = select(E.c.endpoint_id, E.c.event_types).where(E.c.status == "active")
    return list(conn.execute(query).mappings())


def update_endpoint(conn: Connection, endpoint_id: str, values: Mapping[str, Any]) -> None:
    conn.execute(update(E).where(E.c.endpoint_id == endpoint_id).values(**values))


def delete_endpoint(conn: Connection, endpoint_id: str) -> int:
    # Children first: SQLite enforces the foreign keys, and not every store cascades.
    ids = select(D.c.delivery_id).where(D.c.endpoint_id == endpoint_id)
    conn.execute(delete(A).where(A.c.delivery_id.in_(ids)))
    conn.execute(delete(D).where(D.c.endpoint_id == endpoint_id))
    conn.execute(delete(S).where(S.c.endpoint_id == endpoint_id))
    return conn.execute(delete(E).where(E.c.endpoint_id == endpoint_id)).rowcount


def expire_secrets(conn: Connection, endpoint_id: str, at: datetime) -> None:
    """Every secret of the endpoint signs until ``at`` at the latest (a rotation with no
    overlap retires a leaked secret at once, earlier overlaps included)."""
    conn.execute(
        update(S)
        .where(S.c.endpoint_id == endpoint_id, or_(S.c.expires_at.is_(None), S.c.expires_at > at))
        .values(expires_at=at)
    )


def valid_secrets(conn: Connection, endpoint_ids: Sequence[str], now: datetime) -> list[RowMapping]:
    """Secrets still signing: the current one and rotated ones not yet expired."""
    if not endpoint_ids:
        return []
    query = (
        select(S.c.secret_id, S.c.endpoint_id, S.c.secret)
        .where(
            S.c.endpoint_id.in_(list(endpoint_ids)),
            or_(S.c.expires_at.is_(None), S.c.expires_at > now),
        )
        .order_by(S.c.endpoint_id, S.c.created_at.desc())
    )
    return list(conn.execute(query).mappings())


def record_endpoint_results(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """``rows``: endpoint_id, consecutive_failures, failing_since, status, disabled_reason."""
    if not rows:
        return
    conn.execute(
        update(E)
        .where(E.c.endpoint_id == bindparam("b_endpoint_id"))
        .values(
            consecutive_failures=bindparam("b_failures"),
            failing_since=bindparam("b_failing_since"),
            status=bindparam("b_status"),
            disabled_reason=bindparam("b_reason"),
            updated_at=bindparam("b_at"),
        ),
        [
            {
                "b_endpoint_id": r["endpoint_id"],
                "b_failures": r["consecutive_failures"],
                "b_failing_since": r["failing_since"],
                "b_status": r["status"],
                "b_reason": r["disabled_reason"],
                "b_at": r["updated_at"],
            }
            for r in rows
        ],
    )


def endpoints_by_id(conn: Connection, endpoint_ids: Sequence[str]) -> dict[str, RowMapping]:
    if not endpoint_ids:
        return {}
    rows = conn.execute(select(E).where(E.c.endpoint_id.in_(list(endpoint_ids)))).mappings()
    return {r["endpoint_id"]: r for r in rows}


# -- the outbox and fan-out -----------------------------------------------------------------


def undispatched(conn: Connection, limit: int) -> list[RowMapping]:
    query = (
        select(outbox.c.seq, outbox.c.message_id, outbox.c.event_type, outbox.c.member_id)
        .where(outbox.c.dispatched_at.is_(None))
        .order_by(outbox.c.seq)
        .limit(limit)
    )
    return list(conn.execute(query).mappings())


def mark_dispatched(conn: Connection, seqs: Sequence[int], at: datetime) -> None:
    if seqs:
        conn.execute(
            update(outbox)
            .where(outbox.c.seq.in_(list(seqs)), outbox.c.dispatched_at.is_(None))
            .values(dispatched_at=at)
        )


def insert_deliveries(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert deliveries, ignoring any (endpoint, message) already there: fan-out repeats."""
    if rows:
        conn.execute(insert_ignore(conn, D), list(rows))


def prune_outbox(conn: Connection, before: datetime) -> int:
    """Drop outbox rows fanned out before ``before`` that no delivery still needs."""
    needed = exists().where(D.c.message_id == outbox.c.message_id, D.c.status == "pending")
    query = delete(outbox).where(outbox.c.dispatched_at < before, ~needed)
    return conn.execute(query).rowcount


# -- sending --------------------------------------------------------------------------------


def due_deliveries(conn: Connection, now: datetime, limit: int) -> list[str]:
    """Ids of deliveries to send now: pending, due, not leased, endpoint active, and not behind
    an earlier pending delivery of the same member to the same endpoint (per-member order)."""
    earlier = D.alias("earlier")
    blocked = exists().where(
        earlier.c.endpoint_id == D.c.endpoint_id,
        earlier.c.member_key == D.c.member_key,
        earlier.c.seq < D.c.seq,
        earlier.c.status == "pending",
    )
    query = (
        select(D.c.delivery_id)
        .join(E, E.c.endpoint_id == D.c.endpoint_id)
        .where(
            D.c.status == "pending",
            D.c.next_attempt_at <= now,
            or_(D.c.lease_until.is_(None), D.c.lease_until < now),
            E.c.status == "active",
            or_(D.c.member_key == "", ~blocked),
        )
        .order_by(D.c.next_attempt_at, D.c.seq)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def claim(
    conn: Connection, delivery_ids: Sequence[str], token: str, now: datetime, until: datetime
) -> list[RowMapping]:
    """Lease ``delivery_ids`` to ``token`` (those nobody else holds) and return them with the
    message to send."""
    if not delivery_ids:
        return []
    conn.execute(
        update(D)
        .where(
            D.c.delivery_id.in_(list(delivery_ids)),
            D.c.status == "pending",
            or_(D.c.lease_until.is_(None), D.c.lease_until < now),
        )
        .values(lease_token=token, lease_until=until)
    )
    query = (
        select(
            D.c.delivery_id,
            D.c.endpoint_id,
            D.c.message_id,
            D.c.attempts,
            D.c.event_type,
            E.c.url,
            outbox.c.payload,
            outbox.c.created_at,
        )
        .join(E, E.c.endpoint_id == D.c.endpoint_id)
        .join(outbox, outbox.c.message_id == D.c.message_id)
        .where(D.c.delivery_id.in_(list(delivery_ids)), D.c.lease_token == token)
        .order_by(D.c.seq)
    )
    return list(conn.execute(query).mappings())


def record_deliveries(conn: Connection, rows: Sequence[Mapping[str, Any]], token: str) -> None:
    """Write each attempt's effect on its delivery (only while the lease is still ours)."""
    if not rows:
        return
    conn.execute(
        update(D)
        .where(D.c.delivery_id == bindparam("b_id"), D.c.lease_token == token)
        .values(
            status=bindparam("b_status"),
            attempts=D.c.attempts + 1,
            next_attempt_at=bindparam("b_next"),
            lease_token=None,
            lease_until=None,
            last_status_code=bindparam("b_code"),
            last_error=bindparam("b_error"),
            delivered_at=bindparam("b_delivered_at"),
        ),
        [
            {
                "b_id": r["delivery_id"],
                "b_status": r["status"],
                "b_next": r["next_attempt_at"],
                "b_code": r["status_code"],
                "b_error": r["error"],
                "b_delivered_at": r["delivered_at"],
            }
            for r in rows
        ],
    )


def insert_attempts(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        conn.execute(insert(A), list(rows))


# -- the log and replays --------------------------------------------------------------------


def list_deliveries(
    conn: Connection,
    *,
    limit: int,
    after: str | None,
    endpoint_id: str | None,
    status: str | None,
    member_id: str | None,
) -> list[RowMapping]:
    """Newest first (delivery ids are time-ordered)."""
    query = select(D).order_by(D.c.delivery_id.desc()).limit(limit)
    if after is not None:
        query = query.where(D.c.delivery_id < after)
    if endpoint_id is not None:
        query = query.where(D.c.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(D.c.status == status)
    if member_id is not None:
        query = query.where(D.c.member_key == member_id)
    return list(conn.execute(query).mappings())


def get_delivery(conn: Connection, delivery_id: str) -> RowMapping | None:
    return conn.execute(select(D).where(D.c.delivery_id == delivery_id)).mappings().first()


def list_attempts(conn: Connection, delivery_id: str) -> list[RowMapping]:
    query = select(A).where(A.c.delivery_id == delivery_id).order_by(A.c.attempt_id)
    return list(conn.execute(query).mappings())


def reset_deliveries(conn: Connection, where: Any, now: datetime) -> int:
    """Make deliveries due again from their first attempt; their attempt log is kept."""
    query = (
        update(D)
        .where(where)
        .values(
            status="pending",
            attempts=0,
            next_attempt_at=now,
            lease_token=None,
            lease_until=None,
            delivered_at=None,
        )
    )
    return conn.execute(query).rowcount


def range_filter(
    endpoint_id: str, since: datetime, until: datetime | None, only_failed: bool
) -> Any:
    clauses = [D.c.endpoint_id == endpoint_id, D.c.created_at >= since]
    if until is not None:
        clauses.append(D.c.created_at < until)
    if only_failed:
        clauses.append(D.c.status == "failed")
    else:
        clauses.append(D.c.status != "pending")
    return and_(*clauses)


def id_filter(delivery_id: str) -> Any:
    return D.c.delivery_id == delivery_id
