"""Program files with a mistake in their membership sections are refused with what and where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memberwise.program.service import ProgramError, load_program

BASE = """name: p
score:
  parts:
    - {name: spend, field: spend_365d, weight: 0.001, max: 800}
    - {name: credit, field: credit_stars, weight: 100, max: 700}
benefits:
  free_shipping: {kind: free_shipping}
  account_manager: {kind: account_manager}
"""
TIERS = """tiers:
  - {name: member}
  - name: gold
    qualify: [{score: 600}]
    benefits: [free_shipping]
  - name: black
    invitation: true
    benefits: [account_manager]
black_card:
  tier: black
  criteria: "spend_365d >= 10000000"
  ranking: [{field: spend_365d, weight: 1}]
  quota: {count: 5}
"""


def problems(tmp_path: Path, text: str) -> list[dict[str, Any]]:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProgramError) as caught:
        load_program(path)
    found: list[dict[str, Any]] = caught.value.details["problems"]
    return found


def test_a_complete_membership_program_loads(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE + TIERS, encoding="utf-8")
    program = load_program(path)
    assert [t.name for t in program.tiers] == ["member", "gold", "black"]
    assert program.score.maximum == 1500
    assert program.black_card is not None and program.black_card.quota.count == 5


def test_an_unknown_field_in_a_qualification_rule_names_the_field_and_a_fix(
    tmp_path: Path,
) -> None:
    text = BASE + TIERS.replace("[{score: 600}]", "[{rule: 'orderz_365d >= 3'}]")
    [found] = problems(tmp_path, text)
    assert found["path"] == "tiers[1].qualify[0].rule"
    assert found["line"] == 12  # the line of the qualify list
    assert "unknown field 'orderz_365d'" in found["message"]
    assert found["fix"].startswith("did you mean 'orders_365d'?")


def test_a_tier_that_cannot_be_reached_is_refused(tmp_path: Path) -> None:
    text = BASE + TIERS.replace("[{score: 600}]", "[{score: 1600}]")
    [found] = problems(tmp_path, text)
    assert found["path"] == "tiers[1].qualify[0].score"
    assert found["message"] == (
        "tier 'gold' cannot be reached: it needs score 1600 but the score is at most 1500"
    )
    text = BASE + TIERS.replace("    qualify: [{score: 600}]\n", "")
    [found] = problems(tmp_path, text)
    assert found["message"] == "tier 'gold' cannot be reached: it has no qualification"


def test_a_benefit_that_does_not_exist_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    text = BASE + TIERS.replace("benefits: [free_shipping]", "benefits: [free_shiping]")
    [found] = problems(tmp_path, text)
    assert found["path"] == "tiers[1].benefits[0]"
    assert found["message"] == "benefit 'free_shiping' does not exist"
    assert found["fix"].startswith("did you mean 'free_shipping'?")


def test_overlapping_tiers_are_refused(tmp_path: Path) -> None:
    overlap = TIERS.replace(
        "  - name: black\n",
        "  - name: platinum\n    qualify: [{score: 500}]\n  - name: black\n",
    )
    [found] = problems(tmp_path, BASE + overlap)
    assert found["path"] == "tiers[2].qualify[0]"
    assert found["message"] == (
        "tiers 'gold' and 'platinum' overlap: 'platinum' asks score >= 500 but the lower "
        "'gold' asks >= 600, so 'gold' could never be reached that way"
    )


def test_the_first_tier_is_a_plain_floor(tmp_path: Path) -> None:
    text = BASE + TIERS.replace(
        "  - {name: member}\n", "  - {name: member, qualify: [{score: 1}]}\n"
    )
    found = problems(tmp_path, text)
    assert found[0]["path"] == "tiers[0]"


def test_the_black_card_must_name_an_invitation_tier(tmp_path: Path) -> None:
    text = BASE + TIERS.replace("  tier: black", "  tier: gold")
    messages = [p["message"] for p in problems(tmp_path, text)]
    assert "tier 'gold' is not invitation-only" in messages


def test_a_qualification_needs_exactly_one_measure_and_a_period_for_spend(tmp_path: Path) -> None:
    text = BASE + TIERS.replace("[{score: 600}]", "[{spend: 100000}]")
    [found] = problems(tmp_path, text)
    assert found["message"] == ("spend needs either window_days or since_tier_change: true")


def test_plan_price_rules_may_use_the_score(tmp_path: Path) -> None:
    text = (
        BASE
        + TIERS
        + (
            "plans:\n  88vip:\n    fee: 88800\n    prices: [{rule: 'score >= 1000', fee: 8800}]\n"
            "    benefits: [free_shipping]\n"
        )
    )
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_program(path).plans["88vip"].prices[0].fee == 8800


def test_a_monthly_coupon_benefit_names_an_existing_template(tmp_path: Path) -> None:
    text = BASE.replace(
        "  account_manager: {kind: account_manager}\n",
        "  account_manager: {kind: account_manager}\n"
        "  coupons: {kind: monthly_coupons, template: tenoff, count: 8}\n",
    )
    [found] = problems(tmp_path, text + TIERS)
    assert found["path"] == "benefits.coupons.template"
    assert "tenoff" in found["message"]
