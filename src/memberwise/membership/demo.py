"""Membership activity for the demo platform (`memberwise run`): account managers, paid
subscriptions with their payment callbacks, and a few accepted black-card invitations, so a
newcomer has every part of the program to look at. Idempotent: a second run changes nothing
it made before (fixed idempotency keys and payment ids)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from memberwise.kit.db import transaction
from memberwise.kit.errors import Conflict
from memberwise.kit.time import utcnow
from memberwise.membership import grants, subscriptions
from memberwise.membership import managers as membership_managers
from memberwise.membership.schemas import PaymentIn, SubscriptionStatus
from memberwise.membership.tables import member_tiers
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import Principal, Role, StaffCreate
from memberwise.program.schemas import Program
from memberwise.runtime import Runtime

DEMO_ACTOR = Principal(key_id="demo", role=Role.platform, name="demo platform")
MANAGERS = (("am-01", "王经理"), ("am-02", "李经理"), ("am-03", "张经理"))
#: Members who join a plan: everyone the member price applies to, and every Nth other member.
EVERY_NTH = 100


def seed(runtime: Runtime, program: Program) -> dict[str, int]:
    """Create managers, subscriptions and accepted invitations; counts of what exists after."""
    now = utcnow()
    counts: dict[str, int] = {"managers": 0, "subscriptions": 0, "accepted": 0}
    with transaction(runtime.engine) as conn:
        if program.black_card is not None:
            for staff_id, name in MANAGERS:
                privacy.create_staff(
                    conn, StaffCreate(staff_id=staff_id, name=name, role=Role.service)
                )
                membership_managers.add_manager(conn, program, staff_id, 10)
                counts["managers"] += 1
            # Half of all invitations are accepted (the rest stay pending for operators to see).
            every = grants.list_invitations(conn, status=None, after=None, limit=500).items
            accepted = sum(1 for i in every if i.status == "accepted")
            pending = [i for i in every if i.status == "pending"]
            for invitation in pending[: max(0, (len(every) + 1) // 2 - accepted)]:
                grants.decide(conn, program, invitation.invitation_id, True, actor=DEMO_ACTOR)
            counts["accepted"] = accepted + min(
                len(pending), max(0, (len(every) + 1) // 2 - accepted)
            )
        rows = conn.execute(
            select(member_tiers.c.member_id, member_tiers.c.details).order_by(
                member_tiers.c.member_id
            )
        ).all()
    chosen = []
    for plan_name, plan in program.plans.items():
        cheapest = min([plan.fee, *(p.fee for p in plan.prices)])
        for n, (member_id, details) in enumerate(rows):
            if _fee(details, plan_name, plan.fee) == cheapest or n % EVERY_NTH == 0:
                chosen.append((plan_name, member_id))
    # One transaction per batch: a commit per subscription would cost the demo seconds.
    for start in range(0, len(chosen), 250):
        with transaction(runtime.engine) as conn:
            for plan_name, member_id in chosen[start : start + 250]:
                try:
                    sub = subscriptions.join(
                        conn,
                        program,
                        member_id,
                        plan_name,
                        at=now,
                        key=f"demo-{plan_name}",
                        actor=DEMO_ACTOR,
                    )
                except Conflict:
                    continue
                if sub.status is SubscriptionStatus.pending and sub.invoices:
                    payment = PaymentIn(
                        payment_id=f"demo-{sub.subscription_id}", amount=sub.invoices[0].amount
                    )
                    subscriptions.pay(
                        conn, program, sub.subscription_id, payment, at=now, actor=DEMO_ACTOR
                    )
                counts["subscriptions"] += 1
    return counts


def _fee(details: Any, plan: str, default: int) -> int:
    fees = json.loads(details or "{}").get("fees", {})
    return int(fees.get(plan, default))
