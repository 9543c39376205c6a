"""The benefit catalog of a program: what tiers and paid plans grant, by name.

A tier lists benefit names (``benefits: [free_shipping, monthly_coupons]``); each name is defined
once here with its kind and the numbers of that kind. The ledger keeps the counters of the kinds
that have one (express-refund credit, return-guarantee cards, monthly coupons).
"""

from __future__ import annotations

from enum import StrEnum

from memberwise.program.base import Section


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


class Benefit(Section):
    """One benefit a tier or plan may grant."""

    kind: BenefitKind
    description: str = ""
