"""Field-level encryption of member PII with AES-256-GCM.

Each value is sealed with a fresh 96-bit nonce and bound to its row and column through the
associated data, so a ciphertext copied into another row or column fails to decrypt.
Layout: ``version (1 byte) | nonce (12) | ciphertext+tag``. The version byte leaves room for
key rotation (a new key gets a new version; old rows stay readable until re-encrypted).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b"\x01"
_NONCE = 12


class DecryptionError(Exception):
    """A sealed value did not open: wrong key, tampered data, or a value moved between rows."""


class FieldCipher:
    """Seals and opens PII strings under one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        # A key of its own for lookup hashes, derived so the sealing key never leaves AES-GCM.
        self._lookup_key = hmac.new(key, b"memberwise lookup hash v1", hashlib.sha256).digest()

    def lookup(self, value: str, *, kind: str) -> str:
        """A keyed hash (HMAC-SHA256) of ``value`` to find a row by it without storing it in
        clear: equal values of one ``kind`` hash alike, and without the key nothing can be
        guessed from the hash (a phone number's small space cannot be enumerated offline)."""
        message = f"{kind}:{value}".encode()
        return hmac.new(self._lookup_key, message, hashlib.sha256).hexdigest()

    def seal(self, plaintext: str, *, context: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())

    def open(self, sealed: bytes, *, context: str) -> str:
        if not sealed or sealed[:1] != _VERSION:
            raise DecryptionError("unknown ciphertext version")
        nonce, body = sealed[1 : 1 + _NONCE], sealed[1 + _NONCE :]
        try:
            return self._aead.decrypt(nonce, body, context.encode()).decode()
        except InvalidTag as exc:
            raise DecryptionError("ciphertext does not open under this key and context") from exc
