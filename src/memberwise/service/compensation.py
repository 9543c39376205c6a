"""Compensation under an authority matrix: points, a coupon or a money credit, paid exactly once
through the existing ledgers; what is above the payer's limits waits for approval.

The program lists roles lowest first, each with a per-case limit and a daily budget in fen
(``service.authority``). A staff member's role is their desk agent row's ``authority`` (admin
keys and the system act as the highest role). A request within the requester's per-case limit
and remaining daily budget is paid at once; any other waits in the approvals queue for a role
whose per-case limit covers it, and its approver's daily budget pays for it. Budgets move only
by a guarded ``used = used + :v WHERE used + :v <= :limit`` and a pending request is decided by a
guarded ``status = 'pending_approval'`` update, so two concurrent approvals can neither pass a
budget nor pay one request twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from memberwise.kit.errors import Conflict, Forbidden, NotFound
from memberwise.kit.ids import new_id
from memberwise.kit.time import as_utc, utcnow
from memberwise.ledger import coupons, points
from memberwise.ledger.benefits import period_of
from memberwise.ledger.service import request_hash
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import Principal, Role
from memberwise.program.schemas import Program
from memberwise.service import repository
from memberwise.service.schemas import (
    CompensationIn,
    CompensationKind,
    CompensationOut,
    DecisionIn,
)
from memberwise.service.service import TicketNotFound


class CompensationNotFound(NotFound):
    code = "compensation_not_found"


class AlreadyDecided(Conflict):
    code = "compensation_already_decided"


class AuthorityTooLow(Forbidden):
    code = "authority_too_low"


class BudgetExceeded(Conflict):
    code = "budget_exceeded"


class CompensationKeyReused(Conflict):
    code = "idempotency_key_reused"


def role_of(conn: Connection, program: Program, actor: Principal) -> str:
    """The actor's row of the authority matrix: their agent's ``authority``; admin (and the
    system) the highest; any other staff without an agent row the lowest."""
    names = list(program.service.authority)
    if actor.role is Role.admin:
        return names[-1]
    agent = repository.get_agent(conn, actor.staff_id) if actor.staff_id else None
    if agent is not None and agent["active"] and agent["authority"] in names:
        return str(agent["authority"])
    return names[0]


def value_of(program: Program, data: CompensationIn) -> int:
    """What a compensation costs in fen: points at the program's point value, a coupon at its
    face value (a percent coupon at its cap), money as is."""
    if data.kind is CompensationKind.points:
        return data.amount * program.points.point_value
    if data.kind is CompensationKind.coupon:
        template = coupons.template_of(program, data.coupon_template or "")
        return template.amount or (template.max_discount or 0)
    return data.amount


def _covering(program: Program, value: int) -> str | None:
    """The lowest role whose per-case limit covers ``value`` (None: none does)."""
    for name, rule in program.service.authority.items():
        if rule.per_case is None or value <= rule.per_case:
            return name
    return None


def _day(program: Program, at: datetime) -> str:
    return period_of(at, "day", program.display_timezone).label


def _out(row: RowMapping | dict[str, Any]) -> CompensationOut:
    return CompensationOut.model_validate({k: row[k] for k in CompensationOut.model_fields})


def _budget_key(actor: Principal) -> str:
    return actor.staff_id or actor.key_id


def compensate(
    conn: Connection,
    program: Program,
    ticket_id: str,
    data: CompensationIn,
    *,
    key: str,
    actor: Principal,
    at: datetime | None = None,
) -> CompensationOut:
    """Compensate the ticket's member, once per ``key``: paid now within the requester's
    authority, else queued for approval.

    Raises TicketNotFound, CouponTemplateNotFound, CompensationKeyReused, and the ledgers'
    refusals (e.g. coupon budget exhausted) -- in which case nothing is recorded.
    """
    at = as_utc(at or utcnow())
    ticket = repository.get_ticket(conn, ticket_id)
    if ticket is None:
        raise TicketNotFound(f"no ticket {ticket_id!r}")
    digest = request_hash(data)
    found = repository.compensation_by_key(conn, ticket_id, key)
    if found is not None:
        if found["request_hash"] != digest:
            raise CompensationKeyReused("this Idempotency-Key was used for another compensation")
        return _out(found)
    value = value_of(program, data)
    role = role_of(conn, program, actor)
    rule = program.service.authority[role]
    row: dict[str, Any] = {
        "compensation_id": new_id(),
        "ticket_id": ticket_id,
        "member_id": ticket["member_id"],
        "kind": data.kind.value,
        "amount": data.amount,
        "coupon_template": data.coupon_template,
        "value": value,
        "merchant_id": data.merchant_id,
        "reason": data.reason,
        "status": "pending_approval",
        "required_role": None,
        "requested_by": _budget_key(actor),
        "decided_by": None,
        "reference": None,
        "request_key": key,
        "request_hash": digest,
        "created_at": at,
        "decided_at": None,
    }
    within_case = rule.per_case is None or value <= rule.per_case
    if within_case and repository.consume_budget(
        conn, _budget_key(actor), _day(program, at), value, rule.daily
    ):
        row.update(status="paid", decided_by=_budget_key(actor), decided_at=at)
        row["reference"] = _pay(conn, program, row, actor, at)
    else:
        # Over the case limit: the lowest role covering it; over the day's budget: one above.
        names = list(program.service.authority)
        needed = _covering(program, value) or names[-1]
        if within_case:
            above = names[min(names.index(role) + 1, len(names) - 1)]
            needed = max(needed, above, key=names.index)
        row["required_role"] = needed
    repository.insert_compensation(conn, row)
    privacy.audit(
        conn,
        actor,
        "service.compensation" if row["status"] == "paid" else "service.compensation_requested",
        "ticket",
        ticket_id,
        member_id=ticket["member_id"],
        reason=data.reason,
        details={
            "kind": data.kind.value,
            "amount": data.amount,
            "value": value,
            "status": row["status"],
            "required_role": row["required_role"],
        },
    )
    _ticket_event(conn, row, "compensation", actor, at)
    return _out(row)


def _ticket_event(
    conn: Connection, row: dict[str, Any], kind: str, actor: Principal, at: datetime
) -> None:
    repository.insert_events(
        conn,
        [
            {
                "event_id": new_id(),
                "ticket_id": row["ticket_id"],
                "member_id": row["member_id"],
                "kind": kind,
                "metric": None,
                "late_seconds": None,
                "actor": _budget_key(actor),
                "details": {
                    "compensation_id": row["compensation_id"],
                    "status": row["status"],
                    "value": row["value"],
                },
                "at": at,
            }
        ],
    )


def _pay(
    conn: Connection, program: Program, row: dict[str, Any], actor: Principal, at: datetime
) -> str | None:
    """Pay through the ledgers under a key derived from the compensation (exactly once)."""
    key = f"service:{row['compensation_id']}"
    if row["kind"] == CompensationKind.points.value:
        change = points.adjust(
            conn,
            program,
            row["member_id"],
            int(row["amount"]),
            reason=f"service compensation, ticket {row['ticket_id']}: {row['reason']}",
            key=key,
            at=at,
            actor=actor,
        )
        return change.entry_id
    if row["kind"] == CompensationKind.coupon.value:
        issued = coupons.issue(
            conn,
            program,
            str(row["coupon_template"]),
            [row["member_id"]],
            key=key,
            source="service",
            at=at,
            actor=actor,
            strict=True,
        )
        return issued.coupons[0].coupon_id if issued.coupons else None
    # A money credit: this row is the platform's instruction to pay it out (audited).
    return None


def decide(
    conn: Connection,
    program: Program,
    compensation_id: str,
    data: DecisionIn,
    *,
    actor: Principal,
    at: datetime | None = None,
) -> CompensationOut:
    """Approve (and pay) or reject a pending compensation.

    Raises CompensationNotFound, AlreadyDecided, AuthorityTooLow (the approver's role is below
    the one required), BudgetExceeded (the approver's daily budget cannot take it; nothing
    changes).
    """
    at = as_utc(at or utcnow())
    row = repository.get_compensation(conn, compensation_id)
    if row is None:
        raise CompensationNotFound(f"no compensation {compensation_id!r}")
    if row["status"] != "pending_approval":
        raise AlreadyDecided(f"compensation {compensation_id} is {row['status']} already")
    names = list(program.service.authority)
    role = role_of(conn, program, actor)
    required = row["required_role"] if row["required_role"] in names else names[-1]
    if names.index(role) < names.index(required):
        raise AuthorityTooLow(
            f"this compensation needs the {required} role or above; you are {role}"
        )
    status = "paid" if data.approve else "rejected"
    values = {"decided_by": _budget_key(actor), "decided_at": at}
    if data.approve:
        # Refusals first, so a refused approval writes nothing. The budget's guarded update
        # then the decision's: of two concurrent decisions of one request, the second waits
        # on the request's row and finds nothing pending (its transaction, budget included,
        # rolls back).
        rule = program.service.authority[role]
        if rule.per_case is not None and int(row["value"]) > rule.per_case:
            raise AuthorityTooLow(f"{row['value']} fen is above the {role} per-case limit")
        if not repository.consume_budget(
            conn, _budget_key(actor), _day(program, at), int(row["value"]), rule.daily
        ):
            raise BudgetExceeded(
                f"your daily budget cannot take {row['value']} fen more; a higher role may "
                "approve it"
            )
    if not repository.decide_compensation(conn, compensation_id, status, values):
        raise AlreadyDecided(f"compensation {compensation_id} was decided meanwhile")
    updated = {**dict(row), "status": status, **values}
    if data.approve:
        updated["reference"] = _pay(conn, program, updated, actor, at)
        repository.set_compensation(conn, compensation_id, {"reference": updated["reference"]})
    privacy.audit(
        conn,
        actor,
        f"service.compensation_{status}",
        "ticket",
        row["ticket_id"],
        member_id=row["member_id"],
        reason=data.reason or None,
        details={"compensation_id": compensation_id, "value": int(row["value"])},
    )
    _ticket_event(conn, updated, f"compensation_{status}", actor, at)
    return _out(updated)


def approvals(conn: Connection, *, limit: int) -> list[CompensationOut]:
    """The approvals queue: pending compensations, oldest first."""
    return [_out(r) for r in repository.pending_approvals(conn, limit)]
