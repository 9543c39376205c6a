"""Money fields are strict, bounded integers; totals are checked before they are stored."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from memberwise.kit.money import MAX_AMOUNT, Money, total


class _Price(BaseModel):
    price: Money


@pytest.mark.parametrize("value", [0, 1, MAX_AMOUNT])
def test_integers_in_bounds_are_money(value: int) -> None:
    assert _Price.model_validate({"price": value}).price == value
    assert _Price.model_validate_json(f'{{"price": {value}}}').price == value


@pytest.mark.parametrize("value", ["100", True, 100.0, -1, MAX_AMOUNT + 1, 2**63, None])
def test_anything_else_is_refused(value: Any) -> None:
    with pytest.raises(ValidationError):
        _Price.model_validate({"price": value})


def test_a_total_past_the_bound_is_a_value_error() -> None:
    assert total([MAX_AMOUNT // 2, MAX_AMOUNT // 2], what="x") == MAX_AMOUNT
    with pytest.raises(ValueError, match="the order's goods amount is 93"):
        total([10**17] * 93, what="the order's goods amount")
