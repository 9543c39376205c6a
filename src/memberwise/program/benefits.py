"""The benefit catalog of a program: what tiers and paid plans grant, by name.

A tier lists benefit names (``benefits: [free_shipping, monthly_coupons]``); each name is defined
once here with its ``kind`` and the numbers of that kind, e.g.::

    benefits:
      free_shipping: {kind: free_shipping}
      member_price: {kind: member_price, percent_off: 5, categories: [美妆, 数码]}
      monthly_coupons: {kind: monthly_coupons, template: ten_off, count: 8}
      express_refund: {kind: express_refund, credit_limit: 1000000}   # 10,000 CNY in fen
      return_cards: {kind: return_cards, count: 1, period: day}

Each kind is its own model (a union discriminated on ``kind``) refusing unknown keys, so a typo
in a number's name is an error, not a silently missing benefit. The ledger keeps the counters of
the kinds that have one (express-refund credit, return-guarantee cards, monthly coupons, partner
perks); :func:`benefit_problems` checks what needs the rest of the program (coupon templates).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidatorFunctionWrapHandler, WrapValidator

from memberwise.program.base import Problem, Section, problem, problems_error, suggest

if TYPE_CHECKING:
    from memberwise.program.schemas import Program

#: Money in the program file is integer fen; this bounds it at 10 million CNY.
MAX_FEN = 1_000_000_000


class BenefitKind(StrEnum):
    free_shipping = "free_shipping"
    member_price = "member_price"
    monthly_coupons = "monthly_coupons"
    points_multiplier = "points_multiplier"
    express_refund = "express_refund"
    return_cards = "return_cards"
    priority_service = "priority_service"
    account_manager = "account_manager"
    early_access = "early_access"
    partner_perk = "partner_perk"


class _Benefit(Section):
    """What every benefit has: a sentence for members and operators."""

    description: str = ""


class FreeShipping(_Benefit):
    """Shipping is free on orders whose member-price subtotal reaches ``min_order`` (fen)."""

    kind: Literal["free_shipping"]
    min_order: int = Field(default=0, ge=0, le=MAX_FEN)


class MemberPrice(_Benefit):
    """``percent_off`` the unit price of items in ``categories`` or of ``brands``; with
    neither listed, of every item (as a coupon without categories applies to all goods). The
    member unit price is rounded half up to the fen."""

    kind: Literal["member_price"]
    percent_off: Decimal = Field(gt=0, lt=100, decimal_places=2)
    categories: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()

    def applies_to(self, category: str | None, brand: str | None) -> bool:
        """Whether an item of ``category`` and ``brand`` gets the member price."""
        if not self.categories and not self.brands:
            return True
        return (category is not None and category in self.categories) or (
            brand is not None and brand in self.brands
        )

    def unit_price(self, price: int) -> int:
        """The member unit price of a unit priced ``price`` fen."""
        off = (Decimal(price) * self.percent_off / 100).quantize(Decimal(1), ROUND_HALF_UP)
        return price - int(off)


class MonthlyCoupons(_Benefit):
    """``count`` coupons of the program's coupon ``template`` each calendar month (in the
    program's display time zone), issued once per member and month."""

    kind: Literal["monthly_coupons"]
    template: str = Field(min_length=1)
    count: int = Field(ge=1, le=100)


class PointsMultiplier(_Benefit):
    """Purchase points are multiplied by ``multiplier`` (e.g. 1.5)."""

    kind: Literal["points_multiplier"]
    multiplier: Decimal = Field(gt=1, le=100, decimal_places=2)


class ExpressRefund(_Benefit):
    """Refunds are paid at once, before the return arrives, while the member's outstanding
    express refunds stay within ``credit_limit`` fen; an arrived return restores its credit."""

    kind: Literal["express_refund"]
    credit_limit: int = Field(ge=1, le=MAX_FEN)


class ReturnCards(_Benefit):
    """``count`` return-guarantee cards (free return shipping) a ``period`` (day or month in
    the program's display time zone); unused cards do not carry over."""

    kind: Literal["return_cards"]
    count: int = Field(default=1, ge=1, le=1000)
    period: Literal["day", "month"] = "day"


class PriorityService(_Benefit):
    """The service desk answers within ``sla_minutes``."""

    kind: Literal["priority_service"]
    sla_minutes: int = Field(ge=1, le=7 * 24 * 60)


