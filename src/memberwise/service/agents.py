"""Desk agents and account managers as the desk routes to them: adding or changing one, the
list, and handing an agent's open tickets over when they leave."""

from __future__ import annotations

import contextlib
from datetime import datetime

from sqlalchemy import Connection, RowMapping

from memberwise.kit.errors import InvalidRequest, NotFound
from memberwise.kit.time import as_utc, utcnow
from memberwise.membership import managers as membership_managers
from memberwise.membership import service as membership
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import Principal, Role
from memberwise.program.schemas import Program
from memberwise.service import repository, sla
from memberwise.service.schemas import (
    AgentIn,
    AgentOut,
    HandoverOut,
)

# -- refusals ------------------------------------------------------------------------------------
from memberwise.service.service import LIVE, _load, _route, dispatch


class AgentNotFound(NotFound):
    code = "agent_not_found"


class NotStaff(InvalidRequest):
    code = "not_service_staff"


def _agent_out(row: RowMapping) -> AgentOut:
    return AgentOut.model_validate({**dict(row), "skills": list(row["skills"] or [])})


def put_agent(
    conn: Connection,
    program: Program,
    staff_id: str,
    data: AgentIn,
    *,
    actor: Principal,
    at: datetime | None = None,
) -> AgentOut:
    """Make a service staff member a desk agent (or change their skills, capacity, authority);
    they take queued tickets at once.

    Raises AgentNotFound (no such staff), NotStaff (not the service role), InvalidRequest (an
    authority role the program does not list).
    """
    at = as_utc(at or utcnow())
    staff = next((s for s in privacy.list_staff(conn) if s.staff_id == staff_id), None)
    if staff is None:
        raise AgentNotFound(
            f"no staff member {staff_id}; create them with `memberwise staff create`"
        )
    if staff.role is not Role.service:
        raise NotStaff(f"{staff_id} has role {staff.role.value}; desk agents have the service role")
    if data.authority not in program.service.authority:
        names = ", ".join(program.service.authority)
        raise InvalidRequest(f"unknown authority {data.authority!r}; the program lists {names}")
    repository.upsert_agent(
        conn,
        {"staff_id": staff_id, **data.model_dump(), "active": True, "updated_at": at},
    )
    privacy.audit(conn, actor, "service.agent", "staff", staff_id, details=data.model_dump())
    dispatch(conn, program, staff_id, at=at)
    row = repository.get_agent(conn, staff_id)
    assert row is not None
    return _agent_out(row)


def list_agents(conn: Connection) -> list[AgentOut]:
    return [_agent_out(r) for r in repository.list_agents(conn)]


def agent_leaves(
    conn: Connection,
    program: Program,
    staff_id: str,
    *,
    actor: Principal,
    at: datetime | None = None,
) -> HandoverOut:
    """A staff member leaves the desk: if they manage black-card members those go to other
    managers (the membership domain), and each open ticket of theirs is routed again -- to the
    member's new manager, another agent, or the queue.

    Raises AgentNotFound.
    """
    at = sla.second(as_utc(at or utcnow()))
    if not repository.deactivate_agent(conn, staff_id, at):
        raise AgentNotFound(f"{staff_id} is not an active desk agent")
    with contextlib.suppress(membership.ManagerNotFound):  # not an account manager
        membership_managers.remove_manager(conn, program, staff_id, actor=actor)
    privacy.audit(conn, actor, "service.agent_leaves", "staff", staff_id)
    reassigned = queued = 0
    ticket_ids = repository.live_ticket_ids_of(conn, staff_id, LIVE)
    for ticket_id in ticket_ids:
        ticket = _load(conn, program, ticket_id, actor)
        ticket.set(assignee=None)
        _route(ticket, at)
        ticket.event("handover", at, details={"from": staff_id, "to": ticket.row["assignee"]})
        ticket.save(at)
        if ticket.row["assignee"] is None:
            queued += 1
        else:
            reassigned += 1
    return HandoverOut(
        staff_id=staff_id, tickets=len(ticket_ids), reassigned=reassigned, queued=queued
    )
