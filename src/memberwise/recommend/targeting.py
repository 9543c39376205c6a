"""Coupon targeting: for each campaign, which members get its coupon, within its budget.

A coupon is worth giving to a member whose purchase it *causes* (a "persuadable"), not to one
who would buy anyway (a "sure thing") or who will not buy at all (a "lost cause"). Until the
program has run randomized hold-outs to fit an uplift model (Radcliffe & Surry, "Real-world
uplift modelling with significance-based uplift trees", 2011), targeting uses this documented
propensity heuristic over the profile's fields:

- ``p_purchase`` -- chance of an order in the next 30 days without a coupon: a Poisson rate from
  the last 90 days' orders, ``1 - exp(-30 * orders_90d / 90)``.
- ``interest`` -- recent intent: ``1 - exp(-(views_30d + 2 favorites_30d + 3 carts_30d) / 20)``.
- ``sensitivity`` -- price sensitivity: ``(6 - price_band) / 5`` (cheapest fifth 1.0, dearest
  0.2; 0.6 when unknown), raised by half for members who cart more than they buy (abandoners).
- ``fit`` -- the template fits the member: 1, times 0.3 when the template is limited to
  categories other than the member's top category, times ``min(1, aov / min_spend)`` for a
  threshold coupon.

``uplift = MAX_UPLIFT * interest * (1 - p_purchase) * sensitivity * fit``: high for engaged,
price-sensitive members who are not buying, low for regular buyers and for the inactive. A
member of a template's excluded tiers or segments gets none.

Selection is greedy by uplift per fen of the coupon's value, so the budget buys the most
caused purchases; it never exceeds ``max_coupons`` nor ``budget`` (each coupon counted at its
worst-case value: its amount, or for a percent coupon its ``max_discount`` -- without one, the
percent of the member's average order value, an estimate the ledger's own ``budget_money``
guards at redemption). Campaigns are served in program order and a member gets at most one
coupon per build, so nobody is flooded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from memberwise.program.ledger import CouponKind, CouponTemplate
from memberwise.program.recommendations import CouponCampaign

FloatArray = npt.NDArray[np.float64]

#: The largest purchase-probability lift a coupon is assumed to cause (no experiment yet).
MAX_UPLIFT = 0.3
#: Horizon of ``p_purchase``, in days.
HORIZON_DAYS = 30

SUGGESTION_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string()),
        pa.field("campaign", pa.string()),
        pa.field("template", pa.string()),
        pa.field("value", pa.int64()),
        pa.field("uplift", pa.float64()),
        pa.field("p_purchase", pa.float64()),
        pa.field("best_hour", pa.int32()),
        pa.field("reason", pa.string()),
    ]
)

#: Profile fields targeting reads (a missing one counts as null).
PROFILE_FIELDS: tuple[str, ...] = (
    "member_id",
    "orders_90d",
    "views_30d",
    "favorites_30d",
    "carts_30d",
    "purchases_30d",
    "price_band",
    "aov_365d",
    "top_category",
    "peak_hour",
)


def field_values(table: pa.Table, name: str, default: float) -> FloatArray:
    """A profile field as floats, ``default`` where it is null, not finite or absent."""
    if name not in table.column_names:
        return np.full(table.num_rows, default)
    values = table.column(name).to_numpy(zero_copy_only=False)
    out = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(out), out, default)


@dataclass(frozen=True)
class Propensities:
    """The heuristic's parts for each member (aligned with the profile table's rows)."""

    p_purchase: FloatArray
    interest: FloatArray
    sensitivity: FloatArray


def propensities(profiles: pa.Table) -> Propensities:
    """``p_purchase``, ``interest`` and ``sensitivity`` per member (see the module docstring)."""
    orders = field_values(profiles, "orders_90d", 0.0)
    p_purchase = 1.0 - np.exp(-HORIZON_DAYS * orders / 90.0)
    activity = (
        field_values(profiles, "views_30d", 0.0)
        + 2.0 * field_values(profiles, "favorites_30d", 0.0)
        + 3.0 * field_values(profiles, "carts_30d", 0.0)
    )
    interest = 1.0 - np.exp(-activity / 20.0)
    band = field_values(profiles, "price_band", np.nan)
    sensitivity = np.where(np.isnan(band), 0.6, (6.0 - np.clip(band, 1, 5)) / 5.0)
    carts = field_values(profiles, "carts_30d", 0.0)
    abandoner = carts > field_values(profiles, "purchases_30d", 0.0)
    sensitivity = np.minimum(1.0, np.where(abandoner, sensitivity * 1.5, sensitivity))
    return Propensities(p_purchase=p_purchase, interest=interest, sensitivity=sensitivity)


def coupon_values(template: CouponTemplate, aov: FloatArray) -> npt.NDArray[np.int64]:
    """What one coupon may take off, per member, in fen (its worst case where it has one)."""
    if template.kind is CouponKind.percent_off:
        estimate = np.ceil(np.maximum(aov, 0.0) * template.percent / 100.0)
        if template.max_discount is not None:
            estimate = np.full(len(aov), float(template.max_discount))
        return np.maximum(estimate, 1.0).astype(np.int64)
    return np.full(len(aov), max(template.amount, 1), dtype=np.int64)


def template_fit(
    template: CouponTemplate, top_category: Sequence[str | None], aov: FloatArray
) -> FloatArray:
    """How well the template suits each member (1 = fully)."""
    fit = np.ones(len(aov))
    if template.categories:
        wanted = set(template.categories)
        outside = np.array([c is None or c not in wanted for c in top_category], dtype=bool)
        fit = np.where(outside, 0.3, fit)
    if template.kind is CouponKind.threshold and template.min_spend > 0:
        fit = fit * np.clip(aov / template.min_spend, 0.0, 1.0)
    return fit


def best_hours(profiles: pa.Table) -> npt.NDArray[np.int64]:
    """Hour (0-23, program time zone) to reach each member: their peak hour from the profile's
    habit fields, else the most common peak hour of all members (20 when nobody has one)."""
    peak = field_values(profiles, "peak_hour", np.nan)
    known = peak[~np.isnan(peak)].astype(np.int64)
    common = int(np.bincount(known, minlength=24).argmax()) if len(known) else 20
    return np.where(np.isnan(peak), common, peak).astype(np.int64)


def top_categories(profiles: pa.Table) -> list[str | None]:
    """Each member's top category (None for all when the profiles have no such field)."""
    if "top_category" in profiles.column_names:
        return list(profiles.column("top_category").to_pylist())
    return [None] * profiles.num_rows