class AccountManager(_Benefit):
    """A dedicated account manager (assigned by the black-card desk)."""

    kind: Literal["account_manager"]


class EarlyAccess(_Benefit):
    """Launches open to the member ``hours_ahead`` hours before everyone else."""

    kind: Literal["early_access"]
    hours_ahead: int = Field(default=24, ge=1, le=24 * 90)


class PartnerPerk(_Benefit):
    """An entitlement at a partner (e.g. a video membership), claimed once a ``period``; the
    ledger records each claim so the partner can be settled with."""

    kind: Literal["partner_perk"]
    partner: str = Field(min_length=1, max_length=200)
    perk: str = Field(min_length=1, max_length=200)
    period: Literal["month", "year"] = "month"


AnyBenefit = (
    FreeShipping
    | MemberPrice
    | MonthlyCoupons
    | PointsMultiplier
    | ExpressRefund
    | ReturnCards
    | PriorityService
    | AccountManager
    | EarlyAccess
    | PartnerPerk
)
#: Kind -> its model (for "the keys allowed here" in error messages).
MODELS: dict[str, type[_Benefit]] = {
    "free_shipping": FreeShipping,
    "member_price": MemberPrice,
    "monthly_coupons": MonthlyCoupons,
    "points_multiplier": PointsMultiplier,
    "express_refund": ExpressRefund,
    "return_cards": ReturnCards,
    "priority_service": PriorityService,
    "account_manager": AccountManager,
    "early_access": EarlyAccess,
    "partner_perk": PartnerPerk,
}
_KINDS = ", ".join(k.value for k in BenefitKind)


def _problems(value: Any, exc: ValidationError) -> list[Problem]:
    """A benefit's validation errors as problems whose paths start inside the benefit (the
    union's tag, which pydantic puts first, is dropped: it is not a key of the file)."""
    kind = value.get("kind") if isinstance(value, dict) else None
    found: list[Problem] = []
    for error in exc.errors():
        loc = list(error["loc"])
        if loc and loc[0] == kind:
            loc = loc[1:]
        match error["type"]:
            case "union_tag_not_found":
                found.append(problem(["kind"], "'kind' is required", f"add kind: one of {_KINDS}"))
            case "union_tag_invalid":
                hint = suggest(str(kind), [k.value for k in BenefitKind])
                found.append(
                    problem(
                        ["kind"], f"unknown benefit kind {kind!r}", f"{hint}use one of {_KINDS}"
                    )
                )
            case "extra_forbidden":
                allowed = ", ".join(MODELS[str(kind)].model_fields)
                found.append(
                    problem(
                        loc,
                        f"unknown key {loc[-1]!r} for a {kind} benefit",
                        f"remove it or fix its spelling; the keys allowed here: {allowed}",
                    )
                )
            case "missing":
                found.append(problem(loc, f"{loc[-1]!r} is required", "add it"))
            case "model_type" | "model_attributes_type" | "dict_type":
                found.append(
                    problem(
                        loc,
                        f"a benefit is a mapping with a kind, not {value!r}",
                        "write e.g. {kind: free_shipping}",
                    )
                )
            case _:
                given = error.get("input")
                shown = f" (found {given!r})" if isinstance(given, str | int | float) else ""
                found.append(problem(loc, f"{error['msg']}{shown}", "correct the value"))
    return found


def _readable(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError as exc:
        raise problems_error(_problems(value, exc)) from None


#: One benefit of the catalog: its kind's model, chosen by ``kind``.
Benefit = Annotated[AnyBenefit, Field(discriminator="kind"), WrapValidator(_readable)]


def benefit_problems(program: Program) -> list[Problem]:
    """What is wrong with ``program.benefits`` given the rest of the program (paths from the
    program's root): a monthly-coupons benefit whose template is not in ``program.coupons``.
    :class:`Program`'s validator reports them."""
    found: list[Problem] = []
    templates = list(program.coupons)
    for name, benefit in program.benefits.items():
        if isinstance(benefit, MonthlyCoupons) and benefit.template not in program.coupons:
            hint = suggest(benefit.template, templates)
            known = f"the templates: {', '.join(templates)}" if templates else "there are none"
            found.append(
                problem(
                    ["benefits", name, "template"],
                    f"coupon template {benefit.template!r} does not exist",
                    f"{hint}name one of the program's coupons ({known})",
                )
            )
    return found
