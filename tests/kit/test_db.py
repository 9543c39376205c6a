"""kit.db's one-parameter value lists, on both stores (PostgreSQL splits one text when it can)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, select

from memberwise.kit.db import string_values

ODD = ["a", "", "b,c", 'q"uote', "{brace}", "back\\slash", "NULL", " spaced ", "日本", "a\nb"]


@pytest.mark.parametrize(
    "values",
    [
        [],
        [""],
        ["", ""],
        ["only"],
        ODD,
        [*ODD, "unit\x1fseparator"],  # holds the separator: sent as an array instead
        [f"m{i:07d}" for i in range(20_000)],
    ],
    ids=["none", "one-empty", "two-empty", "one", "odd", "separator", "many"],
)
def test_string_values_gives_back_every_value_in_order(db_url: str, values: list[str]) -> None:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            table = string_values(conn, values)
            got = list(conn.execute(select(table.c.value)).scalars())
    finally:
        engine.dispose()
    assert got == values
