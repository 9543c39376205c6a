"""The overview on both stores: every chart has its numbers as a table; the figures are the
ledgers' own."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection

from memberwise.console import charts
from memberwise.console import overview_builds as per_build
from memberwise.console.i18n import translator, yuan
from memberwise.kit.db import transaction
from memberwise.kit.time import utcnow
from memberwise.ledger import coupons, points
from memberwise.ledger import service as ledger
from memberwise.ledger.schemas import AdjustmentIn, IssueIn
from memberwise.ledger.tables import points_lots
from memberwise.membership.tables import invitations, tier_history
from memberwise.predict.tables import member_predictions, prediction_models
from memberwise.privacy.schemas import SYSTEM, Role
from memberwise.profiles.tables import builds
from memberwise.runtime import Runtime
from tests.console.conftest import SignIn
from tests.members.factories import create_member


def _cells(html: str) -> list[list[str]]:
    return [
        re.findall(r"<td>([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)
    ]


def test_points_and_coupon_budgets_are_the_ledgers(signed_in: SignIn, runtime: Runtime) -> None:
    program = runtime.program()
    with transaction(runtime.engine) as conn:
        for mid in ("m00000001", "m00000002"):
            create_member(conn, runtime.cipher, mid)
            points.adjust_once(
                conn,
                program,
                mid,
                AdjustmentIn(points=150, reason="welcome"),
                f"k-{mid}",
                actor=SYSTEM,
            )
        coupons.issue_once(
            conn,
            program,
            IssueIn(template="welcome_10", member_ids=["m00000001", "m00000002"]),
            "issue-1",
            actor=SYSTEM,
        )
    client, _ = signed_in(Role.analyst)
    page = client.get("/console/")
    assert page.status_code == 200
    rows = _cells(page.text)
    assert ["可用", "300"] in rows  # available points of both members
    assert ["待生效", "0"] in rows
    welcome = next(r for r in rows if r and r[0] == "welcome_10")
    assert welcome[1:3] == ["2", "0"]
    # Without a build only the ledgers' two figures have data: each is a chart and a table.
    assert re.findall(r'class="plot" id="([a-z-]+)"', page.text) == ["points", "coupons"]
    assert page.text.count("<details>") == 2


def test_yuan_formats_fen() -> None:
    assert yuan(123456) == "¥1,234.56"
    assert yuan(-5) == "-¥0.05"
    assert yuan(None) == "-"


def test_labels_follow_the_locale_with_english_fallback() -> None:
    assert translator("zh-CN")("nav.overview") == "总览"
    assert translator("en")("nav.overview") == "Overview"
    assert translator("fr-FR")("nav.overview") == "Overview"
    assert translator("en")("no.such.key") == "no.such.key"


def test_bins_count_each_value_once() -> None:
    assert charts.bins([0.0, 0.05, 0.5, 1.0], [0.0, 0.1, 0.5, 1.0]) == [2, 0, 2]


def test_black_card_quota_comes_from_the_latest_build(signed_in: SignIn, runtime: Runtime) -> None:
    summary = {
        "tiers": {"invitations": {"active_members": 164, "eligible": 2, "quota": 7, "taken": 3}}
    }
    with transaction(runtime.engine) as conn:
        conn.execute(
            builds.insert().values(
                build_id="b1",
                as_of=utcnow(),
                engine="duckdb",
                status="published",
                published_at=utcnow(),
                fields="[]",
                summary=json.dumps(summary),
            )
        )
        now = utcnow()
        for n, status in enumerate(["pending", "accepted", "pending", "revoked"]):
            conn.execute(
                invitations.insert().values(
                    invitation_id=f"i{n}",
                    member_id=f"m{n}",
                    tier="black",
                    status=status,
                    rank=n + 1,
                    score=1.0,
                    explanation={},
                    created_at=now,
                    expires_at=now + timedelta(days=7),
                )
            )
    client, _ = signed_in(Role.analyst)
    rows = _cells(client.get("/console/").text)
    assert ["名额", "7"] in rows and ["已占用", "3"] in rows and ["符合条件", "2"] in rows
    # Statuses in the page's language (one it does not know as stored).
    assert rows[-3:] == [["状态: 已接受", "1"], ["状态: 待接受", "2"], ["状态: revoked", "1"]]
    t = translator("zh-CN")
    assert str(t("black_card.per_active")).format(n=1000) == "每 1,000 名活跃会员 1 个"
    assert str(translator("en")("black_card.per_active")).format(n=1000) == "1 / 1,000 active"


# -- the per-build figures: kept per build, exact, and invalidated by what changes them --------


def _build(conn: Connection, build_id: str, as_of: datetime) -> None:
    conn.execute(
        builds.insert().values(
            build_id=build_id,
            as_of=as_of,
            engine="duckdb",
            status="published",
            published_at=as_of,
            fields="[]",
            summary="{}",
        )
    )


def _history(conn: Connection, member_id: str, to_tier: str, at: datetime) -> None:
    conn.execute(
        tier_history.insert().values(
            change_id=f"c-{member_id}-{at:%H%M%S}-{to_tier}",
            member_id=member_id,
            at=at,
            from_tier=None,
            to_tier=to_tier,
            reason="test",
            build_id=None,
            actor="build",
        )
    )


def _prediction(conn: Connection, member_id: str, clv_fen: int, risk: float) -> None:
    now = utcnow()
    conn.execute(
        member_predictions.insert().values(
            member_id=member_id,
            model_version="v1",
            as_of=now,
            clv_12m_fen=clv_fen,
            churn_risk=risk,
            repeat_purchases=1,
            purchase_days=2,
            best_hour=9,
            best_weekday=1,
            published_at=now,
        )
    )


def test_per_build_figures_are_kept_until_a_build_an_erasure_or_a_merge(
    signed_in: SignIn, runtime: Runtime
) -> None:
    now = utcnow()
    first = now - timedelta(days=2)
    with transaction(runtime.engine) as conn:
        _build(conn, "b1", first)
        _history(conn, "m1", "silver", first - timedelta(days=1))
        _history(conn, "m2", "gold", first - timedelta(days=1))
        _history(conn, "m3", "silver", first - timedelta(hours=1))
        _prediction(conn, "m1", 12_000, 0.15)  # ¥120
        _prediction(conn, "m2", 60_000, 0.85)  # ¥600
    client, _ = signed_in(Role.analyst)
    label = f"{first:%Y-%m-%d %H:%M}"
    rows = _cells(client.get("/console/").text)
    assert [label, "silver", "2"] in rows and [label, "gold", "1"] in rows
    assert ["¥100 – ¥200", "1"] in rows and ["¥500 – ¥1,000", "1"] in rows
    assert ["0.1 – 0.2", "1"] in rows and ["0.8 – 0.9", "1"] in rows

    def figures() -> per_build.BuildFigures:
        with transaction(runtime.engine) as conn:
            return per_build.build_figures(conn, runtime.engine)

    kept = figures()
    assert figures() is kept  # nothing changed: the kept copy
    with transaction(runtime.engine) as conn:  # a staff grant now: after the build's as of
        _history(conn, "m2", "silver", now)
    assert figures() is kept
    with transaction(runtime.engine) as conn:  # an erasure of m2's prediction
        conn.execute(member_predictions.delete().where(member_predictions.c.member_id == "m2"))
    assert figures().risk.counts == (0, 1, 0, 0, 0, 0, 0, 0, 0, 0)
    with transaction(runtime.engine) as conn:  # an identity merge of m3 into m1
        conn.execute(
            tier_history.update().where(tier_history.c.member_id == "m3").values(member_id="m1")
        )
    assert figures().tiers_then == {"b1": {"silver": 1, "gold": 1}}
    with transaction(runtime.engine) as conn:  # a new build sees the grant
        _build(conn, "b2", now + timedelta(seconds=1))
    assert figures().tiers_then == {"b1": {"silver": 1, "gold": 1}, "b2": {"silver": 2}}
    rows = _cells(client.get("/console/").text)
    assert [f"{now + timedelta(seconds=1):%Y-%m-%d %H:%M}", "silver", "2"] in rows
    assert ["0.1 – 0.2", "1"] in rows and ["0.8 – 0.9", "1"] not in rows


def test_points_expiring_are_the_open_lots_up_to_30_and_90_days(runtime: Runtime) -> None:
    now = utcnow()
    lots = [  # (status, points, remaining, expires in days or None)
        ("available", 100, 100, -3),  # past its expiry, not swept yet: still owed
        ("available", 50, 20, 10),
        ("available", 70, 0, 20),  # spent out
        ("pending", 40, 40, 25),  # not available yet
        ("available", 30, 30, 60),
        ("available", 90, 90, 200),
        ("available", 80, 80, None),  # never expires
        ("expired", 60, 60, 5),
    ]
    with transaction(runtime.engine) as conn:
        for i, (status, pts, remaining, days) in enumerate(lots):
            conn.execute(
                points_lots.insert().values(
                    lot_id=f"lot{i}",
                    member_id="m1",
                    entry_id=f"e{i}",
                    order_id=None,
                    points=pts,
                    remaining=remaining,
                    status=status,
                    earned_at=now,
                    available_at=now,
                    expires_at=None if days is None else now + timedelta(days=days),
                )
            )
        found = ledger.points_liability(conn, now)
    assert found == {"available": 0, "pending": 0, "expiring_30d": 120, "expiring_90d": 150}


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), max_size=60))
def test_round_edges_cover_every_value_once(values: list[float]) -> None:
    edges = per_build.round_edges(values, 30)
    counted = per_build.histogram(values, edges)
    assert sum(counted.counts) == len(values)
    assert len(edges) <= 33 and (not values or len(edges) >= 2)
    assert counted.counts == tuple(charts.bins(values, edges))


def test_histogram_closes_only_the_last_bin() -> None:
    found = per_build.histogram([0.0, 0.05, 0.1, 0.5, 1.0, 1.5, -0.1], (0.0, 0.1, 0.5, 1.0))
    assert found.counts == (2, 1, 2)


def test_an_empty_churn_chart_says_why_the_model_was_not_fitted(
    signed_in: SignIn, runtime: Runtime
) -> None:
    """A demo of fewer days than the churn horizon (``memberwise run --days 30``) publishes no
    churn risk: the chart says why instead of a bare "no data"."""
    churn = {  # predictions.json's churn part as the stage writes it on a 30-day lake
        "horizon_days": 90,
        "features_as_of": "2026-09-08T02:08:42+00:00",
        "labels": "no purchase in (2026-09-08T02:08:42+00:00, 2026-12-07T02:08:42+00:00]",
        "status": "not_fitted",
        "code": "insufficient_data",
        "message": "No member has a profile as of 2026-09-08T02:08:42+00:00 (as_of minus the "
        "90-day churn horizon): the lake does not reach back that far.",
        "details": {"reason": "too_few_members"},
    }
    client, _ = signed_in(Role.analyst)
    page = client.get("/console/").text
    assert '<p class="empty">流失模型' not in page  # no build yet: the plain "no data"
    now = utcnow()
    with transaction(runtime.engine) as conn:
        conn.execute(
            prediction_models.insert().values(
                model_version="b1",
                as_of=now,
                fitted_at=now,
                published_at=now,
                status="published",
                summary=json.dumps({"members": 3, "churn": churn}),
            )
        )
    section = re.search(r'id="churn-title">.*?</section>', client.get("/console/").text, re.S)
    assert section is not None
    assert re.findall(r'<p class="empty">([^<]*)</p>', section.group(0)) == [
        "流失模型尚未训练：它从构建前 90 天（流失预测期）的会员画像学习，而那时有画像的会员太少"
        "（事件数据还不够久，或会员太少）。"
    ]
    churn.update(message="The churn model's test part has 0 member(s) who churned.")
    churn.update(details={"reason": "one_class"})
    with transaction(runtime.engine) as conn:
        conn.execute(prediction_models.update().values(summary=json.dumps({"churn": churn})))
    section = re.search(r'id="churn-title">.*?</section>', client.get("/console/").text, re.S)
    assert section is not None
    assert re.findall(r'<p class="empty">([^<]*)</p>', section.group(0)) == [
        "流失模型尚未训练：The churn model&#39;s test part has 0 member(s) who churned."
    ]
