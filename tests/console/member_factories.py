"""A small program and a member with something in every section of the member center."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Connection

from memberwise.kit.db import transaction
from memberwise.kit.time import utcnow
from memberwise.ledger import coupons, points
from memberwise.membership import service as membership
from memberwise.membership.stage import TIERS_SCHEMA
from memberwise.privacy.crypto import FieldCipher
from memberwise.program.schemas import Program
from memberwise.program.service import parse_program
from memberwise.runtime import Runtime
from tests.members.factories import create_member

PROGRAM = """
name: 会员计划
locale: zh-CN
display_timezone: Asia/Shanghai
points: {expiry: days, expiry_days: 30}
benefits:
  express_refund: {kind: express_refund, credit_limit: 1000000, description: 退款秒到账}
  return_card: {kind: return_cards, count: 2, period: day}
coupons:
  ten_off: {kind: amount_off, amount: 1000, valid_days: 31, description: 全场通用}
  big: {kind: threshold, amount: 5000, min_spend: 30000, valid_days: 31}
tiers:
  - {name: member}
  - name: silver
    qualify:
      - {spend: 50000, window_days: 365}
    benefits: [express_refund, return_card]
  - name: gold
    qualify:
      - {spend: 200000, window_days: 365}
      - {points_earned: 5000, window_days: 365}
"""


def use_program(runtime: Runtime, tmp_path: Path, text: str = PROGRAM) -> Program:
    """Serve ``text`` as the runtime's program; returns it parsed."""
    path = tmp_path / "program.yaml"
    path.write_text(text, encoding="utf-8")
    runtime.settings.program_file = path
    return parse_program(text)


def publish_tier(
    conn: Connection, program: Program, tmp: Path, member_id: str, tier: str, **metrics: int
) -> None:
    """Place the member in ``tier`` as a build would (``tiers.parquet`` published), with the
    year's net spend (fen) and points as the build measured them."""
    build = tmp / f"build-{member_id}"
    build.mkdir(parents=True, exist_ok=True)
    (build / "build.json").write_text(json.dumps({"build_id": f"b-{member_id}"}))
    details = {"metrics": {"net_spend_365d": metrics.get("spend", 0),
                           "points_365d": metrics.get("points", 0)}}  # fmt: skip
    row = {"member_id": member_id, "tier": tier, "source": "auto", "since": utcnow(),
           "until": None, "score": 0, "details": json.dumps(details), "change": "initial",
           "from_tier": None, "reason": "test placement"}  # fmt: skip
    pq.write_table(pa.Table.from_pylist([row], schema=TIERS_SCHEMA), build / "tiers.parquet")
    membership.publish_tiers(conn, program, build)


def seed_member(runtime: Runtime, program: Program, member_id: str = "m1") -> None:
    """Member ``member_id``: silver (800 CNY spent, 1,000 points earned this year), 500 points
    expiring in 30 days, two coupons."""
    tmp = runtime.settings.home
    with transaction(runtime.engine) as conn:
        create_member(conn, FieldCipher(bytes(range(32))), member_id)
        publish_tier(conn, program, tmp, member_id, "silver", spend=80_000, points=1000)
        points.adjust(conn, program, member_id, 500, reason="welcome", key=f"welcome-{member_id}")
        coupons.issue(conn, program, "ten_off", [member_id], key=f"c1-{member_id}")
        coupons.issue(conn, program, "big", [member_id], key=f"c2-{member_id}")
