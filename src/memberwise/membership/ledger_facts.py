"""What the membership domain asks of the ledger, which sits above it in the domain order.

Tiers can qualify by points earned and a paid plan's refund depends on whether a benefit was
used; both facts live in the ledger's tables. The ledger registers its answers here when it is
imported (``memberwise.ledger``), so membership never imports the ledger and no circle forms.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Select


class LedgerFacts(Protocol):
    """The ledger's answers membership needs."""

    def earned_in_window(self, conn: Connection, as_of: datetime, days: int) -> dict[str, int]:
        """Points each member earned in the ``days`` before ``as_of``."""
        ...

    def earned_since(self, conn: Connection, since: dict[str, datetime]) -> dict[str, int]:
        """Points each member earned since their own time in ``since``."""
        ...

    def earned_in_window_query(self, as_of: datetime, days: int) -> Select[Any]:
        """The query behind :meth:`earned_in_window`: (member_id, points), one row per member
        who earned any, for a Spark build to stream out of the store in chunks."""
        ...

    def earned_lots_query(self) -> Select[Any]:
        """(member_id, earned_at, points) of every earned lot that counts: what
        :meth:`earned_since` sums per member, streamed out by a Spark build and summed there."""
        ...

    def used_since(
        self, conn: Connection, member_id: str, benefits: Collection[str], since: datetime
    ) -> bool:
        """Whether the member used any of ``benefits`` since ``since``."""
        ...


_registered: LedgerFacts | None = None


def register(facts: LedgerFacts) -> None:
    """Called once by the ledger package when it is imported."""
    global _registered
    _registered = facts


def ledger() -> LedgerFacts:
    """The registered ledger. Raises RuntimeError when the ledger was never imported (a
    programming error: every entry point imports every domain)."""
    if _registered is None:
        raise RuntimeError("memberwise.ledger is not loaded; import it before evaluating tiers")
    return _registered
