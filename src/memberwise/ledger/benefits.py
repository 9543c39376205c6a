"""Benefits a member holds and the counters behind them: express-refund credit, return-guarantee
cards, monthly coupons and partner perks.

Which benefits a member holds comes from their tier and plans (the membership domain); what each
benefit is comes from the program's catalog (:mod:`memberwise.program.benefits`). This module
keeps what is used: ``benefit_counters`` holds one row per member, counter and period, changed
only by a guarded ``used = used + :n`` in one statement, so concurrent uses never pass a limit;
``benefit_uses`` holds one row per use under its idempotency key, so a replayed request finds
its first answer and changes nothing. Every change writes an audit row. Nothing here commits.

Periods are days, months or years in the program's display time zone: a return card used at
23:59 in Shanghai counts for that day; a minute later, for the next.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from sqlalchemy import Connection, RowMapping

from memberwise.kit.errors import Conflict, Forbidden, MemberwiseError, NotFound
from memberwise.kit.time import as_utc
from memberwise.ledger import benefit_repository, coupons
from memberwise.ledger import service as ledger
from memberwise.membership import service as membership
from memberwise.membership.service import Entitlements
from memberwise.privacy import consent
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import Principal, Purpose
from memberwise.program.benefits import (
    AnyBenefit,
    ExpressRefund,
    FreeShipping,
    MonthlyCoupons,
    PartnerPerk,
    PointsMultiplier,
    ReturnCards,
)
from memberwise.program.schemas import Program

# -- errors -----------------------------------------------------------------------------------


class BenefitNotHeld(Forbidden):
    """The member's tier and plans do not grant the benefit (now)."""

    code = "benefit_not_held"


class ExpressRefundCreditExceeded(Conflict):
    code = "express_refund_credit_exceeded"


class ExpressRefundNotFound(NotFound):
    code = "express_refund_not_found"


class ReturnCardsUsedUp(Conflict):
    code = "return_cards_used_up"


class PerkAlreadyClaimed(Conflict):
    code = "perk_already_claimed"


# -- answers ----------------------------------------------------------------------------------


class BenefitStatus(BaseModel):
    """One benefit a member holds, with what remains of it where it is counted."""

    name: str
    kind: str
    description: str
    #: The benefit's numbers from the program (e.g. ``{"credit_limit": 1000000}``).
    terms: dict[str, Any]
    #: The counted allowance of the current period (fen of credit, cards, coupons, claims).
    limit: int | None = None
    used: int | None = None
    remaining: int | None = None
    #: The current period (``2026-11-24``, ``2026-11``, ``2026``) and when the next begins.
    period: str | None = None
    resets_at: datetime | None = None


class MemberBenefits(BaseModel):
    member_id: str
    at: datetime
    benefits: list[BenefitStatus]


class BenefitUse(BaseModel):
    """One use of a counted benefit, as recorded (a replay answers the same)."""

    use_id: str
    member_id: str
    benefit: str
    kind: str
    period: str
    amount: int
    reference: str | None
    status: str
    created_at: datetime
    settled_at: datetime | None
    #: What remains of the counter after this use (at the time of the answer).
    remaining: int | None = None


class ExpressRefundIn(BaseModel):
    """The platform pays ``amount`` fen of the member's order ``order_id`` back now, as that
    order's refund ``refund_id`` (see :mod:`memberwise.ledger.aftersales`)."""

    refund_id: str = Field(min_length=1, max_length=128)
    order_id: str = Field(min_length=1, max_length=128)
    amount: int = Field(gt=0, le=1_000_000_000)


class ReturnCardIn(BaseModel):
    """Use one return-guarantee card on the member's order ``order_id``; ``use_id`` is the
    idempotency key."""

    use_id: str = Field(min_length=1, max_length=128)
    order_id: str = Field(min_length=1, max_length=128)


class PerkClaimIn(BaseModel):
    """Claim partner perk ``benefit`` for the current period; ``claim_id`` is the key."""

    benefit: str = Field(min_length=1, max_length=128)
    claim_id: str = Field(min_length=1, max_length=128)


# -- periods ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """A day, month or year in a time zone: its label and the UTC instant the next begins."""

    label: str
    ends_at: datetime


