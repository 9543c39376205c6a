"""A black-card member's complaint about a kept-away merchant reaches the registered service
hook at publish; other members' complaints and good merchants' do not (both stores)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Connection

from memberwise.membership import grants as membership_grants
from memberwise.membership.schemas import TierGrant
from memberwise.merchants import service
from memberwise.privacy.crypto import FieldCipher
from memberwise.privacy.schemas import SYSTEM
from memberwise.program.merchants import MerchantSettings
from memberwise.program.service import load_program
from tests.members.factories import create_member
from tests.merchants.test_service import _scorecard

ROOT = Path(__file__).resolve().parents[2]
AS_OF = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def calls() -> Iterator[list[service.Complaint]]:
    seen: list[service.Complaint] = []

    def hook(conn: Connection, complaint: service.Complaint) -> None:
        seen.append(complaint)

    service.COMPLAINT_HOOKS.append(hook)
    yield seen
    service.COMPLAINT_HOOKS.remove(hook)


def _build(directory: Path) -> Path:
    directory.mkdir()
    cards = [_scorecard("bad", 2.0), _scorecard("good", 80.0)]
    pq.write_table(pa.Table.from_pylist(cards).drop(["as_of", "build_id"]),
                   directory / "merchant_scorecards.parquet")  # fmt: skip
    pq.write_table(pa.table({"merchant_id": ["bad"], "item_id": ["i1"]}),
                   directory / "merchant_items.parquet")  # fmt: skip
    complaints = [
        {"event_id": f"e{i}", "member_id": member, "merchant_id": merchant, "item_id": "i1",
         "order_id": "o1", "ts": AS_OF, "text": "假货"}
        for i, (member, merchant) in enumerate([("vip", "bad"), ("vip", "good"), ("plain", "bad")])
    ]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(complaints), directory / "merchant_complaints.parquet")
    manifest = {
        "as_of": AS_OF.isoformat(),
        "merchants": {
            "settings": MerchantSettings().model_dump(mode="json"),
            "timezone": "Asia/Shanghai",
            "ticket_tiers": ["apass"],
        },
    }
    (directory / "build.json").write_text(json.dumps(manifest))
    return directory


def test_black_card_complaints_about_kept_away_merchants_reach_the_hook(
    conn: Connection, calls: list[service.Complaint], tmp_path: Path
) -> None:
    program = load_program(ROOT / "programs" / "demo.yaml")
    cipher = FieldCipher(bytes(range(32)))
    for member in ("vip", "plain"):
        create_member(conn, cipher, member)
    membership_grants.grant(
        conn, program, "vip", TierGrant(tier="apass", reason="test"), actor=SYSTEM
    )
    membership_grants.grant(
        conn, program, "plain", TierGrant(tier="gold", reason="test"), actor=SYSTEM
    )
    assert service.publish_build(conn, _build(tmp_path / "b1")) == 2
    assert [(c.event_id, c.member_id, c.merchant_id, c.tier) for c in calls] == [
        ("e0", "vip", "bad", "apass")
    ]
