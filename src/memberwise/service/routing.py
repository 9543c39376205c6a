"""Who works a ticket: a black-card member's account manager, else the least-loaded agent with
the skill (load relative to capacity), else nobody yet -- the ticket waits in the queue rather
than overloading anyone.

Agents' loads change only by guarded single statements (:func:`repository.take_slot`), so two
tickets routed at once never push an agent past capacity. Account managers are dedicated: a
member's ticket reaches their manager whatever the manager's load (the seeds' promise).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from memberwise.membership import managers as membership_managers
from memberwise.program.schemas import Program
from memberwise.service import repository

#: Capacity given to an account manager who had no agent row yet (dedicated: not enforced).
MANAGER_CAPACITY = 50


@dataclass(frozen=True)
class Route:
    """Where a ticket went: ``assignee`` (None: queued) and why."""

    assignee: str | None
    reason: str  # account_manager, balanced, queued


def _manager_authority(program: Program) -> str:
    names = list(program.service.authority)
    return "manager" if "manager" in names else names[0]


def choose(
    conn: Connection,
    program: Program,
    member_id: str,
    skill: str | None,
    at: datetime,
    *,
    managed: bool = True,
) -> Route:
    """Route a new (or reopened, or handed-over) ticket and take the assignee's slot.
    ``managed=False`` says the member holds no account-manager benefit (a read saved)."""
    manager = membership_managers.manager_of(conn, member_id) if managed else None
    if manager is not None:
        agent = repository.get_agent(conn, manager.staff_id)
        if agent is None:
            repository.upsert_agent(
                conn,
                {
                    "staff_id": manager.staff_id,
                    "team": "account_managers",
                    "skills": [],
                    "capacity": MANAGER_CAPACITY,
                    "authority": _manager_authority(program),
                    "supervisor_id": None,
                    "active": True,
                    "updated_at": at,
                },
            )
        if repository.take_slot(conn, manager.staff_id, guarded=False):
            return Route(manager.staff_id, "account_manager")
    for agent in repository.free_agents(conn, skill):
        if repository.take_slot(conn, agent["staff_id"], guarded=True):
            return Route(agent["staff_id"], "balanced")
    return Route(None, "queued")
