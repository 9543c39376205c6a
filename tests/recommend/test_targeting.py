"""Coupon targeting: persuadables first, budgets (count and money) never exceeded, templates'
tier and segment limits respected, best hours from habits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memberwise.program.ledger import CouponTemplate
from memberwise.program.recommendations import CouponCampaign
from memberwise.recommend.targeting import (
    best_hours,
    coupon_values,
    propensities,
    select_within_budget,
    target,
)

TEN_OFF = CouponTemplate(kind="amount_off", amount=1000, valid_days=30)
PERCENT = CouponTemplate(kind="percent_off", percent=10, valid_days=30)
CAPPED = CouponTemplate(kind="percent_off", percent=10, max_discount=500, valid_days=30)
GOLD_ONLY = CouponTemplate(kind="amount_off", amount=500, valid_days=30, tiers=("gold",))


def profiles(rows: list[dict[str, Any]]) -> pa.Table:
    fields = {
        "member_id": pa.string(),
        "orders_90d": pa.int64(),
        "views_30d": pa.int64(),
        "favorites_30d": pa.int64(),
        "carts_30d": pa.int64(),
        "purchases_30d": pa.int64(),
        "price_band": pa.int64(),
        "aov_365d": pa.float64(),
        "top_category": pa.string(),
        "peak_hour": pa.int64(),
    }
    return pa.Table.from_pylist(rows, schema=pa.schema(list(fields.items())))


#: A sure thing (buys every week), a persuadable (browses and carts, buys nothing, cheap
#: tastes), a lost cause (no activity) and a lukewarm browser.
MEMBERS = profiles(
    [
        {"member_id": "sure", "orders_90d": 12, "views_30d": 40, "carts_30d": 6,
         "purchases_30d": 5, "price_band": 3, "aov_365d": 20000.0, "peak_hour": 21},
        {"member_id": "persuadable", "orders_90d": 0, "views_30d": 30, "carts_30d": 4,
         "purchases_30d": 0, "price_band": 1, "aov_365d": 8000.0, "peak_hour": 9},
        {"member_id": "lost", "orders_90d": 0, "views_30d": 0, "carts_30d": 0,
         "purchases_30d": 0, "price_band": None, "aov_365d": None, "peak_hour": None},
        {"member_id": "browser", "orders_90d": 1, "views_30d": 8, "carts_30d": 0,
         "purchases_30d": 0, "price_band": 4, "aov_365d": 30000.0, "peak_hour": 21},
    ]
)  # fmt: skip


def test_the_persuadable_member_ranks_first_and_the_lost_cause_gets_nothing() -> None:
    campaign = CouponCampaign(name="c", template="ten", max_coupons=3)

    chosen, problems = target(MEMBERS, [campaign], {"ten": TEN_OFF})

    assert problems == []
    assert chosen.column("member_id").to_pylist() == ["persuadable", "browser", "sure"]
    row = chosen.to_pylist()[0]
    # interest 1 - exp(-(30 + 12) / 20), p 0, sensitivity min(1, 1.5 * 1.0): 0.3 * 0.8775
    assert row["uplift"] == pytest.approx(0.3 * (1 - np.exp(-42 / 20)), abs=1e-6)
    assert (row["value"], row["p_purchase"], row["best_hour"]) == (1000, 0.0, 9)
    assert row["reason"] == (
        "interested lately (88%), unlikely to buy unprompted (100%), price-sensitive"
    )


def test_the_money_budget_binds_before_the_count() -> None:
    campaign = CouponCampaign(name="c", template="ten", max_coupons=10, budget=2999)

    chosen, _ = target(MEMBERS, [campaign], {"ten": TEN_OFF})

    assert chosen.column("member_id").to_pylist() == ["persuadable", "browser"]


def test_one_coupon_per_member_across_campaigns_in_program_order() -> None:
    first = CouponCampaign(name="first", template="ten", max_coupons=1)
    second = CouponCampaign(name="second", template="ten", max_coupons=1)

    chosen, _ = target(MEMBERS, [first, second], {"ten": TEN_OFF})

    assert [(r["campaign"], r["member_id"]) for r in chosen.to_pylist()] == [
        ("first", "persuadable"),
        ("second", "browser"),
    ]


def test_unknown_templates_and_tiers_without_a_tiers_build_are_problems() -> None:
    campaigns = [
        CouponCampaign(name="ghost", template="nope", budget=1000),
        CouponCampaign(name="gold", template="gold", budget=1000),
    ]

    skipped, problems = target(MEMBERS, campaigns, {"gold": GOLD_ONLY})
    golden, none = target(
        MEMBERS, campaigns[1:], {"gold": GOLD_ONLY}, tiers={"browser": "gold", "sure": "silver"}
    )

    assert skipped.num_rows == 0
    assert problems == [
        "campaign ghost: no coupon template 'nope'",
        "campaign gold: template gold is for tiers gold but the build has no tiers",
    ]
    assert golden.column("member_id").to_pylist() == ["browser"] and none == []


def test_segment_limited_templates_reach_only_their_segments() -> None:
    template = CouponTemplate(kind="amount_off", amount=100, valid_days=7, segments=("at_risk",))
    campaign = CouponCampaign(name="c", template="t", max_coupons=5)

    chosen, _ = target(
        MEMBERS, [campaign], {"t": template}, segments={"sure": {"at_risk"}, "browser": {"new"}}
    )

    assert chosen.column("member_id").to_pylist() == ["sure"]


def test_coupon_values_and_best_hours() -> None:
    aov = np.array([8000.0, 0.0])

    assert coupon_values(TEN_OFF, aov).tolist() == [1000, 1000]
    assert coupon_values(PERCENT, aov).tolist() == [800, 1]
    assert coupon_values(CAPPED, aov).tolist() == [500, 500]
    # The lost cause has no habits: the most common peak hour (21) stands in.
    assert best_hours(MEMBERS).tolist() == [21, 9, 21, 21]


def test_propensities_are_probabilities() -> None:
    parts = propensities(MEMBERS)

    for values in (parts.p_purchase, parts.interest, parts.sensitivity):
        assert ((values >= 0) & (values <= 1)).all()
    assert parts.p_purchase[0] == pytest.approx(1 - np.exp(-4))


@settings(max_examples=200, deadline=None)
@given(
    uplift=st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=40),
    values=st.lists(st.integers(1, 5000), min_size=40, max_size=40),
    max_coupons=st.none() | st.integers(1, 50),
    budget=st.none() | st.integers(1, 60_000),
)
def test_selection_never_exceeds_either_budget(
    uplift: list[float], values: list[int], max_coupons: int | None, budget: int | None
) -> None:
    n = len(uplift)
    value = np.array(values[:n], dtype=np.int64)
    ids = [f"m{i:03d}" for i in range(n)]

    chosen = select_within_budget(
        np.array(uplift), value, ids, max_coupons=max_coupons, budget=budget
    )

    assert len(set(chosen)) == len(chosen)
    assert max_coupons is None or len(chosen) <= max_coupons
    assert budget is None or int(value[chosen].sum()) <= budget
    assert all(uplift[i] > 0 for i in chosen)
    # Greedy and complete: any member left out with positive uplift did not fit.
    if max_coupons is None or len(chosen) < max_coupons:
        spent = int(value[chosen].sum())
        for i in set(range(n)) - set(chosen):
            if uplift[i] > 0:
                assert budget is not None and spent + int(value[i]) > budget
