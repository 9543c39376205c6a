"""published profiles: builds, member profiles, profile groups; members.credit_stars

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 23:04:51.923833
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import memberwise.kit.time

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "builds",
        sa.Column("build_id", sa.String(length=64), nullable=False),
        sa.Column("as_of", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("engine", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=True),
        sa.Column("published_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("build_id", name=op.f("pk_builds")),
    )
    op.create_table(
        "member_profiles",
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("build_id", sa.String(length=64), nullable=False),
        sa.Column("as_of", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.Column("segment", sa.String(length=64), nullable=False),
        sa.Column("persona", sa.Integer(), nullable=True),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("profile", sa.Text(), nullable=False),
        sa.Column("published_at", memberwise.kit.time.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_profiles")),
    )
    with op.batch_alter_table("member_profiles", schema=None) as batch_op:
        batch_op.create_index(
            "ix_member_profiles_persona_member", ["persona", "member_id"], unique=False
        )
        batch_op.create_index(
            "ix_member_profiles_segment_member", ["segment", "member_id"], unique=False
        )

    op.create_table(
        "profile_groups",
        sa.Column("build_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("rule", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("build_id", "kind", "name", name=op.f("pk_profile_groups")),
    )
    # A plain ADD COLUMN on both dialects (batch mode would copy the whole members table).
    op.add_column("members", sa.Column("credit_stars", sa.Integer(), nullable=True))


def downgrade() -> None:
    # DROP COLUMN exists in SQLite since 3.35; no table copy needed.
    op.drop_column("members", "credit_stars")
    op.drop_table("profile_groups")
    with op.batch_alter_table("member_profiles", schema=None) as batch_op:
        batch_op.drop_index("ix_member_profiles_segment_member")
        batch_op.drop_index("ix_member_profiles_persona_member")

    op.drop_table("member_profiles")
    op.drop_table("builds")
