"""Campaigns and every targeted member's arm and send (the exposure log)."""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, String, Table, Text

from memberwise.kit.db import metadata
from memberwise.kit.time import UTCDateTime

campaigns = Table(
    "campaigns",
    metadata,
    Column("campaign_id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # draft | running | finished
    Column("definition", Text, nullable=False),  # CampaignCreate as JSON
    # The experiment's assignment salt: fixed at creation, so a relaunch assigns alike.
    Column("salt", String(64), nullable=False),
    # Fixed at launch, before any outcome exists: the effect size the sequential test is tuned
    # to (fen per member), from the pre-period's spend.
    Column("mde_fen", String(32), nullable=True),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("launched_at", UTCDateTime, nullable=True),
)

campaign_members = Table(
    "campaign_members",
    metadata,
    Column("campaign_id", String(40), primary_key=True),
    Column("member_id", String(128), primary_key=True),
    Column("arm", String(32), nullable=False),  # holdout | treatment
    # scheduled | sent | held_out | skipped
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("send_at", UTCDateTime, nullable=True),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("message_id", String(40), nullable=True),
    Index("ix_campaign_members_status_send_at", "status", "send_at"),
    Index("ix_campaign_members_member_sent", "member_id", "sent_at"),
)

journeys = Table(
    "journeys",
    metadata,
    Column("journey_id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # active | paused
    Column("definition", Text, nullable=False),  # JourneyCreate as JSON
    Column("created_by", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

journey_enrollments = Table(
    "journey_enrollments",
    metadata,
    Column("journey_id", String(40), primary_key=True),
    Column("member_id", String(128), primary_key=True),
    # What made the member enter (a lot, a subscription, an invitation, a model version): the
    # same trigger never enrolls twice; a new one does.
    Column("trigger_key", String(128), primary_key=True),
    Column("step", Integer, nullable=False),  # the next step to run
    Column("status", String(16), nullable=False),  # active | completed | exited
    Column("next_at", UTCDateTime, nullable=True),
    Column("entered_at", UTCDateTime, nullable=False),
    Column("exit_reason", Text, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_journey_enrollments_status_next", "status", "next_at"),
)
