"""What the ledgers share: their refusals (stable codes), stored answers to idempotent requests,
the retry of a unit of work that lost a lock race, and who the member is at a moment (tier).

The ledgers themselves are :mod:`memberwise.ledger.points` (points: lots, spends, expiry,
refund reversal), :mod:`memberwise.ledger.coupons` (templates, issuance, redemption, budgets)
and :mod:`memberwise.ledger.orders` (orders and refunds, which drive both). Services never
commit; the caller's unit of work does (see :func:`write`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from memberwise.kit.db import transaction
from memberwise.kit.errors import Conflict, InvalidRequest, MemberwiseError, NotFound
from memberwise.kit.time import utcnow
from memberwise.ledger import report_repository, repository
from memberwise.members import repository as members_repository
from memberwise.program.schemas import Program

T = TypeVar("T")


# -- refusals ------------------------------------------------------------------------------------


class InsufficientPoints(Conflict):
    code = "insufficient_points"


class CouponAlreadyRedeemed(Conflict):
    code = "coupon_already_redeemed"


class CouponExpired(Conflict):
    code = "coupon_expired"


class BudgetExhausted(Conflict):
    code = "budget_exhausted"


class CouponNotApplicable(InvalidRequest):
    code = "coupon_not_applicable"


class PerMemberLimit(Conflict):
    code = "per_member_limit"


class CouponNotFound(NotFound):
    code = "coupon_not_found"


class CouponTemplateNotFound(NotFound):
    code = "coupon_template_not_found"


class NotForPoints(InvalidRequest):
    code = "coupon_not_for_points"


class PointsNotAllowed(InvalidRequest):
    code = "points_not_allowed"


class OrderExists(Conflict):
    code = "order_exists"


class OrderNotFound(NotFound):
    code = "order_not_found"


class InvalidOrder(InvalidRequest):
    code = "invalid_order"


class RefundExists(Conflict):
    code = "refund_exists"


class RefundTooLarge(InvalidRequest):
    code = "refund_exceeds_order"


class OrderRefunded(Conflict):
    code = "order_refunded"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class LedgerBusy(Conflict):
    """Another writer held the rows too long (or a deadlock was broken); retry the request."""

    code = "ledger_busy"


class MemberUnknown(NotFound):
    code = "member_not_found"


class AwardNotConfigured(InvalidRequest):
    code = "award_not_configured"


class NothingToAdjust(InvalidRequest):
    code = "invalid_adjustment"


# -- hashing requests and storing answers ----------------------------------------------------------


def request_hash(payload: Any) -> str:
    """A stable digest of a request body (keys sorted), to tell a replay from a new request."""
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def idempotent(
    conn: Connection,
    scope: str,
    key: str,
    payload: Any,
    model: type[BaseModel],
    work: Callable[[], BaseModel],
) -> tuple[BaseModel, bool]:
    """Do ``work`` once per ``(scope, key)``; a replay returns the stored first answer.

    Returns the answer and whether it is a replay. The key is claimed first, in the same
    transaction as the work, so a concurrent duplicate waits for the first to finish and then
    reads its answer; a refusal rolls back the claim too, so a refused request may be retried.

    Raises IdempotencyKeyReused when the key was used before with a different body.
    """
    digest = request_hash(payload)
    if not repository.claim_key(conn, scope, key, digest, utcnow()):
        stored = repository.get_key(conn, scope, key)
        if stored is None or not stored["response"]:  # pragma: no cover - claimed in our tx
            raise LedgerBusy("the same request is being processed; retry it in a moment")
        if stored["request_hash"] != digest:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used for a different request; use a new key"
            )
        return model.model_validate_json(stored["response"]), True
    answer = work()
    repository.store_answer(conn, scope, key, 200, answer.model_dump_json())
    return answer, False


# -- units of work ---------------------------------------------------------------------------------

_RETRIES = 3


def _contention(exc: DBAPIError) -> bool:
    """A lost lock race: PostgreSQL deadlock / serialization failure, SQLite busy."""
    code = getattr(exc.orig, "sqlstate", None)
    if code in ("40P01", "40001", "55P03"):
        return True
    return isinstance(exc, OperationalError) and "locked" in str(exc.orig).lower()


def write(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run ``work`` in one transaction, retried when it lost a lock race.

    Raises LedgerBusy when it keeps losing (never a 500 for contention); a MemberwiseError from
    ``work`` rolls the transaction back and propagates.
    """
    for attempt in range(_RETRIES):
        try:
            with transaction(engine) as conn:
                return work(conn)
        except DBAPIError as exc:
            if not _contention(exc):
                raise
            time.sleep(0.01 * (attempt + 1))
    raise LedgerBusy("the ledger is busy with other writes to the same rows; retry shortly")


# -- who the member is -----------------------------------------------------------------------------


def needs_tier(program: Program) -> bool:
    """Whether the member's tier can change an order: tier multipliers or tier-only coupons
    (when neither, placing an order skips the tier lookup)."""
    return bool(program.points.tier_multipliers) or any(t.tiers for t in program.coupons.values())


def member_exists(conn: Connection, member_id: str) -> None:
    """Raises MemberUnknown when the platform never registered (nor sent events of) the member."""
    if not members_repository.exists(conn, member_id):
        raise MemberUnknown(f"no member {member_id!r}")


def refusal(exc: MemberwiseError) -> dict[str, Any]:
    """The JSON body of a refusal (as the API renders it)."""
    return exc.to_dict()


def spend_by_member(
    conn: Connection, member_ids: Sequence[str], since: datetime, until: datetime
) -> dict[str, tuple[int, int]]:
    """(orders, money paid net of refunds, in fen) per member for orders placed in
    [since, until): the outcome an experiment on the members measures."""
    return report_repository.spend_by_member(conn, member_ids, since, until)


def points_redeemed_by_member(
    conn: Connection, member_ids: Sequence[str], since: datetime, until: datetime
) -> dict[str, int]:
    """Points each member spent (on orders or coupons) in [since, until): an experiment's
    "points redeemed" metric."""
    return report_repository.points_redeemed_by_member(conn, member_ids, since, until)


def points_expiring(conn: Connection, now: datetime, until: datetime) -> list[tuple[str, str, int]]:
    """(member, lot, points left) of available points expiring in (now, until]: a journey's
    "your points are about to expire" trigger."""
    return report_repository.points_expiring(conn, now, until)


def lots_still_held(conn: Connection, lot_ids: Sequence[str]) -> set[str]:
    """Of ``lot_ids``, those still holding available points (not spent, not expired)."""
    return report_repository.lots_still_held(conn, lot_ids)


def points_liability(conn: Connection, now: datetime) -> dict[str, int]:
    """Points owed: ``available`` and ``pending`` balances, and the available lot points
    ``expiring_30d`` / ``expiring_90d`` from ``now``."""
    return report_repository.points_liability(conn, now)


def coupon_budget_use(conn: Connection) -> list[tuple[str, int, int, int]]:
    """(template, issued, redeemed, money redeemed in fen) per coupon template."""
    return report_repository.coupon_budget_use(conn)
