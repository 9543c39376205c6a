"""The ledgers' CLI: the periodic run matures and expires, issuance to members is idempotent."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memberwise.cli import app
from memberwise.config import Settings
from memberwise.kit.db import make_engine, transaction
from memberwise.ledger import orders, points
from tests.conftest import TEST_PII_KEY
from tests.ledger.factories import T0, add_members, make_program, order

runner = CliRunner()
PROGRAM = """
name: cli-test
points: {pending_days: 7, expiry: days, expiry_days: 10}
coupons:
  ten_off: {kind: amount_off, amount: 1000, valid_days: 30, per_member_limit: 1}
"""


@pytest.fixture
def env(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    program = tmp_path / "program.yaml"
    program.write_text(PROGRAM)
    monkeypatch.setenv("MEMBERWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEMBERWISE_DATABASE_URL", db_url)
    monkeypatch.setenv("MEMBERWISE_PII_KEY", TEST_PII_KEY)
    monkeypatch.setenv("MEMBERWISE_PROGRAM_FILE", str(program))
    return Settings()


def test_points_expire_matures_then_expires(env: Settings) -> None:
    engine = make_engine(env.db_url)
    program = make_program(pending_days=7, expiry="days", expiry_days=10)
    with transaction(engine) as conn:
        add_members(conn, "m1")
        orders.place(conn, program, order("o1", price=25_000), at=T0)
    week = (T0 + timedelta(days=7)).isoformat()
    result = runner.invoke(app, ["points", "expire", "--at", week])
    assert result.exit_code == 0, result.output
    assert "250 points became available, 0 points expired" in result.output
    later = (T0 + timedelta(days=12)).isoformat()
    result = runner.invoke(app, ["points", "expire", "--at", later])
    assert "0 points became available, 250 points expired" in result.output
    with transaction(engine) as conn:
        assert points.balance_of(conn, "m1").available == 0
    engine.dispose()


def test_coupons_issue_to_members_once_per_key(env: Settings) -> None:
    engine = make_engine(env.db_url)
    with transaction(engine) as conn:
        add_members(conn, "m1", "m2")
    engine.dispose()
    args = ["coupons", "issue", "--template", "ten_off", "--member", "m1", "--member", "m2"]
    first = runner.invoke(app, [*args, "--key", "k1"])
    assert first.exit_code == 0, first.output
    assert "2 coupons of ten_off issued" in first.output
    again = runner.invoke(app, [*args, "--key", "k1"])
    assert "2 coupons of ten_off issued" in again.output
    other = runner.invoke(app, [*args, "--key", "k2"])
    assert "0 coupons of ten_off issued" in other.output
    assert "2 members refused: per_member_limit" in other.output
    missing = runner.invoke(app, ["coupons", "issue", "--template", "nope", "--member", "m1"])
    assert missing.exit_code == 1
    assert "coupon_template_not_found" in missing.output
