"""Each member's own data key (envelope encryption), so one member's PII can be shredded.

A member's PII is sealed under a random 32-byte key of their own; that key is stored sealed
under the PII key (the key-encryption key) in ``member_keys``. Erasing the member deletes the
row: every copy of their sealed PII, in the store, its WAL, backups or exports, can no longer be
opened. Members registered before member keys existed stay readable under the PII key itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from sqlalchemy import Connection

from memberwise.kit.time import utcnow
from memberwise.privacy import repository
from memberwise.privacy.crypto import FieldCipher


def _context(member_id: str) -> str:
    return f"member_keys:{member_id}"


def member_ciphers(
    conn: Connection, master: FieldCipher, member_ids: Sequence[str], *, create: bool
) -> dict[str, FieldCipher]:
    """Member id -> a cipher under that member's key; ``create`` makes keys for those without.

    Without ``create``, members with no key are left out (their PII, if any, is sealed under
    the PII key itself).
    """
    ids = list(dict.fromkeys(member_ids))
    found = repository.get_member_keys(conn, ids) if ids else {}
    if create:
        missing = [m for m in ids if m not in found]
        rows = [
            {
                "member_id": m,
                "key_enc": master.seal(os.urandom(32).hex(), context=_context(m)),
                "created_at": utcnow(),
            }
            for m in missing
        ]
        repository.insert_member_keys(conn, rows)
        # Read back: a concurrent transaction may have created the key first (insert ignored).
        found.update(repository.get_member_keys(conn, missing) if missing else {})
    return {
        m: FieldCipher(bytes.fromhex(master.open(k, context=_context(m)))) for m, k in found.items()
    }


def member_cipher(
    conn: Connection, master: FieldCipher, member_id: str, *, create: bool = False
) -> FieldCipher:
    """The cipher of the member's PII: their own key (made when ``create``) or the PII key."""
    return member_ciphers(conn, master, [member_id], create=create).get(member_id, master)


def shred(conn: Connection, member_id: str) -> bool:
    """Destroy the member's key; True when there was one."""
    return repository.delete_member_key(conn, member_id) == 1
