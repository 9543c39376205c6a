"""Typed factories for members."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from memberwise.members import service
from memberwise.members.schemas import MemberCreate, MemberOut
from memberwise.privacy.crypto import FieldCipher
from memberwise.privacy.schemas import SYSTEM


def create_member(
    conn: Connection, cipher: FieldCipher, member_id: str = "m1", **fields: Any
) -> MemberOut:
    data = {"name": "王芳", "phone": "13912345678", "email": "wf@example.com", "region": "浙江"}
    data.update(fields)
    member, _ = service.create_member(
        conn, cipher, MemberCreate(member_id=member_id, **data), actor=SYSTEM
    )
    return member
