"""the staff console: passwords, one-time sign-in links, sessions; members' contact hashes

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 22:55:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import memberwise.kit.time

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time() -> memberwise.kit.time.UTCDateTime:
    return memberwise.kit.time.UTCDateTime(timezone=True)


def _staff_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["staff_id"], ["staff.staff_id"], name=op.f(f"fk_{table}_staff_id_staff")
    )


def upgrade() -> None:
    op.create_table(
        "console_passwords",
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        _staff_fk("console_passwords"),
        sa.PrimaryKeyConstraint("staff_id", name=op.f("pk_console_passwords")),
    )
    op.create_table(
        "console_links",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("expires_at", _time(), nullable=False),
        sa.Column("used_at", _time(), nullable=True),
        _staff_fk("console_links"),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_console_links")),
    )
    op.create_index("ix_console_links_staff", "console_links", ["staff_id"])
    op.create_table(
        "console_sessions",
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("last_seen_at", _time(), nullable=False),
        sa.Column("ended_at", _time(), nullable=True),
        _staff_fk("console_sessions"),
        sa.PrimaryKeyConstraint("session_hash", name=op.f("pk_console_sessions")),
    )
    op.create_index("ix_console_sessions_staff", "console_sessions", ["staff_id"])
    # Keyed hashes of members' phone and email, for the console's search (members registered
    # earlier get theirs from `memberwise members index-contacts`).
    op.add_column("members", sa.Column("phone_hash", sa.String(length=64), nullable=True))
    op.add_column("members", sa.Column("email_hash", sa.String(length=64), nullable=True))
    op.create_index("ix_members_phone_hash", "members", ["phone_hash"])
    op.create_index("ix_members_email_hash", "members", ["email_hash"])


def downgrade() -> None:
    op.drop_index("ix_members_email_hash", table_name="members")
    op.drop_index("ix_members_phone_hash", table_name="members")
    with op.batch_alter_table("members") as batch:
        batch.drop_column("email_hash")
        batch.drop_column("phone_hash")
    op.drop_index("ix_console_sessions_staff", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_index("ix_console_links_staff", table_name="console_links")
    op.drop_table("console_links")
    op.drop_table("console_passwords")
