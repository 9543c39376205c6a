"""Every query of the events domain (the operational-store side: receipts)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, select, true

from memberwise.events.tables import event_receipts
from memberwise.kit.db import insert_ignore, string_values


def claim(conn: Connection, event_ids: Sequence[str]) -> set[str]:
    """Record receipts for ``event_ids``; return the ids that were new.

    One ``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING``: a concurrent transaction
    claiming the same ids makes this one wait for it and then skip them, so each id is
    reported new exactly once.
    """
    if not event_ids:
        return set()
    ids = string_values(conn, event_ids)
    stmt = (
        insert_ignore(conn, event_receipts)
        .from_select(["event_id"], select(ids.c.value).where(true()))
        .returning(event_receipts.c.event_id)
    )
    return set(conn.execute(stmt).scalars())
