"""Money and points as the API takes them: strict integers of minor units, bounded so that no
amount and no sum the store keeps can pass a signed 64-bit column.

``"100"`` and ``true`` are refused (JSON's ``true`` would else be read as 1 fen). Every single
amount is at most :data:`MAX_AMOUNT`, and so is every total made of many (an order's goods,
lines of a cart): a total is checked with :func:`total` before it is stored, so ten thousand
maximal orders still sum far below 2^63.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from pydantic import Field, StrictInt

#: The largest amount of money (fen) or points one field or one total may hold: 10^12 fen is
#: ten billion yuan, and 9 million such totals still fit in a signed 64-bit integer.
MAX_AMOUNT = 10**12

#: A non-negative amount of minor units (fen/cents), strict integer, at most MAX_AMOUNT.
Money = Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT, description="Minor units (fen).")]
#: A non-negative number of points, strict integer, at most MAX_AMOUNT.
Points = Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT)]


def total(amounts: Iterable[int], *, what: str) -> int:
    """The sum of ``amounts``. Raises ValueError (a validation error in a schema) when it
    passes MAX_AMOUNT, naming ``what`` was summed."""
    result = sum(amounts)
    if result > MAX_AMOUNT:
        raise ValueError(f"{what} is {result}, above the largest amount {MAX_AMOUNT}")
    return result
