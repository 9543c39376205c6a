"""The service desk's tables: tickets and their thread, events and SLA clocks; agents and their
daily budgets; compensations and approvals; after-sales requests.

Every row carries (or hangs off a ticket that carries) ``member_id``, so the desk shards with the
rest of the store.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from memberwise.kit.db import metadata
from memberwise.kit.time import UTCDateTime

service_tickets = Table(
    "service_tickets",
    metadata,
    Column("ticket_id", String(32), primary_key=True),
    Column("member_id", String(128), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("priority", String(16), nullable=False),
    # The member's tier when the ticket was opened, and its rank in the ladder (queue order).
    Column("tier", String(64), nullable=True),
    Column("tier_rank", Integer, nullable=False),
    # new, open, pending_member, pending_third_party, resolved, closed, merged
    Column("state", String(24), nullable=False),
    Column("pending_reason", Text, nullable=True),
    Column("subject", Text, nullable=False),
    Column("order_id", String(128), nullable=True),
    Column("item_ids", JSON, nullable=False),
    Column("source", String(16), nullable=False),  # member, staff, auto
    Column("skill", String(32), nullable=True),
    Column("assignee", String(64), nullable=True),
    Column("escalated_to", String(64), nullable=True),
    Column("policy", String(64), nullable=True),
    # The nearest breach deadline of the running clocks (far future when none): the queue order.
    Column("due_at", UTCDateTime, nullable=False),
    Column("merged_into", String(32), nullable=True),
    Column("agent_replies", Integer, nullable=False),
    Column("reopened", Integer, nullable=False),
    Column("csat", Integer, nullable=True),
    Column("csat_comment", Text, nullable=True),
    # The caller's idempotency key (per member): a retried opening returns the first ticket.
    Column("open_key", String(200), nullable=True),
    Column("opened_by", String(64), nullable=False),
    Column("opened_at", UTCDateTime, nullable=False),
    Column("first_response_at", UTCDateTime, nullable=True),
    Column("resolved_at", UTCDateTime, nullable=True),
    Column("closed_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("member_id", "open_key", name="uq_service_tickets_member_key"),
    Index("ix_service_tickets_member_opened", "member_id", "opened_at"),
    Index("ix_service_tickets_assignee_state", "assignee", "state"),
)
# The queue: unassigned tickets in queue order (highest tier first, nearest deadline), so a
# queue read walks the index and stops at its limit instead of sorting every queued ticket.
Index(
    "ix_service_tickets_queue",
    service_tickets.c.assignee,
    service_tickets.c.tier_rank.desc(),
    service_tickets.c.due_at,
    service_tickets.c.ticket_id,
)

service_messages = Table(
    "service_messages",
    metadata,
    Column("message_id", String(32), primary_key=True),
    Column("ticket_id", String(32), nullable=False),
    Column("author_kind", String(16), nullable=False),  # member, agent, system
    Column("author", String(64), nullable=False),
    Column("internal", Boolean, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_service_messages_ticket", "ticket_id", "created_at"),
)

service_events = Table(
    "service_events",
    metadata,
    Column("event_id", String(32), primary_key=True),
    Column("ticket_id", String(32), nullable=False),
    Column("member_id", String(128), nullable=False),
    # opened, state, assigned, queued, sla.warning, sla.breach, escalated, merged, reopened,
    # policy, compensation, after_sales, csat, handover
    Column("kind", String(32), nullable=False),
    Column("metric", String(24), nullable=True),
    Column("late_seconds", BigInteger, nullable=True),
    Column("actor", String(64), nullable=False),
    Column("details", JSON, nullable=True),
    Column("at", UTCDateTime, nullable=False),
    Index("ix_service_events_ticket", "ticket_id", "at"),
    Index("ix_service_events_kind_at", "kind", "at"),
)

service_clocks = Table(
    "service_clocks",
    metadata,
    Column("ticket_id", String(32), nullable=False),
    Column("metric", String(24), nullable=False),
    Column("target_seconds", BigInteger, nullable=False),
    Column("hours", String(16), nullable=False),
    Column("elapsed_seconds", BigInteger, nullable=False),
    Column("running", Boolean, nullable=False),
    Column("since", UTCDateTime, nullable=True),
    Column("stopped", Boolean, nullable=False),
    Column("warned", Integer, nullable=False),
    Column("breached", Boolean, nullable=False),
    # When the next warning or the breach falls due (NULL: paused or stopped): the sweep's key.
    Column("alert_at", UTCDateTime, nullable=True),
    Column("stopped_at", UTCDateTime, nullable=True),
    Column("met", Boolean, nullable=True),
    PrimaryKeyConstraint("ticket_id", "metric", name="pk_service_clocks"),
    Index("ix_service_clocks_alert_at", "alert_at"),
)

service_agents = Table(
    "service_agents",
    metadata,
    Column("staff_id", String(64), primary_key=True),
    Column("team", String(64), nullable=False),
    Column("skills", JSON, nullable=False),
    Column("capacity", Integer, nullable=False),
    # Live tickets assigned; changed only by a guarded ``load = load + 1 WHERE load < capacity``.
    Column("load", Integer, nullable=False),
    # The agent's row of the program's authority matrix (agent, manager, supervisor, finance).
    Column("authority", String(32), nullable=False),
    Column("supervisor_id", String(64), nullable=True),
    Column("active", Boolean, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

service_budgets = Table(
    "service_budgets",
    metadata,
    Column("staff_id", String(64), nullable=False),
    Column("day", String(10), nullable=False),  # display time zone, YYYY-MM-DD
    # Changed only by a guarded ``used = used + :v WHERE used + :v <= :limit``.
    Column("used", BigInteger, nullable=False),
    PrimaryKeyConstraint("staff_id", "day", name="pk_service_budgets"),
)

service_compensations = Table(
    "service_compensations",
    metadata,
    Column("compensation_id", String(32), primary_key=True),
    Column("ticket_id", String(32), nullable=False),
    Column("member_id", String(128), nullable=False),
    Column("kind", String(16), nullable=False),  # points, coupon, money
    Column("amount", BigInteger, nullable=False),  # points, or fen
    Column("coupon_template", String(64), nullable=True),
    Column("value", BigInteger, nullable=False),  # fen, what it costs against the budgets
    Column("merchant_id", String(128), nullable=True),  # paid in advance for a merchant at fault
    Column("reason", Text, nullable=False),
    # paid, pending_approval, rejected
    Column("status", String(24), nullable=False),
    Column("required_role", String(32), nullable=True),
    Column("requested_by", String(64), nullable=False),
    Column("decided_by", String(64), nullable=True),
    Column("reference", String(128), nullable=True),  # ledger entry / coupon id
    Column("request_key", String(200), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("decided_at", UTCDateTime, nullable=True),
    UniqueConstraint("ticket_id", "request_key", name="uq_service_compensations_key"),
    Index("ix_service_compensations_status", "status", "created_at"),
)

service_after_sales = Table(
    "service_after_sales",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("ticket_id", String(32), nullable=False),
    Column("member_id", String(128), nullable=False),
    Column("order_id", String(128), nullable=False),
    Column("type", String(24), nullable=False),  # refund_only, return_refund, exchange, repair
    Column("lines", JSON, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("reason", Text, nullable=True),
    Column("no_reason", Boolean, nullable=False),
    # requested, approved, shipped, received, refunded, done, rejected
    Column("status", String(24), nullable=False),
    Column("express", Boolean, nullable=False),
    Column("refund_id", String(128), nullable=True),
    Column("return_card", Boolean, nullable=False),
    Column("step", String(16), nullable=True),  # the step now awaited
    Column("step_due_at", UTCDateTime, nullable=True),
    Column("request_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_service_after_sales_order", "order_id"),
    Index("ix_service_after_sales_step_due", "step_due_at"),
)
