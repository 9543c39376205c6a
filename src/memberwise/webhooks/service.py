"""Endpoints the platform registers, the fan-out of the outbox to them, and the delivery log.

Sending itself (HTTP, concurrency, leases) is in :mod:`memberwise.webhooks.sender`; the retry
rules in :mod:`memberwise.webhooks.policy`. Nothing here commits: callers own the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping, select

from memberwise.kit.errors import Conflict, NotFound
from memberwise.kit.ids import new_id
from memberwise.kit.outbox import outbox
from memberwise.kit.pagination import Page, decode_cursor, encode_cursor
from memberwise.kit.time import utcnow
from memberwise.privacy import service as privacy
from memberwise.privacy.crypto import FieldCipher
from memberwise.privacy.schemas import Principal
from memberwise.webhooks import repository, signing
from memberwise.webhooks.schemas import (
    AttemptOut,
    DeliveryOut,
    EndpointCreate,
    EndpointCreated,
    EndpointOut,
    EndpointUpdate,
    ReplayRange,
    SecretRotated,
)
from memberwise.webhooks.tables import webhook_deliveries

#: Outbox rows are kept this long after fan-out: the window in which a delivery can be
#: replayed (a replay re-sends the stored message under its original ``webhook-id``).
RETENTION = timedelta(days=30)


class EndpointNotFound(NotFound):
    code = "webhook_endpoint_not_found"


class DeliveryNotFound(NotFound):
    code = "webhook_delivery_not_found"


class DeliveryInFlight(Conflict):
    code = "webhook_delivery_pending"


class MessageExpired(Conflict):
    code = "webhook_message_expired"


def _secret_context(secret_id: str) -> str:
    return f"webhook_secrets.secret:{secret_id}"


def _endpoint_out(row: RowMapping) -> EndpointOut:
    return EndpointOut(
        endpoint_id=row["endpoint_id"],
        url=row["url"],
        description=row["description"],
        event_types=json.loads(row["event_types"]),
        status=row["status"],
        disabled_reason=row["disabled_reason"],
        consecutive_failures=row["consecutive_failures"],
        failing_since=row["failing_since"],
        created_at=row["created_at"],
    )


def _add_secret(conn: Connection, cipher: FieldCipher, endpoint_id: str, now: datetime) -> str:
    secret, secret_id = signing.new_secret(), f"whs_{new_id()}"
    repository.insert_secret(
        conn,
        {
            "secret_id": secret_id,
            "endpoint_id": endpoint_id,
            "secret": cipher.seal(secret, context=_secret_context(secret_id)),
            "created_at": now,
            "expires_at": None,
        },
    )
    return secret


def create_endpoint(
    conn: Connection, cipher: FieldCipher, body: EndpointCreate, *, actor: Principal
) -> EndpointCreated:
    """Register an endpoint and make its first signing secret (returned once)."""
    now = utcnow()
    endpoint_id = f"ep_{new_id()}"
    row = {
        "endpoint_id": endpoint_id,
        "url": str(body.url),
        "description": body.description,
        "event_types": json.dumps(sorted({t.value for t in body.event_types})),
        "status": "active",
        "disabled_reason": None,
        "consecutive_failures": 0,
        "failing_since": None,
        "created_at": now,
        "updated_at": now,
    }
    repository.insert_endpoint(conn, row)
    secret = _add_secret(conn, cipher, endpoint_id, now)
    privacy.audit(conn, actor, "webhook.endpoint_created", "webhook_endpoint", endpoint_id)
    out = _endpoint_out(repository.get_endpoint(conn, endpoint_id))  # type: ignore[arg-type]
    return EndpointCreated(**out.model_dump(), secret=secret)


def get_endpoint(conn: Connection, endpoint_id: str) -> EndpointOut:
    """Raises EndpointNotFound when there is no such endpoint."""
    row = repository.get_endpoint(conn, endpoint_id)
    if row is None:
        raise EndpointNotFound(f"no webhook endpoint {endpoint_id!r}")
    return _endpoint_out(row)


def list_endpoints(conn: Connection) -> list[EndpointOut]:
    return [_endpoint_out(r) for r in repository.list_endpoints(conn)]


def update_endpoint(
    conn: Connection, endpoint_id: str, body: EndpointUpdate, *, actor: Principal
) -> EndpointOut:
    """Change the subscribed types or description, or disable / re-enable the endpoint.

    Raises EndpointNotFound when there is no such endpoint."""
    get_endpoint(conn, endpoint_id)
    values: dict[str, Any] = {"updated_at": utcnow()}
    if "description" in body.model_fields_set:
        values["description"] = body.description
    if body.event_types is not None:
        values["event_types"] = json.dumps(sorted({t.value for t in body.event_types}))
    if body.enabled is True:
        values.update(
            status="active", disabled_reason=None, consecutive_failures=0, failing_since=None
        )
    elif body.enabled is False:
        values.update(status="disabled", disabled_reason=f"disabled by {actor.name}")
    repository.update_endpoint(conn, endpoint_id, values)
    privacy.audit(
        conn,
        actor,
        "webhook.endpoint_updated",
        "webhook_endpoint",
        endpoint_id,
        details=body.model_dump(mode="json", exclude_unset=True),
    )
    return get_endpoint(conn, endpoint_id)


def delete_endpoint(conn: Connection, endpoint_id: str, *, actor: Principal) -> None:
    """Remove an endpoint with its secrets and delivery log.

    Raises EndpointNotFound when there is no such endpoint."""
    if repository.delete_endpoint(conn, endpoint_id) == 0:
        raise EndpointNotFound(f"no webhook endpoint {endpoint_id!r}")
    privacy.audit(conn, actor, "webhook.endpoint_deleted", "webhook_endpoint", endpoint_id)


def rotate_secret(
    conn: Connection,
    cipher: FieldCipher,
    endpoint_id: str,
    *,
    keep_previous: timedelta,
    actor: Principal,
) -> SecretRotated:
    """A new signing secret; the older ones keep signing for ``keep_previous`` at most.

    Raises EndpointNotFound when there is no such endpoint."""
    get_endpoint(conn, endpoint_id)
    now = utcnow()
    expires = now + keep_previous
    repository.expire_secrets(conn, endpoint_id, expires)
    secret = _add_secret(conn, cipher, endpoint_id, now)
    privacy.audit(conn, actor, "webhook.secret_rotated", "webhook_endpoint", endpoint_id)
    return SecretRotated(
        endpoint_id=endpoint_id,
        secret=secret,
        previous_expires_at=expires if keep_previous > timedelta(0) else None,
    )


def signing_secrets(
    conn: Connection, cipher: FieldCipher, endpoint_ids: Sequence[str], now: datetime
) -> dict[str, list[str]]:
    """Each endpoint's secrets that sign now, newest first."""
    out: dict[str, list[str]] = {}
    for row in repository.valid_secrets(conn, endpoint_ids, now):
        secret = cipher.open(row["secret"], context=_secret_context(row["secret_id"]))
        out.setdefault(row["endpoint_id"], []).append(secret)
    return out


