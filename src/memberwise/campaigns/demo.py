"""The demo platform's campaign and journey, made once by ``memberwise run`` so a newcomer finds
a campaign with its holdout, sends and results, and a journey with enrollments."""

from __future__ import annotations

from sqlalchemy import func, select

from memberwise.campaigns import journeys, service
from memberwise.campaigns.schemas import CampaignCreate, JourneyCreate
from memberwise.campaigns.tables import campaigns
from memberwise.kit.db import transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.privacy.schemas import SYSTEM
from memberwise.profiles import service as profiles
from memberwise.program.schemas import Program
from memberwise.runtime import Runtime

WIN_BACK = CampaignCreate.model_validate(
    {
        "name": "win back the at-risk",
        "audience": {"segment": "at_risk"},
        # Two offers against the holdout (A/B/n): which brings the at-risk back, if any?
        "arms": [
            {
                "name": "save_30",
                "offer": {
                    "kind": "coupon",
                    "coupon_template": "save_30_over_300",
                    "message": "30 CNY off your next order of 300 CNY",
                },
            },
            {
                "name": "free_shipping",
                "offer": {
                    "kind": "coupon",
                    "coupon_template": "ship_free",
                    "message": "Free shipping on your next order",
                },
            },
        ],
        "channels": ["app", "push"],
        "holdout_percent": 10,
        "send_at_best_hour": False,
    }
)
CHURN_RISK = JourneyCreate.model_validate(
    {
        "name": "we miss you",
        "trigger": {"kind": "churn_risk", "threshold": 0.7},
        "channels": ["app"],
        "steps": [
            {"offer": {"kind": "message", "message": "New arrivals picked for you"}},
            {
                "wait_hours": 72,
                "offer": {"kind": "coupon", "coupon_template": "ship_free", "message": "On us"},
            },
        ],
    }
)
NEAR_TIER = JourneyCreate.model_validate(
    {
        "name": "almost there",
        "trigger": {"kind": "tier_near", "within_fen": 50_000},
        "channels": ["app"],
        "steps": [{"offer": {"kind": "message", "message": "Only {detail}"}}],
    }
)


def seed(runtime: Runtime, program: Program) -> str:
    """Launch the demo campaign and journey once (a later run only says what they hold)."""
    with transaction(runtime.engine) as conn:
        if conn.execute(select(func.count()).select_from(campaigns)).scalar_one():
            made = service.list_all(conn)
            return f"{len(made)} campaign(s) already there"
        # The at-risk segment when the demo has one, else its largest segment (a tiny demo).
        sizes = {s.name: s.members for s in profiles.list_segments(conn).segments}
        target = (
            "at_risk" if sizes.get("at_risk") else max(sizes, key=sizes.__getitem__, default="")
        )
        body = WIN_BACK.model_copy(
            update={"audience": WIN_BACK.audience.model_copy(update={"segment": target})}
        )
        try:
            campaign = service.create(conn, program, body, actor=SYSTEM)
            service.launch(conn, program, campaign.campaign_id, actor=SYSTEM)
            service.send_due(conn, program)
            journeys.create(conn, program, CHURN_RISK, actor=SYSTEM)
            near = journeys.create(conn, program, NEAR_TIER, actor=SYSTEM)
            stepped = journeys.run(conn, program, lake=runtime.lake)
            counts = service.get(conn, campaign.campaign_id).arms
            close = journeys.get(conn, near.journey_id).enrollments
        except MemberwiseError as exc:  # e.g. a program without these templates or segments
            return f"no demo campaign ({exc.code}: {exc.message})"
    shown = "; ".join(
        f"{arm} " + ", ".join(f"{n:,} {status}" for status, n in sorted(by_status.items()))
        for arm, by_status in sorted(counts.items())
    )
    return (
        f"campaign '{WIN_BACK.name}' to segment {target}: {shown} (quiet hours respected); "
        f"journeys '{CHURN_RISK.name}' and '{NEAR_TIER.name}': {stepped.enrolled:,} enrolled "
        f"({sum(close.values()):,} close to their next tier), {stepped.stepped:,} sent"
    )
