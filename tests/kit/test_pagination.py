"""One cursor rule for every list: what encode_cursor made reads back; anything else is
refused as invalid_cursor (never silently read as the first page)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memberwise.kit.pagination import InvalidCursor, decode_cursor, encode_cursor


@given(st.text(min_size=1, max_size=200))
def test_a_cursor_we_made_reads_back_as_its_key(key: str) -> None:
    assert decode_cursor(encode_cursor(key)) == key


@pytest.mark.parametrize("cursor", [None, ""])
def test_no_cursor_is_the_first_page(cursor: str | None) -> None:
    assert decode_cursor(cursor) is None


@pytest.mark.parametrize(
    "cursor", ["!!!!", "%%%", "a", "YWI=", "Zm9v\n", "Zm 9v", "Zm9v!", "_w", "/w==", "+w"]
)
def test_garbage_is_an_invalid_cursor(cursor: str) -> None:
    with pytest.raises(InvalidCursor) as refused:
        decode_cursor(cursor)
    assert refused.value.code == "invalid_cursor"
    assert refused.value.status_code == 422


@given(st.text(max_size=40))
def test_any_text_is_either_refused_or_a_cursor_we_would_make(cursor: str) -> None:
    try:
        key = decode_cursor(cursor)
    except InvalidCursor:
        return
    assert key is None or encode_cursor(key) == cursor