def dispatch(conn: Connection, *, now: datetime, limit: int = 5000) -> int:
    """Fan new outbox rows out to the active endpoints subscribed to their type; returns the
    number of outbox rows handled. Safe to run twice or concurrently: a delivery is unique per
    (endpoint, message)."""
    rows = repository.undispatched(conn, limit)
    if not rows:
        return 0
    endpoints = [
        (e["endpoint_id"], frozenset(json.loads(e["event_types"])))
        for e in repository.active_endpoints(conn)
    ]
    deliveries = [
        {
            "delivery_id": f"dlv_{new_id()}",
            "endpoint_id": endpoint_id,
            "message_id": r["message_id"],
            "seq": r["seq"],
            "event_type": r["event_type"],
            "member_key": r["member_id"] or "",
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "lease_token": None,
            "lease_until": None,
            "last_status_code": None,
            "last_error": None,
            "created_at": now,
            "delivered_at": None,
        }
        for r in rows
        for endpoint_id, types in endpoints
        if not types or r["event_type"] in types
    ]
    repository.insert_deliveries(conn, deliveries)
    repository.mark_dispatched(conn, [r["seq"] for r in rows], now)
    return len(rows)


def prune(conn: Connection, *, now: datetime) -> int:
    """Drop outbox rows older than the replay window that no delivery still waits on."""
    return repository.prune_outbox(conn, now - RETENTION)


