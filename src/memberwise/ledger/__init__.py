"""The ledgers: points (lots, expiry, refunds), coupons (budgets, exactly-once redemption),
benefit counters, and the orders and checkout that drive them (see docs/ledgers.md)."""
