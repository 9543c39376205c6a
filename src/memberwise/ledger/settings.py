"""The program's points and coupon sections: earn rules, expiry policy and coupon templates."""

from __future__ import annotations

from memberwise.program.base import Section


class PointsSettings(Section):
    """How members earn and lose points (the ledger's rules)."""


class CouponTemplate(Section):
    """A coupon a program can issue."""

    description: str = ""