def _delivery_out(row: RowMapping) -> DeliveryOut:
    return DeliveryOut(
        delivery_id=row["delivery_id"],
        endpoint_id=row["endpoint_id"],
        message_id=row["message_id"],
        event_type=row["event_type"],
        member_id=row["member_key"] or None,
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
    )


def list_deliveries(
    conn: Connection,
    *,
    limit: int,
    after: str | None = None,
    endpoint_id: str | None = None,
    status: str | None = None,
    member_id: str | None = None,
) -> Page[DeliveryOut]:
    """The delivery log, newest first."""
    rows = repository.list_deliveries(
        conn,
        limit=limit + 1,
        after=decode_cursor(after),
        endpoint_id=endpoint_id,
        status=status,
        member_id=member_id,
    )
    items = [_delivery_out(r) for r in rows[:limit]]
    cursor = encode_cursor(items[-1].delivery_id) if len(rows) > limit else None
    return Page(items=items, next_cursor=cursor)


def list_attempts(conn: Connection, delivery_id: str) -> list[AttemptOut]:
    """Every attempt of one delivery, oldest first. Raises DeliveryNotFound."""
    if repository.get_delivery(conn, delivery_id) is None:
        raise DeliveryNotFound(f"no webhook delivery {delivery_id!r}")
    return [AttemptOut(**dict(r)) for r in repository.list_attempts(conn, delivery_id)]


def _still_stored() -> Any:
    return webhook_deliveries.c.message_id.in_(select(outbox.c.message_id))


def replay_delivery(conn: Connection, delivery_id: str, *, actor: Principal) -> DeliveryOut:
    """Send one delivery again under its original ``webhook-id``.

    Raises DeliveryNotFound, DeliveryInFlight when it is still being retried, and
    MessageExpired when the message is past the replay window."""
    row = repository.get_delivery(conn, delivery_id)
    if row is None:
        raise DeliveryNotFound(f"no webhook delivery {delivery_id!r}")
    if row["status"] == "pending":
        raise DeliveryInFlight("the delivery is still pending; it is retried on its own")
    where = repository.id_filter(delivery_id) & _still_stored()
    if repository.reset_deliveries(conn, where, utcnow()) == 0:
        raise MessageExpired(f"the message is older than the {RETENTION.days}-day replay window")
    privacy.audit(conn, actor, "webhook.replayed", "webhook_delivery", delivery_id)
    return _delivery_out(repository.get_delivery(conn, delivery_id))  # type: ignore[arg-type]


def replay_range(conn: Connection, endpoint_id: str, body: ReplayRange, *, actor: Principal) -> int:
    """Send again every finished delivery to ``endpoint_id`` made in the range (or only the
    failed ones); returns how many. Raises EndpointNotFound."""
    get_endpoint(conn, endpoint_id)
    where = (
        repository.range_filter(endpoint_id, body.since, body.until, body.only_failed)
        & _still_stored()
    )
    count = repository.reset_deliveries(conn, where, utcnow())
    privacy.audit(
        conn,
        actor,
        "webhook.replayed",
        "webhook_endpoint",
        endpoint_id,
        details={**body.model_dump(mode="json"), "count": count},
    )
    return count
