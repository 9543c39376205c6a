"""Campaigns end to end on the real stores: audience, holdout, scheduled sends through the
ledger and the outbox, the frequency cap across campaigns, and the measured results."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Connection, func, insert, select
from statsmodels.stats.multitest import multipletests

from memberwise.campaigns import analysis, outcomes, service
from memberwise.campaigns.assignment import assign
from memberwise.campaigns.schemas import CampaignCreate
from memberwise.kit.outbox import outbox
from memberwise.kit.time import utcnow
from memberwise.ledger import orders, points
from memberwise.ledger.tables import coupons
from memberwise.privacy import consent
from memberwise.privacy.schemas import SYSTEM, ConsentIn
from memberwise.profiles.tables import member_profiles
from memberwise.recommend.tables import coupon_suggestions
from tests.ledger.factories import add_members, make_program, order

MEMBERS = [f"m{i:03d}" for i in range(400)]


def publish_profiles(conn: Connection, members: list[str], segment: str, tags: list[str]) -> None:
    now = utcnow()
    conn.execute(
        insert(member_profiles),
        [
            {
                "member_id": m,
                "build_id": "b1",
                "as_of": now,
                "segment": segment,
                "persona": 1,
                "tags": json.dumps(tags),
                "profile": "{}",
                "published_at": now,
            }
            for m in members
        ],
    )


def campaign(**overrides: object) -> CampaignCreate:
    body = {
        "name": "win back",
        "audience": {"segment": "at_risk"},
        "offer": {"kind": "coupon", "coupon_template": "ten_off", "message": "10 yuan off"},
        "channels": ["app"],
        "holdout_percent": 20,
        "send_at_best_hour": False,
        "quiet_hours": [0, 0],
        **overrides,
    }
    return CampaignCreate.model_validate(body)


def test_launch_send_cap_and_measure(conn: Connection) -> None:
    program = make_program()
    add_members(conn, *MEMBERS)
    publish_profiles(conn, MEMBERS, "at_risk", ["deal_seeker"])
    launched_at = utcnow() - timedelta(days=10)

    made = service.create(conn, program, campaign(), actor=SYSTEM)
    assert made.status == "draft"
    out = service.launch(conn, program, made.campaign_id, now=launched_at, actor=SYSTEM)
    salt = conn.execute(
        select(service.repository.C.c.salt).where(
            service.repository.C.c.campaign_id == made.campaign_id
        )
    ).scalar_one()
    arms = assign(salt, MEMBERS, {"holdout": 20, "treatment": 80})
    treated = sorted(m for m in MEMBERS if arms[m] == "treatment")
    assert out.members == {"held_out": 400 - len(treated), "scheduled": len(treated)}
    with pytest.raises(service.CampaignNotDraft):
        service.launch(conn, program, made.campaign_id, now=launched_at, actor=SYSTEM)

    report = service.send_due(conn, program, now=launched_at)
    assert (report.sent, report.skipped) == (len(treated), 0)
    assert service.send_due(conn, program, now=launched_at).sent == 0  # nothing twice
    got = conn.execute(
        select(coupons.c.member_id).where(coupons.c.source == "campaign").order_by("member_id")
    ).scalars()
    assert list(got) == treated
    sends = conn.execute(
        select(func.count()).select_from(outbox).where(outbox.c.event_type == "campaign.send")
    ).scalar_one()
    assert sends == len(treated)

    # A second campaign to the same audience a day later (its own salt, so its own split): the
    # 7-day cap skips exactly the members the first one reached.
    other = service.create(conn, program, campaign(name="again"), actor=SYSTEM)
    day = launched_at + timedelta(days=1)
    service.launch(conn, program, other.campaign_id, now=day, actor=SYSTEM)
    capped = service.send_due(conn, program, now=day)
    log = service.members(conn, other.campaign_id, after=None, limit=1000).items
    skipped = {m.member_id for m in log if m.status == "skipped"}
    sent = {m.member_id for m in log if m.status == "sent"}
    assert skipped and skipped <= set(treated) and not sent & set(treated)
    assert (capped.sent, capped.skipped) == (len(sent), len(skipped))
    assert {m.reason for m in log if m.status == "skipped"} == {"frequency_cap"}

    # Treated members buy more after launch: the results see it, on a sound split.
    bought = launched_at + timedelta(days=2)
    for m in [*treated[:120], *sorted(set(MEMBERS) - set(treated))[:5]]:
        orders.place(conn, program, order(f"o-{m}", m, price=20_000, at=bought))
    res = outcomes.results(conn, made.campaign_id, now=utcnow())
    assert not res.srm.mismatch
    by_metric = {r.metric: r for r in res.metrics}
    spend = by_metric["spend_per_member_fen"]
    assert spend.method == "cuped"
    assert spend.treatment == pytest.approx(120 * 20_000 / len(treated))
    assert spend.control == pytest.approx(5 * 20_000 / (400 - len(treated)))
    assert spend.ci_low > 0 and spend.p_value < 0.001
    assert spend.always_valid_low is not None and spend.always_valid_low <= spend.ci_low
    assert by_metric["conversion"].difference == pytest.approx(
        120 / len(treated) - 5 / (400 - len(treated))
    )


def test_refusals(conn: Connection) -> None:
    program = make_program()
    with pytest.raises(service.ledger_coupons.CouponTemplateNotFound):
        service.create(
            conn,
            program,
            campaign(offer={"kind": "coupon", "coupon_template": "nope"}),
            actor=SYSTEM,
        )
    made = service.create(conn, program, campaign(audience={"tag": "nobody"}), actor=SYSTEM)
    with pytest.raises(service.EmptyAudience):
        service.launch(conn, program, made.campaign_id, actor=SYSTEM)
    with pytest.raises(service.CampaignNotLaunched):
        outcomes.results(conn, made.campaign_id)
    with pytest.raises(service.CampaignNotFound):
        service.get(conn, "cmp_none")
    with pytest.raises(ValueError, match="exactly one"):
        CampaignCreate.model_validate(
            {
                "name": "x",
                "audience": {"segment": "a", "tag": "b"},
                "offer": {"kind": "message", "message": "hi"},
            }
        )


def test_a_points_campaign_stops_at_its_budget(conn: Connection) -> None:
    program = make_program()
    add_members(conn, *MEMBERS[:50])
    publish_profiles(conn, MEMBERS[:50], "loyal", [])
    body = campaign(
        audience={"segment": "loyal"},
        offer={"kind": "points", "points": 100, "message": "thanks"},
        holdout_percent=0,
        points_budget=1000,
    )
    made = service.create(conn, program, body, actor=SYSTEM)
    service.launch(conn, program, made.campaign_id, actor=SYSTEM)
    report = service.send_due(conn, program)
    assert (report.sent, report.skipped) == (10, 40)
    log = service.members(conn, made.campaign_id, after=None, limit=100, status="skipped")
    assert {m.reason for m in log.items} == {"points_budget_exhausted"}


def test_send_time_is_the_best_hour_outside_quiet_hours() -> None:
    zone = ZoneInfo("Asia/Shanghai")
    now = datetime(2026, 12, 6, 12, 30, tzinfo=UTC)  # 20:30 in Shanghai
    assert service.send_time(now, 21, (22, 8), zone) == datetime(2026, 12, 6, 13, tzinfo=UTC)
    # best hour 10 already passed today: tomorrow 10:00 local
    assert service.send_time(now, 10, (22, 8), zone) == datetime(2026, 12, 7, 2, tzinfo=UTC)
    # best hour 23 is quiet: moved to 08:00 local the next morning
    assert service.send_time(now, 23, (22, 8), zone) == datetime(2026, 12, 7, 0, tzinfo=UTC)
    # no best hour: now, unless quiet
    assert service.send_time(now, None, (22, 8), zone) == now
    late = datetime(2026, 12, 6, 15, tzinfo=UTC)  # 23:00 local
    assert service.send_time(late, None, (22, 8), zone) == datetime(2026, 12, 7, 0, tzinfo=UTC)


def test_marketing_goes_only_on_the_channels_a_member_consented_to(conn: Connection) -> None:
    program = make_program()
    add_members(conn, "p1", "p2", "p3")
    publish_profiles(conn, ["p1", "p2", "p3"], "vip", [])
    # p1 allows push, p2 allows SMS, p3 said nothing (marketing is denied by default).
    for member, purpose in (("p1", "marketing_push"), ("p2", "marketing_sms")):
        consent.record(
            conn,
            program.privacy,
            member,
            ConsentIn(purpose=purpose, status="granted", channel="app", request_id=f"r-{member}"),
            actor=SYSTEM,
        )
    body = campaign(audience={"segment": "vip"}, channels=["push", "email"], holdout_percent=0)
    made = service.create(conn, program, body, actor=SYSTEM)
    service.launch(conn, program, made.campaign_id, actor=SYSTEM)
    report = service.send_due(conn, program)
    assert (report.sent, report.skipped) == (1, 2)
    log = {
        m.member_id: m for m in service.members(conn, made.campaign_id, after=None, limit=9).items
    }
    assert (log["p1"].status, log["p2"].reason, log["p3"].reason) == (
        "sent",
        "consent_withheld",
        "consent_withheld",
    )
    [payload] = conn.execute(
        select(outbox.c.payload).where(outbox.c.event_type == "campaign.send")
    ).scalars()
    assert json.loads(payload)["channels"] == ["push"]


def fix_salt(conn: Connection, campaign_id: str) -> None:
    """A fixed salt instead of the random one, so the split (and its SRM p-value) is the same
    on every run of the test."""
    table = service.repository.C
    conn.execute(
        table.update().where(table.c.campaign_id == campaign_id).values(salt="test-salt-17")
    )


ARMS = [
    {"name": "coupon_a", "weight": 2, "offer": {"kind": "coupon", "coupon_template": "ten_off"}},
    {"name": "coupon_b", "weight": 1, "offer": {"kind": "coupon", "coupon_template": "pct"}},
    {"name": "points", "weight": 1, "offer": {"kind": "points", "points": 50}},
]
MANY = [f"n{i:04d}" for i in range(1000)]


def test_several_offer_arms_are_assigned_sent_and_measured_per_arm(conn: Connection) -> None:
    program = make_program()
    add_members(conn, *MANY)
    publish_profiles(conn, MANY, "loyal", [])
    launched_at = utcnow() - timedelta(days=10)
    body = campaign(audience={"segment": "loyal"}, offer=None, arms=ARMS, holdout_percent=20)
    assert body.ratios() == {"holdout": 20.0, "coupon_a": 40.0, "coupon_b": 20.0, "points": 20.0}
    made = service.create(conn, program, body, actor=SYSTEM)
    fix_salt(conn, made.campaign_id)
    out = service.launch(conn, program, made.campaign_id, now=launched_at, actor=SYSTEM)
    salt = conn.execute(
        select(service.repository.C.c.salt).where(
            service.repository.C.c.campaign_id == made.campaign_id
        )
    ).scalar_one()
    arms = assign(salt, MANY, body.ratios())
    by_arm = {a: sorted(m for m in MANY if arms[m] == a) for a in body.ratios()}
    assert out.arms == {
        "holdout": {"held_out": len(by_arm["holdout"])},
        **{a: {"scheduled": len(by_arm[a])} for a in ("coupon_a", "coupon_b", "points")},
    }

    report = service.send_due(conn, program, now=launched_at)
    assert (report.sent, report.skipped) == (1000 - len(by_arm["holdout"]), 0)
    issued = conn.execute(
        select(coupons.c.member_id, coupons.c.template).where(coupons.c.source == "campaign")
    ).all()
    assert sorted(m for m, t in issued if t == "ten_off") == by_arm["coupon_a"]
    assert sorted(m for m, t in issued if t == "pct") == by_arm["coupon_b"]
    payloads = [
        json.loads(p)
        for p in conn.execute(
            select(outbox.c.payload).where(outbox.c.event_type == "campaign.send")
        ).scalars()
    ]
    assert {
        a: sum(p["arm"] == a for p in payloads) for a in ("coupon_a", "coupon_b", "points")
    } == {a: len(by_arm[a]) for a in ("coupon_a", "coupon_b", "points")}
    assert {p["offer"]["points"] for p in payloads if p["arm"] == "points"} == {50}
    log = service.members(conn, made.campaign_id, after=None, limit=1000, arm="coupon_b").items
    assert [m.member_id for m in log] == by_arm["coupon_b"]

    # coupon_a's members order 200 CNY each; the others do not order.
    bought = launched_at + timedelta(days=1)
    for m in by_arm["coupon_a"][:150]:
        orders.place(conn, program, order(f"o-{m}", m, price=20_000, at=bought))
    res = outcomes.results(conn, made.campaign_id, now=utcnow())
    assert res.control == "holdout" and not res.srm.mismatch
    assert res.srm.observed == {a: len(v) for a, v in by_arm.items()}
    assert res.srm.expected == {a: 1000 * r / 100 for a, r in body.ratios().items()}
    # The control never ordered: no spend per order; nobody bought before: no retention.
    assert [(r.arm, r.metric) for r in res.metrics] == [
        (a, m)
        for a in ("coupon_a", "coupon_b", "points")
        for m in (
            "spend_per_member_fen",
            "conversion",
            "orders_per_member",
            "points_redeemed_per_member",
        )
    ]
    # Benjamini-Hochberg over the twelve (arm, metric) tests at once, as statsmodels does it.
    expected = multipletests([r.p_value for r in res.metrics], method="fdr_bh")[1]
    assert [r.p_adjusted for r in res.metrics] == pytest.approx(list(expected), abs=1e-12)
    spend = {r.arm: r for r in res.metrics if r.metric == "spend_per_member_fen"}
    assert spend["coupon_a"].treatment == pytest.approx(150 * 20_000 / len(by_arm["coupon_a"]))
    assert spend["coupon_a"].ci_low > 0 and spend["coupon_a"].p_adjusted < 0.001
    assert spend["coupon_b"].difference == 0 and spend["points"].difference == 0

    # The coupon targeting scored coupon_a's buyers and 20 held-out members for ten_off: its
    # Qini on this experiment is positive and equals the analysis on the same arrays.
    scored = dict.fromkeys(by_arm["coupon_a"][:150], 0.5) | dict.fromkeys(
        by_arm["holdout"][:20], 0.4
    )
    conn.execute(
        insert(coupon_suggestions),
        [
            {
                "member_id": m,
                "campaign": "ten_off_push",
                "build_id": "b1",
                "template": "ten_off",
                "value": 1000,
                "uplift": u,
                "p_purchase": 0.1,
                "best_hour": None,
                "reason": "test",
            }
            for m, u in scored.items()
        ],
    )
    res = outcomes.results(conn, made.campaign_id, now=utcnow())
    assert [(t.arm, t.members_scored) for t in res.targeting] == [
        ("coupon_a", 170),
        ("coupon_b", 0),
    ]
    target = res.targeting[0]
    ids = sorted(m for m in MANY if arms[m] in ("coupon_a", "holdout"))
    score = [scored.get(m, -0.6) for m in ids]
    treated = [arms[m] == "coupon_a" for m in ids]
    converted = [float(m in by_arm["coupon_a"][:150]) for m in ids]
    assert (target.arm, target.template, target.members, target.members_scored) == (
        "coupon_a",
        "ten_off",
        len(ids),
        170,
    )
    assert target.qini == pytest.approx(analysis.qini_coefficient(score, treated, converted))
    assert target.auuc == pytest.approx(analysis.auuc(score, treated, converted))
    assert target.qini > 0 and target.auuc > target.auuc_random


def test_an_arm_lost_from_the_exposure_log_is_flagged_as_a_sample_ratio_mismatch(
    conn: Connection,
) -> None:
    program = make_program()
    add_members(conn, *MANY)
    publish_profiles(conn, MANY, "loyal", [])
    body = campaign(
        audience={"segment": "loyal"},
        offer=None,
        arms=[{**a, "offer": {"kind": "message", "message": "hi"}} for a in ARMS],
        holdout_percent=20,
    )
    made = service.create(conn, program, body, actor=SYSTEM)
    fix_salt(conn, made.campaign_id)
    service.launch(conn, program, made.campaign_id, actor=SYSTEM)
    assert not outcomes.results(conn, made.campaign_id).srm.mismatch
    # A logging bug loses half of coupon_b's exposures.
    table = service.repository.M
    lost = conn.execute(
        select(table.c.member_id)
        .where(table.c.campaign_id == made.campaign_id, table.c.arm == "coupon_b")
        .order_by(table.c.member_id)
    ).scalars()
    gone = list(lost)[::2]
    conn.execute(table.delete().where(table.c.member_id.in_(gone)))
    res = outcomes.results(conn, made.campaign_id)
    assert res.srm.mismatch and res.srm.p_value is not None and res.srm.p_value < 0.001
    assert res.note.startswith("sample ratio mismatch")


def test_arm_definitions_are_refused_when_they_cannot_be_measured() -> None:
    with pytest.raises(ValueError, match="either one offer or arms"):
        campaign(arms=ARMS)
    with pytest.raises(ValueError, match="arm names must differ"):
        campaign(offer=None, arms=[ARMS[0], ARMS[0]])
    with pytest.raises(ValueError, match="names the members kept out"):
        campaign(offer=None, arms=[{**ARMS[0], "name": "holdout"}])
    with pytest.raises(ValueError, match="compares nothing"):
        campaign(offer=None, arms=ARMS[:1], holdout_percent=0)
    # Without a holdout, the first arm is the control.
    body = campaign(offer=None, arms=ARMS[:2], holdout_percent=0)
    assert body.control() == "coupon_a"
    assert body.ratios() == pytest.approx({"coupon_a": 200 / 3, "coupon_b": 100 / 3})


def test_retention_points_redeemed_and_spend_per_order_by_the_delta_method(
    conn: Connection,
) -> None:
    program = make_program()
    add_members(conn, *MEMBERS)
    publish_profiles(conn, MEMBERS, "at_risk", [])
    launched_at = utcnow() - timedelta(days=10)
    for m in MEMBERS:  # everyone bought in the pre-period and holds 1,000 points
        orders.place(conn, program, order(f"pre-{m}", m, at=launched_at - timedelta(days=5)))
        points.adjust(conn, program, m, 1000, reason="t", key=f"k-{m}", at=launched_at)
    body = campaign(offer={"kind": "message", "message": "hi"}, holdout_percent=50)
    made = service.create(conn, program, body, actor=SYSTEM)
    service.launch(conn, program, made.campaign_id, now=launched_at, actor=SYSTEM)
    log = service.members(conn, made.campaign_id, after=None, limit=1000).items
    treated = [m.member_id for m in log if m.arm == "treatment"]
    held = [m.member_id for m in log if m.arm == "holdout"]
    after = launched_at + timedelta(days=1)
    for i, m in enumerate(treated[:60]):  # 60 come back, two orders each of 100 or 300 CNY
        orders.place(conn, program, order(f"a-{m}", m, price=10_000 + 20_000 * (i % 2), at=after))
        orders.place(conn, program, order(f"b-{m}", m, price=10_000, at=after))
        points.spend(conn, m, 400, reason="gift", key=f"g-{m}", at=after)
    for m in held[:20]:
        orders.place(conn, program, order(f"a-{m}", m, price=10_000, at=after))
    res = outcomes.results(conn, made.campaign_id, now=utcnow())
    by_metric = {r.metric: r for r in res.metrics}
    assert list(by_metric) == [
        "spend_per_member_fen",
        "conversion",
        "orders_per_member",
        "points_redeemed_per_member",
        "spend_per_order_fen",
        "retention",
    ]
    n_t, n_c = len(treated), len(held)
    assert by_metric["retention"].treatment == pytest.approx(60 / n_t)
    assert by_metric["retention"].control == pytest.approx(20 / n_c)
    assert by_metric["points_redeemed_per_member"].treatment == pytest.approx(60 * 400 / n_t)
    assert by_metric["points_redeemed_per_member"].control == 0
    ratio = by_metric["spend_per_order_fen"]
    assert ratio.method == "delta"
    # 60 members' 120 orders: 30 x (100 + 100) + 30 x (300 + 100) CNY; the holdout's 100 each.
    assert ratio.treatment == pytest.approx((30 * 20_000 + 30 * 40_000) / 120)
    assert ratio.control == pytest.approx(10_000)
    spend = service.ledger.spend_by_member(conn, MEMBERS, launched_at, utcnow())

    def arrays(ids: list[str]) -> tuple[list[float], list[float]]:
        return (
            [float(spend.get(m, (0, 0))[1]) for m in ids],
            [float(spend.get(m, (0, 0))[0]) for m in ids],
        )

    reference = analysis.ratio_difference(*arrays(held), *arrays(treated))
    assert ratio.ci_low == pytest.approx(reference.ci_low)
    assert ratio.ci_high == pytest.approx(reference.ci_high)
    assert ratio.ci_low > 0  # the 300 CNY orders lift spend per order
