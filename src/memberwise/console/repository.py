"""Every query of the console: its own tables (passwords, links, sessions). What its pages show
of the domains they read through the domains' services."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, RowMapping, delete, insert, select, update

from memberwise.console.tables import console_links, console_passwords, console_sessions


def get_password_hash(conn: Connection, staff_id: str) -> str | None:
    row = conn.execute(
        select(console_passwords.c.password_hash).where(console_passwords.c.staff_id == staff_id)
    ).scalar_one_or_none()
    return row


def put_password_hash(conn: Connection, staff_id: str, password_hash: str, now: datetime) -> None:
    conn.execute(delete(console_passwords).where(console_passwords.c.staff_id == staff_id))
    conn.execute(
        insert(console_passwords).values(
            staff_id=staff_id, password_hash=password_hash, updated_at=now
        )
    )


def insert_link(
    conn: Connection, token_hash: str, staff_id: str, now: datetime, expires_at: datetime
) -> None:
    conn.execute(
        insert(console_links).values(
            token_hash=token_hash, staff_id=staff_id, created_at=now, expires_at=expires_at
        )
    )


def use_link(conn: Connection, token_hash: str, now: datetime) -> str | None:
    """Mark an unused, unexpired link used; its staff id, or None. One statement, so two
    concurrent uses of one link cannot both succeed."""
    done = conn.execute(
        update(console_links)
        .where(
            console_links.c.token_hash == token_hash,
            console_links.c.used_at.is_(None),
            console_links.c.expires_at > now,
        )
        .values(used_at=now)
    )
    if done.rowcount != 1:
        return None
    staff_id: str = conn.execute(
        select(console_links.c.staff_id).where(console_links.c.token_hash == token_hash)
    ).scalar_one()
    return staff_id


def insert_session(
    conn: Connection, session_hash: str, staff_id: str, method: str, now: datetime
) -> None:
    conn.execute(
        insert(console_sessions).values(
            session_hash=session_hash,
            staff_id=staff_id,
            method=method,
            created_at=now,
            last_seen_at=now,
        )
    )


def get_session(conn: Connection, session_hash: str) -> RowMapping | None:
    return (
        conn.execute(
            select(console_sessions).where(console_sessions.c.session_hash == session_hash)
        )
        .mappings()
        .first()
    )


def touch_session(conn: Connection, session_hash: str, now: datetime) -> None:
    conn.execute(
        update(console_sessions)
        .where(console_sessions.c.session_hash == session_hash)
        .values(last_seen_at=now)
    )


def end_session(conn: Connection, session_hash: str, now: datetime) -> int:
    return conn.execute(
        update(console_sessions)
        .where(
            console_sessions.c.session_hash == session_hash, console_sessions.c.ended_at.is_(None)
        )
        .values(ended_at=now)
    ).rowcount
