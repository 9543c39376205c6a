"""The ledgers: points (lots, expiry, refunds), coupons (budgets, exactly-once redemption),
benefit counters, and the orders and checkout that drive them (see docs/ledgers.md).

Importing the package registers the ledger's facts that the membership domain asks for
(points earned, benefits used), so membership needs no import of the ledger."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select

from memberwise.membership import ledger_facts


class _Facts:
    """The ledger's answers to :class:`memberwise.membership.ledger_facts.LedgerFacts`."""

    def earned_in_window(self, conn: Connection, as_of: datetime, days: int) -> dict[str, int]:
        from memberwise.ledger import points

        return points.earned_in_window(conn, as_of, days)

    def earned_since(self, conn: Connection, since: dict[str, datetime]) -> dict[str, int]:
        from memberwise.ledger import points

        return points.earned_since(conn, since)

    def earned_in_window_query(self, as_of: datetime, days: int) -> Select[Any]:
        from memberwise.ledger import report_repository

        return report_repository.points_earned_window_query(as_of, days)

    def earned_lots_query(self) -> Select[Any]:
        from memberwise.ledger import report_repository

        return report_repository.earned_lots_query()

    def used_since(
        self, conn: Connection, member_id: str, benefits: Collection[str], since: datetime
    ) -> bool:
        from memberwise.ledger import benefits as ledger_benefits

        return ledger_benefits.used_since(conn, member_id, benefits, since)


ledger_facts.register(_Facts())
