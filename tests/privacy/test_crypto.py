from __future__ import annotations

import pytest

from memberwise.privacy.crypto import DecryptionError, FieldCipher

KEY = bytes(range(32))


def test_sealed_value_opens_to_the_plaintext_under_its_context() -> None:
    cipher = FieldCipher(KEY)
    sealed = cipher.seal("张伟", context="members.name:m1")
    assert cipher.open(sealed, context="members.name:m1") == "张伟"
    assert "张伟".encode() not in sealed


def test_the_same_value_seals_differently_each_time() -> None:
    cipher = FieldCipher(KEY)
    assert cipher.seal("13800138000", context="c") != cipher.seal("13800138000", context="c")


def test_a_value_moved_to_another_row_does_not_open() -> None:
    cipher = FieldCipher(KEY)
    sealed = cipher.seal("a@example.com", context="members.email:m1")
    with pytest.raises(DecryptionError):
        cipher.open(sealed, context="members.email:m2")


def test_tampered_or_foreign_key_values_do_not_open() -> None:
    sealed = bytearray(FieldCipher(KEY).seal("x", context="c"))
    sealed[-1] ^= 1
    with pytest.raises(DecryptionError):
        FieldCipher(KEY).open(bytes(sealed), context="c")
    with pytest.raises(DecryptionError):
        FieldCipher(bytes(32)).open(FieldCipher(KEY).seal("x", context="c"), context="c")
    with pytest.raises(DecryptionError):
        FieldCipher(KEY).open(b"\x02garbage", context="c")
