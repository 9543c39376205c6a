"""The one identifier rule: the same answer from Python, pydantic (Rust regex) and DuckDB (RE2),
and no accepted id that a URL path, a file name or a terminal would read differently."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError

from memberwise.kit.ids import ID_BODY, MemberId, is_valid_id


class _Body(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)  # as MemberFields has it

    member_id: MemberId


def _pydantic_accepts(value: str) -> bool:
    try:
        _Body(member_id=value)
    except ValidationError:
        return False
    return True


def _duckdb_accepts(values: list[str]) -> list[bool]:
    con = duckdb.connect()
    rows = con.execute(
        "SELECT regexp_full_match(v, ?) FROM unnest(?) WITH ORDINALITY AS t(v, i) ORDER BY i",
        [ID_BODY, values],
    ).fetchall()
    return [bool(r[0]) for r in rows]


GOOD = ["m1", "U_42", "shop:7:user-9", "a.b.c", "0042", "x.", "_", "a-b", "x" * 128]
BAD = [
    "",
    "x" * 129,
    "m\x001",
    "x/profile",
    "a\\b",
    ".",
    "..",
    "a..b",
    ".hidden",
    "-flag",
    ":x",
    "m\u202e1",
    "m\u200f1",
    "m\U0001f600",
    "méx",
    " m1",
    "m1 ",
    "m1\n",
    "m 1",
    "a?b",
    "a#b",
    "a%2Fb",
]


@pytest.mark.parametrize("value", GOOD)
def test_ordinary_ids_are_accepted_everywhere(value: str) -> None:
    assert is_valid_id(value)
    assert _pydantic_accepts(value)
    assert _duckdb_accepts([value]) == [True]


@pytest.mark.parametrize("value", BAD)
def test_dangerous_ids_are_refused_everywhere(value: str) -> None:
    assert not is_valid_id(value)
    assert not _pydantic_accepts(value)


def test_duckdb_applies_the_same_pattern() -> None:
    short = [v for v in GOOD + BAD if 0 < len(v) <= 128]  # the SQL checks the length apart
    assert _duckdb_accepts(short) == [is_valid_id(v) for v in short]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=20))
def test_python_pydantic_and_duckdb_agree_on_any_text(value: str) -> None:
    expected = is_valid_id(value)
    assert _pydantic_accepts(value) == expected
    if value and "\x00" not in value:  # DuckDB strings cannot hold NUL
        assert _duckdb_accepts([value]) == [expected]
    if expected:
        assert "/" not in value and ".." not in value and value.isascii()
        assert value == value.strip() and value[0] not in ".-:"
