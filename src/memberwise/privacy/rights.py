"""Data-subject requests: access, copy, correction and erasure, with deadlines and a staff queue.

The platform files a request on the member's behalf; it lands in the staff queue (oldest
deadline first) with a due date from the program's preset (PIPL: 15 working days; GDPR: one
month) or a number of days. Staff complete or reject it; completing an access or copy request
makes the member's archive (everything held about them, machine-readable) available, a
correction applies the new values, an erasure forgets the member (see :mod:`.erasure`).
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine

from memberwise.kit.db import transaction
from memberwise.kit.errors import Conflict, InvalidRequest, NotFound
from memberwise.kit.ids import new_id
from memberwise.kit.lake import EventLake
from memberwise.kit.time import as_utc, utcnow
from memberwise.privacy import erasure, keys, repository
from memberwise.privacy.crypto import FieldCipher
from memberwise.privacy.schemas import (
    DataRequestIn,
    DataRequestOut,
    DeadlinePreset,
    Principal,
    RequestDeadline,
    RequestDecision,
    RequestKind,
    RequestStatus,
)
from memberwise.privacy.service import audit


class RequestNotFound(NotFound):
    code = "data_request_not_found"


class RequestClosed(Conflict):
    code = "data_request_closed"


class RequestKeyReused(Conflict):
    code = "data_request_key_reused"


class InvalidCorrection(InvalidRequest):
    code = "invalid_correction"


#: Fields a correction request may change (the member's own record).
CORRECTABLE = ("name", "phone", "email", "gender", "birth_year", "region", "city")

#: ``corrector(conn, cipher, member_id, fields, actor)``: applies a correction (the members
#: domain registers it; privacy cannot import members).
Corrector = Callable[[Connection, FieldCipher, str, dict[str, Any], Principal], None]
#: ``validator(fields)``: a sentence saying what is wrong with the new values, or None.
Validator = Callable[[dict[str, Any]], str | None]
_correctors: list[tuple[Corrector, Validator]] = []


def register_corrector(corrector: Corrector, validator: Validator) -> None:
    """Set how corrections are checked (when filed) and applied (when completed)."""
    _correctors[:] = [(corrector, validator)]


def due_at(received: datetime, deadline: RequestDeadline, timezone: str) -> datetime:
    """When a request received at ``received`` must be answered.

    Working days skip Saturdays and Sundays in the program's time zone (public holidays are
    not modelled: staff should not count on them). One month is the same day of the next
    month, or its last day when it has none (GDPR art. 12(3)).
    """
    local = as_utc(received).astimezone(ZoneInfo(timezone))
    if deadline.preset is DeadlinePreset.pipl_15_working_days:
        day, left = local, 15
        while left:
            day += timedelta(days=1)
            if day.weekday() < 5:
                left -= 1
        return as_utc(day)
    if deadline.preset is DeadlinePreset.gdpr_one_month:
        year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        last = calendar.monthrange(year, month)[1]
        return as_utc(local.replace(year=year, month=month, day=min(local.day, last)))
    return as_utc(local + timedelta(days=deadline.days))


def _out(row: Any, now: datetime) -> DataRequestOut:
    values = dict(row)
    overdue = values["status"] == RequestStatus.open.value and values["due_at"] < now
    values.pop("payload_enc", None)
    values.pop("idempotency_key", None)
    return DataRequestOut.model_validate({**values, "overdue": overdue})


def submit(
    conn: Connection,
    cipher: FieldCipher,
    member_id: str,
    data: DataRequestIn,
    *,
    deadline: RequestDeadline,
    timezone: str,
    actor: Principal,
    at: datetime | None = None,
) -> tuple[DataRequestOut, bool]:
    """File a request; returns it and whether it is new (idempotent by ``idempotency_key``).

    Raises InvalidCorrection (a correction without values, or of a field that cannot be
    corrected), RequestKeyReused (the key carried another kind of request).
    """
    now = at or utcnow()
    payload = None
    if data.kind is RequestKind.correction:
        fields = data.corrections or {}
        bad = sorted(set(fields) - set(CORRECTABLE))
        if not fields or bad:
            raise InvalidCorrection(
                f"a correction names the fields to change among {', '.join(CORRECTABLE)}"
                + (f"; not {', '.join(bad)}" if bad else "")
            )
        for _, validator in _correctors:
            if (problem := validator(fields)) is not None:
                raise InvalidCorrection(problem)
        # The new values are PII: sealed under the member's own key, shredded with it.
        member_key = keys.member_cipher(conn, cipher, member_id, create=True)
        payload = member_key.seal(json.dumps(fields), context=f"data_requests:{member_id}")
    request_id = new_id()
    values: dict[str, Any] = {
        "request_id": request_id,
        "member_id": member_id,
        "kind": data.kind.value,
        "status": RequestStatus.open.value,
        "idempotency_key": data.idempotency_key,
        "received_at": now,
        "due_at": due_at(now, deadline, timezone),
        "deadline": deadline.preset.value
        if deadline.preset is not DeadlinePreset.days
        else f"{deadline.days}_days",
        "channel": data.channel,
        "payload_enc": payload,
        "assignee": None,
        "completed_at": None,
        "outcome": None,
    }
    if repository.insert_request(conn, values):
        audit(
            conn,
            actor,
            f"data_request.{data.kind.value}",
            "data_request",
            request_id,
            member_id=member_id,
        )
        return _out(values, now), True
    first = repository.get_request_by_key(conn, member_id, data.idempotency_key)
    assert first is not None
    if first["kind"] != data.kind.value:
        raise RequestKeyReused(f"key {data.idempotency_key!r} filed a {first['kind']} request")
    return _out(first, now), False


def get_request(conn: Connection, request_id: str) -> DataRequestOut:
    """Raises RequestNotFound."""
    row = repository.get_request(conn, request_id)
    if row is None:
        raise RequestNotFound(f"no data request {request_id!r}")
    return _out(row, utcnow())


def queue(
    conn: Connection,
    *,
    status: RequestStatus | None = RequestStatus.open,
    member_id: str | None = None,
    limit: int = 100,
) -> list[DataRequestOut]:
    """The staff queue: requests by deadline, oldest first."""
    now = utcnow()
    rows = repository.list_requests(
        conn, status=status.value if status else None, member_id=member_id, limit=limit
    )
    return [_out(r, now) for r in rows]


def _close(
    conn: Connection, request_id: str, status: RequestStatus, outcome: str, actor: Principal
) -> None:
    values = {
        "status": status.value,
        "completed_at": utcnow(),
        "outcome": outcome,
        "assignee": actor.staff_id or actor.key_id,
        "payload_enc": None,
    }
    if not repository.close_request(conn, request_id, values):
        raise RequestClosed(f"data request {request_id!r} is closed already")
    audit(conn, actor, f"data_request.{status.value}", "data_request", request_id, reason=outcome)


def decide(
    engine: Engine,
    lake: EventLake,
    home: Path,
    cipher: FieldCipher,
    secret: bytes,
    request_id: str,
    decision: RequestDecision,
    *,
    actor: Principal,
) -> DataRequestOut:
    """Staff complete or reject a request; completing does what was asked.

    Raises RequestNotFound, RequestClosed, MemberErased (erasure of an erased member).
    """
    with transaction(engine) as conn:
        row = repository.get_request(conn, request_id)
        if row is None:
            raise RequestNotFound(f"no data request {request_id!r}")
        if row["status"] != RequestStatus.open.value:
            raise RequestClosed(f"data request {request_id!r} is closed already")
        member_id, kind = row["member_id"], RequestKind(row["kind"])
        if decision.action == "reject":
            _close(conn, request_id, RequestStatus.rejected, decision.reason or "rejected", actor)
        elif kind in (RequestKind.access, RequestKind.copy):
            outcome = f"archive ready at /v1/data-requests/{request_id}/archive"
            _close(conn, request_id, RequestStatus.completed, outcome, actor)
        elif kind is RequestKind.correction:
            member_key = keys.member_cipher(conn, cipher, member_id)
            fields = json.loads(
                member_key.open(row["payload_enc"], context=f"data_requests:{member_id}")
            )
            for corrector, _ in _correctors:
                corrector(conn, cipher, member_id, fields, actor)
            outcome = f"corrected {', '.join(sorted(fields))}"
            _close(conn, request_id, RequestStatus.completed, outcome, actor)
    if decision.action == "complete" and kind is RequestKind.erasure:
        erasure.erase_member(
            engine, lake, home, cipher, secret, member_id, actor=actor, reason="request"
        )
        with transaction(engine) as conn:
            _close(conn, request_id, RequestStatus.completed, "erased", actor)
    with transaction(engine) as conn:
        return get_request(conn, request_id)


def archive(
    conn: Connection, cipher: FieldCipher, lake: EventLake, member_id: str
) -> dict[str, Any]:
    """Everything held about the member, machine-readable: every registered holder's rows
    (their record with PII opened, ledgers, tiers, profile, predictions, recommendations,
    consents, requests, audit entries about them) and their events in the lake (including
    those of ids merged into theirs)."""
    ctx = erasure.HolderContext(conn, cipher)
    store = {}
    for holder in erasure.holders():
        exported = holder.export(ctx, member_id)
        if exported:
            store[holder.name] = exported
    ids = [member_id, *repository.merged_into(conn, member_id)]
    return {
        "member_id": member_id,
        "generated_at": utcnow().isoformat(),
        "format": "memberwise.archive/1",
        "store": store,
        "events": lake_events(lake, ids),
    }


def lake_events(lake: EventLake, member_ids: list[str]) -> list[dict[str, Any]]:
    """The events of ``member_ids`` in the lake, oldest first, JSON-ready."""
    con = lake.connect()  # (a lake on an object store is registered on it)
    try:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.execute(
            f"SELECT * FROM ({lake.events_sql()}) WHERE member_id IN "
            "(SELECT unnest(?::VARCHAR[])) ORDER BY ts, event_id",
            [member_ids],
        )
        names = [d[0] for d in rows.description]
        out = []
        for values in rows.fetchall():
            record = dict(zip(names, values, strict=True))
            out.append(
                {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in record.items()}
            )
        return out
    finally:
        con.close()
