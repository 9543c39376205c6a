"""The overview on both stores: every chart has its numbers as a table; the figures are the
ledgers' own."""

from __future__ import annotations

import json
import re

from memberwise.console import charts
from memberwise.console.i18n import translator, yuan
from memberwise.kit.db import transaction
from memberwise.kit.time import utcnow
from memberwise.ledger import coupons, points
from memberwise.ledger.schemas import AdjustmentIn, IssueIn
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
    client, _ = signed_in(Role.analyst)
    rows = _cells(client.get("/console/").text)
    assert ["名额", "7"] in rows and ["已占用", "3"] in rows and ["符合条件", "2"] in rows
