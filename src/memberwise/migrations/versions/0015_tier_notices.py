"""tier_notices: the downgrade notices given, once each (journeys and the desk read them)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 23:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import memberwise.kit.time

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time() -> memberwise.kit.time.UTCDateTime:
    return memberwise.kit.time.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tier_notices",
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("downgrade_on", _time(), nullable=False),
        sa.Column("to_tier", sa.String(length=64), nullable=False),
        sa.Column("build_id", sa.String(length=64), nullable=False),
        sa.Column("noticed_at", _time(), nullable=False),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("member_id", "tier", "downgrade_on", name=op.f("pk_tier_notices")),
    )
    op.create_index("ix_tier_notices_downgrade_on", "tier_notices", ["downgrade_on"])


def downgrade() -> None:
    op.drop_table("tier_notices")