def template_for(
    campaign: CouponCampaign, templates: Mapping[str, CouponTemplate], *, has_tiers: bool
) -> tuple[CouponTemplate | None, str | None]:
    """The campaign's template, or None and the problem that makes the campaign be skipped (an
    unknown template; a tier restriction when the build has no tiers)."""
    template = templates.get(campaign.template)
    if template is None:
        return None, f"campaign {campaign.name}: no coupon template {campaign.template!r}"
    if template.tiers and not has_tiers:
        return None, (
            f"campaign {campaign.name}: template {campaign.template} is for tiers "
            f"{', '.join(template.tiers)} but the build has no tiers"
        )
    return template, None


def admitted(
    template: CouponTemplate,
    member_ids: Sequence[str],
    tier_of: Callable[[str], str | None],
    groups_of: Callable[[str], set[str]],
) -> npt.NDArray[np.bool_]:
    """Which members the template's tier and segment restrictions let in (``tier_of``: a
    member's tier; ``groups_of``: their lifecycle segment and persona group names)."""
    allowed = np.ones(len(member_ids), dtype=bool)
    if template.tiers:
        wanted_tiers = set(template.tiers)
        allowed &= np.array([tier_of(m) in wanted_tiers for m in member_ids], dtype=bool)
    if template.segments:
        wanted = set(template.segments)
        allowed &= np.array([bool(groups_of(m) & wanted) for m in member_ids], dtype=bool)
    return allowed


def uplift_of(
    parts: Propensities, template: CouponTemplate, top: Sequence[str | None], aov: FloatArray
) -> FloatArray:
    """Each member's estimated uplift from the template's coupon (see the module docstring)."""
    return (
        MAX_UPLIFT
        * parts.interest
        * (1.0 - parts.p_purchase)
        * parts.sensitivity
        * template_fit(template, top, aov)
    )


def eligible_rows(
    uplift: FloatArray, value: npt.NDArray[np.int64], min_uplift: float
) -> npt.NDArray[np.intp]:
    """Rows a campaign may choose: uplift above its floor and above 0, a coupon worth > 0."""
    return np.flatnonzero((uplift > min_uplift) & (uplift > 0) & (value > 0))