def period_of(at: datetime, unit: str, timezone: str) -> Period:
    """The ``unit`` ("day", "month", "year" or "" for none) containing ``at`` in ``timezone``."""
    zone = ZoneInfo(timezone)
    local = as_utc(at).astimezone(zone)
    if unit == "day":
        start = local.date()
        label, nxt = start.isoformat(), start + timedelta(days=1)
    elif unit == "month":
        label = f"{local.year:04d}-{local.month:02d}"
        nxt = date(local.year + local.month // 12, local.month % 12 + 1, 1)
    elif unit == "year":
        label, nxt = f"{local.year:04d}", date(local.year + 1, 1, 1)
    else:
        return Period("", datetime.max.replace(tzinfo=zone))
    return Period(label, as_utc(datetime.combine(nxt, time(0), tzinfo=zone)))


# -- which benefits -------------------------------------------------------------------------


def held_benefits(conn: Connection, program: Program, member_id: str, at: datetime) -> list[str]:
    """The names of the program's benefits the member holds at ``at`` (tier and plans)."""
    return [n for n in entitlements(conn, program, member_id, at).benefits if n in program.benefits]


def used_since(
    conn: Connection, member_id: str, benefits: Collection[str], since: datetime
) -> bool:
    """Whether the member used any of ``benefits`` (by name) since ``since``: an express
    refund, a return card, a partner perk claimed or monthly coupons issued. A paid plan's
    "full refund if no benefit was used" asks this."""
    if not benefits:
        return False
    return benefit_repository.benefit_used_since(conn, member_id, list(benefits), since)


def order_terms(
    conn: Connection, program: Program, member_id: str, goods: int, at: datetime
) -> tuple[Decimal, bool]:
    """What the member's benefits do to an order of ``goods`` fen (at the prices charged): the
    points multiplier (1 without one) and whether shipping is free (a free-shipping benefit
    whose ``min_order`` the goods reach). One entitlements read, none when the program grants
    neither kind of benefit."""
    multipliers = {n: b for n, b in program.benefits.items() if isinstance(b, PointsMultiplier)}
    shipping = {n: b for n, b in program.benefits.items() if isinstance(b, FreeShipping)}
    if not multipliers and not shipping:
        return Decimal(1), False
    held = entitlements(conn, program, member_id, at).benefits
    bonus = max((multipliers[n].multiplier for n in held if n in multipliers), default=Decimal(1))
    free = any(goods >= shipping[n].min_order for n in held if n in shipping)
    return bonus, free


def entitlements(conn: Connection, program: Program, member_id: str, at: datetime) -> Entitlements:
    """The member's tier, plans and benefit names at ``at`` (the membership domain's answer)."""
    return membership.entitlements(conn, program, member_id, at)


def _held(program: Program, held: Collection[str], kind: type[AnyBenefit]) -> list[tuple[str, Any]]:
    return [
        (name, program.benefits[name])
        for name in held
        if name in program.benefits and isinstance(program.benefits[name], kind)
    ]


def _use_out(row: RowMapping, remaining: int | None = None) -> BenefitUse:
    return BenefitUse(
        use_id=row["use_id"],
        member_id=row["member_id"],
        benefit=row["benefit"],
        kind=row["kind"],
        period=row["period"],
        amount=int(row["amount"]),
        reference=row["reference"],
        status=row["status"],
        created_at=row["created_at"],
        settled_at=row["settled_at"],
        remaining=remaining,
    )


def _replay(row: RowMapping, member_id: str, **same: Any) -> None:
    """Raises IdempotencyKeyReused unless the stored use has these values."""
    differs = [k for k, v in {"member_id": member_id, **same}.items() if row[k] != v]
    if differs:
        raise ledger.IdempotencyKeyReused(
            f"this key was used before with another {differs[0]}; send a new key for a new use"
        )


def _record(
    conn: Connection,
    use: dict[str, Any],
    limit: int,
    refuse: Callable[[], MemberwiseError],
    **same: Any,
) -> tuple[RowMapping, bool]:
    """Take ``use["amount"]`` from the use's counter within ``limit``, then record the use;
    returns the use's row and whether it is new.

    Raises ``refuse()`` when the limit would be passed, with nothing changed. A concurrent twin
    under the same key that committed first wins: this take is given back and the twin's row
    answered (or IdempotencyKeyReused raised when the twin had other values).
    """
    member_id, counter, period = use["member_id"], use["counter"], use["period"]
    amount = int(use["amount"])
    if amount > limit or not benefit_repository.take_counter(
        conn, member_id, counter, period, amount, limit, use["created_at"]
    ):
        raise refuse()
    if not benefit_repository.insert_use(conn, **use):
        benefit_repository.give_back_counter(
            conn, member_id, counter, period, amount, use["created_at"]
        )
        twin = benefit_repository.get_use(conn, use["use_id"])
        assert twin is not None  # the key's row exists: insert_ignore found it
        _replay(twin, member_id, **same)
        return twin, False
    row = benefit_repository.get_use(conn, use["use_id"])
    assert row is not None
    return row, True


# -- status -----------------------------------------------------------------------------------


def member_benefits(
    conn: Connection, program: Program, member_id: str, held: Sequence[str], at: datetime
) -> MemberBenefits:
    """Each benefit the member holds with what remains of it now (one keyed read)."""
    used = benefit_repository.counters_of(conn, member_id)
    zone = program.display_timezone
    out: list[BenefitStatus] = []
    for name in dict.fromkeys(held):
        benefit = program.benefits.get(name)
        if benefit is None:
            continue
        status = BenefitStatus(
            name=name,
            kind=benefit.kind,
            description=benefit.description,
            terms=benefit.model_dump(mode="json", exclude={"kind", "description"}),
        )
        counted = _counted(benefit, name, member_id, at, zone)
        if counted is not None:
            counter, period, limit = counted
            spent = used.get((counter, period.label), 0)
            if isinstance(benefit, MonthlyCoupons):
                spent = limit - benefit_repository.unused_monthly_coupons(
                    conn, member_id, name, period.label, limit
                )
            status.limit, status.used, status.remaining = limit, spent, max(limit - spent, 0)
            status.period = period.label or None
            status.resets_at = period.ends_at if period.label else None
        out.append(status)
    return MemberBenefits(member_id=member_id, at=at, benefits=out)


def _counted(
    benefit: AnyBenefit, name: str, member_id: str, at: datetime, zone: str
) -> tuple[str, Period, int] | None:
    """(counter, period, limit) of a counted benefit, None for the others."""
    if isinstance(benefit, ExpressRefund):
        return "express_refund", period_of(at, "", zone), benefit.credit_limit
    if isinstance(benefit, ReturnCards):
        return "return_cards", period_of(at, benefit.period, zone), benefit.count
    if isinstance(benefit, MonthlyCoupons):
        return f"monthly_coupons:{name}", period_of(at, "month", zone), benefit.count
    if isinstance(benefit, PartnerPerk):
        return f"partner_perk:{name}", period_of(at, benefit.period, zone), 1
    return None


# -- express refund ---------------------------------------------------------------------------


def reserve_express_refund(
    conn: Connection,
    program: Program,
    member_id: str,
    held: Sequence[str],
    data: ExpressRefundIn,
    *,
    at: datetime,
    actor: Principal,
) -> BenefitUse:
    """Take ``data.amount`` of the member's express-refund credit for a refund paid now.

    The credit is the largest ``credit_limit`` among the express-refund benefits held; it is
    given back by :func:`restore_express_refund` when the return arrives. Idempotent by refund
    id. This is the credit alone: :func:`memberwise.ledger.aftersales.express_refund` (what the
    API calls) also checks the order and records the order's refund. Raises BenefitNotHeld,
    ExpressRefundCreditExceeded (nothing changed) or IdempotencyKeyReused.
    """
    use_id = f"express_refund:{data.refund_id}"
    existing = benefit_repository.get_use(conn, use_id)
    if existing is not None:
        _replay(existing, member_id, amount=data.amount, reference=data.order_id)
        return _use_out(existing)
    granted = _held(program, held, ExpressRefund)
    if not granted:
        raise BenefitNotHeld("the member's tier and plans grant no express refund")
    name, benefit = max(granted, key=lambda nb: nb[1].credit_limit)
    limit: int = benefit.credit_limit

    def refuse() -> MemberwiseError:
        outstanding = benefit_repository.counter_used(conn, member_id, "express_refund", "")
        return ExpressRefundCreditExceeded(
            f"an express refund of {data.amount} fen would exceed the credit: {outstanding} of "
            f"{limit} fen are outstanding until their returns arrive",
            details={"limit": limit, "outstanding": outstanding, "remaining": limit - outstanding},
        )

    use = {
        "use_id": use_id,
        "member_id": member_id,
        "benefit": name,
        "kind": "express_refund",
        "counter": "express_refund",
        "period": "",
        "amount": data.amount,
        "reference": data.order_id,
        "status": "open",
        "created_at": at,
        "settled_at": None,
    }
    row, new = _record(conn, use, limit, refuse, amount=data.amount, reference=data.order_id)
    if new:
        privacy.audit(
            conn,
            actor,
            "benefit.express_refund",
            "refund",
            data.refund_id,
            member_id=member_id,
            details={"amount": data.amount, "order_id": data.order_id, "limit": limit},
        )
    return _use_out(
        row, limit - benefit_repository.counter_used(conn, member_id, "express_refund", "")
    )


def restore_express_refund(
    conn: Connection, member_id: str, refund_id: str, *, at: datetime, actor: Principal
) -> BenefitUse:
    """Give the credit of an express refund back: its return arrived (or it was cancelled).

    Idempotent: restoring twice restores once. Raises ExpressRefundNotFound.
    """
    use_id = f"express_refund:{refund_id}"
    settled = benefit_repository.settle_use(conn, use_id, member_id, "restored", at)
    row = benefit_repository.get_use(conn, use_id)
    if row is None or row["member_id"] != member_id:
        raise ExpressRefundNotFound(f"the member has no express refund {refund_id!r}")
    if settled:
        benefit_repository.give_back_counter(
            conn, member_id, "express_refund", "", int(row["amount"]), at
        )
        privacy.audit(
            conn,
            actor,
            "benefit.express_refund_restored",
            "refund",
            refund_id,
            member_id=member_id,
            details={"amount": int(row["amount"])},
        )
    return _use_out(row)


# -- return cards and partner perks -------------------------------------------------------------


def use_return_card(
    conn: Connection,
    program: Program,
    member_id: str,
    held: Sequence[str],
    data: ReturnCardIn,
    *,
    at: datetime,
    actor: Principal,
) -> BenefitUse:
    """Use one return-guarantee card of the current day (or month) in the program's zone.

    The allowance is the largest ``count`` among the return-card benefits held. Idempotent by
    ``use_id``. Raises BenefitNotHeld, ReturnCardsUsedUp (nothing changed) or
    IdempotencyKeyReused.
    """
    use_id = f"return_card:{data.use_id}"
    existing = benefit_repository.get_use(conn, use_id)
    if existing is not None:
        _replay(existing, member_id, reference=data.order_id)
        return _use_out(existing)
    granted = _held(program, held, ReturnCards)
    if not granted:
        raise BenefitNotHeld("the member's tier and plans grant no return-guarantee cards")
    name, benefit = max(granted, key=lambda nb: nb[1].count)
    period = period_of(at, benefit.period, program.display_timezone)

    def refuse() -> MemberwiseError:
        return ReturnCardsUsedUp(
            f"the member's {benefit.count} return card(s) of {period.label} are used; the next "
            f"period begins at {period.ends_at.isoformat()}",
            details={
                "limit": benefit.count,
                "period": period.label,
                "resets_at": period.ends_at.isoformat(),
            },
        )

    use = {
        "use_id": use_id,
        "member_id": member_id,
        "benefit": name,
        "kind": "return_cards",
        "counter": "return_cards",
        "period": period.label,
        "amount": 1,
        "reference": data.order_id,
        "status": "used",
        "created_at": at,
        "settled_at": at,
    }
    row, new = _record(conn, use, benefit.count, refuse, reference=data.order_id)
    if new:
        privacy.audit(
            conn,
            actor,
            "benefit.return_card",
            "order",
            data.order_id,
            member_id=member_id,
            details={"period": period.label},
        )
    used = benefit_repository.counter_used(conn, member_id, "return_cards", period.label)
    return _use_out(row, benefit.count - used)


def claim_partner_perk(
    conn: Connection,
    program: Program,
    member_id: str,
    held: Sequence[str],
    data: PerkClaimIn,
    *,
    at: datetime,
    actor: Principal,
) -> BenefitUse:
    """Record that the member claimed partner perk ``data.benefit`` for the current period.

    Idempotent by ``claim_id``. Raises BenefitNotHeld, PerkAlreadyClaimed (another claim this
    period), IdempotencyKeyReused, or ConsentRequired when the member has not consented to
    sharing with partners (a claim tells the partner who the member is).
    """
    use_id = f"partner_perk:{data.claim_id}"
    existing = benefit_repository.get_use(conn, use_id)
    if existing is not None:
        _replay(existing, member_id, benefit=data.benefit)
        return _use_out(existing)
    benefit = program.benefits.get(data.benefit)
    if data.benefit not in held or not isinstance(benefit, PartnerPerk):
        raise BenefitNotHeld(f"the member holds no partner perk {data.benefit!r}")
    consent.require(conn, program.privacy, member_id, Purpose.partner_sharing)
    period = period_of(at, benefit.period, program.display_timezone)
    counter = f"partner_perk:{data.benefit}"

    def refuse() -> MemberwiseError:
        return PerkAlreadyClaimed(
            f"{benefit.perk} at {benefit.partner} was already claimed for {period.label}",
            details={"period": period.label, "resets_at": period.ends_at.isoformat()},
        )

    use = {
        "use_id": use_id,
        "member_id": member_id,
        "benefit": data.benefit,
        "kind": "partner_perk",
        "counter": counter,
        "period": period.label,
        "amount": 1,
        "reference": None,
        "status": "claimed",
        "created_at": at,
        "settled_at": at,
    }
    row, new = _record(conn, use, 1, refuse, benefit=data.benefit)
    if new:
        privacy.audit(
            conn,
            actor,
            "benefit.partner_perk",
            "benefit",
            data.benefit,
            member_id=member_id,
            details={"partner": benefit.partner, "perk": benefit.perk, "period": period.label},
        )
    return _use_out(row, 0)


# -- monthly coupons --------------------------------------------------------------------------

#: ``issue(conn, program, template, member_id, count, key, at, actor)`` -> coupons the member
#: holds under ``key`` (see :func:`issue_coupons`; tests pass their own).
CouponIssuer = Callable[[Connection, Program, str, str, int, str, datetime, Principal], int]


def issue_coupons(
    conn: Connection,
    program: Program,
    template: str,
    member_id: str,
    count: int,
    key: str,
    at: datetime,
    actor: Principal,
) -> int:
    """Issue ``count`` coupons of ``template`` to the member through the coupon ledger (its
    budgets, per-member limit and tier rules apply; a refused coupon is not issued)."""
    issued = 0
    for i in range(count):
        out = coupons.issue(
            conn,
            program,
            template,
            [member_id],
            key=f"{key}:{i}",
            source="benefit",
            at=at,
            actor=actor,
        )
        issued += out.issued
    return issued


def issue_monthly_coupons(
    conn: Connection,
    program: Program,
    member_id: str,
    held: Sequence[str],
    *,
    at: datetime,
    actor: Principal,
    issue: CouponIssuer | None = None,
) -> int:
    """Issue this month's coupons of every monthly-coupons benefit the member holds; the
    number issued now (0 when this month's were issued before: idempotent per member, benefit
    and month in the program's time zone)."""
    issue = issue or issue_coupons
    month = period_of(at, "month", program.display_timezone).label
    issued = 0
    for name, benefit in _held(program, held, MonthlyCoupons):
        key = f"monthly_coupons:{name}:{member_id}:{month}"
        if not benefit_repository.insert_use(
            conn,
            use_id=key,
            member_id=member_id,
            benefit=name,
            kind="monthly_coupons",
            counter=f"monthly_coupons:{name}",
            period=month,
            amount=benefit.count,
            reference=None,
            status="issued",
            created_at=at,
            settled_at=at,
        ):
            continue
        issued += issue(
            conn,
            program,
            benefit.template,
            member_id,
            benefit.count,
            f"benefit:{name}:{month}",
            at,
            actor,
        )
        privacy.audit(
            conn,
            actor,
            "benefit.monthly_coupons",
            "benefit",
            name,
            member_id=member_id,
            details={"template": benefit.template, "count": benefit.count, "month": month},
        )
    return issued


# -- the API's entry points: the member's benefits looked up, then the functions above ----------


def entitled_now(conn: Connection, program: Program, member_id: str, at: datetime) -> list[str]:
    """The benefits the member holds; raises MemberUnknown for an unknown member.

    A member with a tier or a plan exists (the membership rows are only made for members), so
    the existence check -- a third of a hot read's queries -- runs only for members holding
    neither.
    """
    held = entitlements(conn, program, member_id, at)
    if held.tier is None and not held.plans:
        ledger.member_exists(conn, member_id)
    return [n for n in held.benefits if n in program.benefits]


def benefits_now(
    conn: Connection, program: Program, member_id: str, at: datetime
) -> MemberBenefits:
    """Each benefit the member holds now, with what remains. Raises MemberUnknown."""
    return member_benefits(conn, program, member_id, entitled_now(conn, program, member_id, at), at)


def partner_perk(
    conn: Connection,
    program: Program,
    member_id: str,
    data: PerkClaimIn,
    *,
    at: datetime,
    actor: Principal,
) -> BenefitUse:
    """:func:`claim_partner_perk` with the benefits the member holds now."""
    held = entitled_now(conn, program, member_id, at)
    return claim_partner_perk(conn, program, member_id, held, data, at=at, actor=actor)


def monthly_coupons(
    conn: Connection, program: Program, member_id: str, *, at: datetime, actor: Principal
) -> int:
    """:func:`issue_monthly_coupons` with the benefits the member holds now."""
    held = entitled_now(conn, program, member_id, at)
    return issue_monthly_coupons(conn, program, member_id, held, at=at, actor=actor)
