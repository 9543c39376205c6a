"""What the console knows about the person using it."""

from __future__ import annotations

from pydantic import BaseModel

from memberwise.privacy.schemas import Principal, Role


class ConsoleUser(BaseModel):
    """A signed-in staff member: their account, the principal their actions are audited as,
    and the CSRF token their forms must carry."""

    staff_id: str
    name: str
    role: Role
    csrf_token: str

    @property
    def principal(self) -> Principal:
        # The audit log's actor column holds 64 characters; staff ids hold up to 64 as well.
        return Principal(
            key_id=f"staff:{self.staff_id}"[:64],
            role=self.role,
            name=self.name,
            staff_id=self.staff_id,
        )