def select_within_budget(
    uplift: FloatArray,
    value: npt.NDArray[np.int64],
    member_ids: Sequence[str],
    *,
    max_coupons: int | None,
    budget: int | None,
    min_uplift: float = 0.0,
) -> list[int]:
    """Row indexes chosen greedily by uplift per fen (ties: larger uplift, then member_id),
    skipping any coupon that would overspend; never more than ``max_coupons`` rows and never a
    total ``value`` above ``budget``."""
    eligible = eligible_rows(uplift, value, min_uplift)
    if len(eligible) == 0:
        return []
    ratio = uplift[eligible] / value[eligible]
    ids = np.array([member_ids[int(i)] for i in eligible], dtype=np.str_)
    order = np.lexsort((ids, -uplift[eligible], -ratio))
    chosen: list[int] = []
    spent = 0
    cap = max_coupons if max_coupons is not None else len(eligible)
    for position in order:
        row = int(eligible[position])
        cost = int(value[row])
        if budget is not None and spent + cost > budget:
            continue
        chosen.append(row)
        spent += cost
        if len(chosen) >= cap:
            break
    return chosen


def reason_of(p: float, interest: float, sensitivity: float) -> str:
    """Why the member was chosen, in words."""
    parts = [f"interested lately ({interest:.0%})", f"unlikely to buy unprompted ({1 - p:.0%})"]
    if sensitivity >= 0.8:
        parts.append("price-sensitive")
    return ", ".join(parts)


def target(
    profiles: pa.Table,
    campaigns: Sequence[CouponCampaign],
    templates: Mapping[str, CouponTemplate],
    *,
    segments: Mapping[str, set[str]] | None = None,
    tiers: Mapping[str, str] | None = None,
) -> tuple[pa.Table, list[str]]:
    """Coupon suggestions (:data:`SUGGESTION_SCHEMA`) for ``campaigns`` over the members of
    ``profiles``, and the problems that made a campaign be skipped (unknown template, tier
    restriction without tiers).

    ``segments``: member -> the names of their lifecycle segment and persona group;
    ``tiers``: member -> tier (None when the build has no tiers).
    """
    member_ids = [str(m) for m in profiles.column("member_id").to_pylist()]
    n = len(member_ids)
    parts = propensities(profiles)
    aov = field_values(profiles, "aov_365d", 0.0)
    top = top_categories(profiles)
    hours = best_hours(profiles)
    taken = np.zeros(n, dtype=bool)
    out: dict[str, list[object]] = {name: [] for name in SUGGESTION_SCHEMA.names}
    problems: list[str] = []
    known_tiers = tiers or {}
    groups = segments or {}
    for campaign in campaigns:
        template, problem = template_for(campaign, templates, has_tiers=tiers is not None)
        if template is None:
            problems.append(str(problem))
            continue
        allowed = ~taken & admitted(
            template, member_ids, known_tiers.get, lambda m: groups.get(m, set())
        )
        value = coupon_values(template, aov)
        uplift = np.where(allowed, uplift_of(parts, template, top, aov), 0.0)
        max_coupons, budget = limits_of(campaign, template)
        for row in select_within_budget(
            uplift,
            value,
            member_ids,
            max_coupons=max_coupons,
            budget=budget,
            min_uplift=campaign.min_uplift,
        ):
            taken[row] = True
            out["member_id"].append(member_ids[row])
            out["campaign"].append(campaign.name)
            out["template"].append(campaign.template)
            out["value"].append(int(value[row]))
            out["uplift"].append(round(float(uplift[row]), 6))
            out["p_purchase"].append(round(float(parts.p_purchase[row]), 6))
            out["best_hour"].append(int(hours[row]))
            out["reason"].append(
                reason_of(
                    float(parts.p_purchase[row]),
                    float(parts.interest[row]),
                    float(parts.sensitivity[row]),
                )
            )
    return pa.table(out, schema=SUGGESTION_SCHEMA), problems


def limits_of(campaign: CouponCampaign, template: CouponTemplate) -> tuple[int | None, int | None]:
    """(most coupons, most money) a campaign may give: the tighter of its and its template's."""
    return (
        _smallest(campaign.max_coupons, template.budget_count),
        _smallest(campaign.budget, template.budget_money),
    )


def _smallest(*limits: int | None) -> int | None:
    given = [x for x in limits if x is not None]
    return min(given) if given else None
