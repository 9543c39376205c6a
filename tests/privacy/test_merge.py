"""Identity merge on the real stores: ledgers moved exactly, the better tier kept with its
history, consents resolved to the stricter, events re-keyed when read; idempotent, audited."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ibis
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, func, select

from memberwise.jobs import holders
from memberwise.jobs.build import run_build
from memberwise.kit.db import transaction
from memberwise.ledger import coupons, points
from memberwise.membership import grants as membership_grants
from memberwise.membership import service as membership
from memberwise.membership.schemas import TierGrant
from memberwise.privacy import consent, erasure, lakeview, merge
from memberwise.privacy.schemas import SYSTEM, ConsentIn, ConsentStatus, Role
from memberwise.privacy.tables import audit_log
from memberwise.profiles import service as profiles
from memberwise.program.service import parse_program
from memberwise.runtime import Runtime
from tests.jobs.test_build import AS_OF
from tests.jobs.test_build import PROGRAM as BUILD_PROGRAM
from tests.ledger.factories import T0, add_members, check_invariants
from tests.privacy.factories import taobao_runtime

Auth = Callable[[Role], dict[str, str]]
SECRET = b"s"
PROGRAM = parse_program(
    """
name: merge
tiers:
  - {name: silver}
  - {name: gold, manual: true}
  - {name: platinum, manual: true}
coupons:
  single: {kind: amount_off, amount: 500, valid_days: 30, per_member_limit: 1}
  ten_off: {kind: amount_off, amount: 1000, valid_days: 30}
"""
)


def _answer(conn: Connection, member: str, purpose: str, status: str, request: str) -> None:
    data = ConsentIn(
        purpose=purpose, status=ConsentStatus(status), channel="app", request_id=request
    )
    consent.record(conn, PROGRAM.privacy, member, data, actor=SYSTEM)


def _merge(conn: Connection, source: str = "guest", target: str = "reg") -> merge.MergeResult:
    return merge.merge(
        conn, PROGRAM.privacy, PROGRAM, source, target, secret=SECRET, actor=SYSTEM, at=T0
    )


def test_ledgers_tiers_and_consents_merge_exactly_and_once(conn: Connection) -> None:
    holders.install()
    add_members(conn, "guest", "reg")
    points.adjust(conn, PROGRAM, "guest", 300, reason="start", key="g1", at=T0)
    points.adjust(conn, PROGRAM, "reg", 50, reason="start", key="r1", at=T0)
    coupons.issue(conn, PROGRAM, "single", ["guest", "reg"], key="k1", at=T0, strict=True)
    coupons.issue(conn, PROGRAM, "ten_off", ["guest"], key="k2", at=T0, strict=True)
    membership_grants.grant(
        conn, PROGRAM, "guest", TierGrant(tier="platinum", reason="vip"), actor=SYSTEM
    )
    membership_grants.grant(conn, PROGRAM, "reg", TierGrant(tier="gold", reason="x"), actor=SYSTEM)
    _answer(conn, "guest", "marketing_sms", "denied", "c1")
    _answer(conn, "reg", "marketing_sms", "granted", "c2")
    _answer(conn, "guest", "partner_sharing", "granted", "c3")

    result = _merge(conn)

    assert result.merged is True
    assert points.balance_of(conn, "reg").available == 350
    assert points.balance_of(conn, "guest").available == 0
    check_invariants(conn)
    held, _ = coupons.member_coupons(conn, "reg", limit=20)
    # Both ids got the once-per-member coupon: the guest's copy is void, the limit holds.
    assert sorted((c.template, c.status) for c in held) == [
        ("single", "issued"),
        ("single", "void"),
        ("ten_off", "issued"),
    ]
    assert membership.tier_of(conn, "reg") == "platinum"
    assert membership.tier_of(conn, "guest") is None
    assert consent.allows(conn, PROGRAM.privacy, "reg", "marketing_sms") is False  # stricter
    assert consent.allows(conn, PROGRAM.privacy, "reg", "partner_sharing") is True
    audits = select(func.count()).where(audit_log.c.action == "member.merge")
    assert conn.execute(audits).scalar_one() == 1

    again = _merge(conn)

    assert again.merged is False and again.moved == result.moved
    assert points.balance_of(conn, "reg").available == 350
    assert conn.execute(audits).scalar_one() == 1
    with pytest.raises(merge.MergedElsewhere):
        _merge(conn, "guest", "other")
    with pytest.raises(merge.InvalidMerge):
        _merge(conn, "x", "guest")  # the guest id is gone: merge into reg instead
    with pytest.raises(merge.InvalidMerge):
        _merge(conn, "reg", "reg")


def test_an_erased_member_cannot_be_merged(conn: Connection) -> None:
    holders.install()
    erasure.erase_rows(conn, _cipher(), SECRET, "gone")
    with pytest.raises(erasure.MemberErased):
        _merge(conn, "gone", "reg")


def _cipher():  # type: ignore[no-untyped-def]
    from memberwise.privacy.crypto import FieldCipher

    return FieldCipher(bytes(32))


def test_events_are_re_keyed_when_read(runtime: Runtime, client: TestClient, auth: Auth) -> None:
    holders.install()
    now = datetime.now(UTC) - timedelta(days=1)
    events = [
        {"event_id": f"e{i}", "member_id": m, "type": "view", "ts": now.isoformat(), "item_id": "i"}
        for i, m in enumerate(["guest", "guest", "reg"])
    ]
    client.post("/v1/events", json={"events": events}, headers=auth(Role.platform))
    response = client.post(
        "/v1/merges", json={"source_id": "guest", "target_id": "reg"}, headers=auth(Role.platform)
    )
    assert response.status_code == 200, response.text
    with transaction(runtime.engine) as conn:
        view = lakeview.build_view(conn, runtime.lake, PROGRAM.privacy)
    con = ibis.duckdb.connect()
    counts = view.events_table(con).group_by("member_id").aggregate(n=ibis._.count()).execute()
    assert dict(zip(counts.member_id, counts.n, strict=True)) == {"reg": 3}
    # The raw lake keeps what was ingested.
    raw = runtime.lake.events_table(con).group_by("member_id").aggregate(n=ibis._.count()).execute()
    assert dict(zip(raw.member_id, raw.n, strict=True)) == {"guest": 2, "reg": 1}


def test_erasing_a_member_forgets_the_ids_merged_into_it(
    runtime: Runtime, client: TestClient, auth: Auth
) -> None:
    holders.install()
    now = datetime.now(UTC) - timedelta(days=1)
    events = [
        {"event_id": f"e{i}", "member_id": m, "type": "view", "ts": now.isoformat(), "item_id": "i"}
        for i, m in enumerate(["guest", "reg", "other"])
    ]
    client.post("/v1/events", json={"events": events}, headers=auth(Role.platform))
    client.post(
        "/v1/merges", json={"source_id": "guest", "target_id": "reg"}, headers=auth(Role.platform)
    )
    secret = erasure.tombstone_secret(runtime.settings.pii_key_bytes)

    result = erasure.erase_member(
        runtime.engine, runtime.lake, runtime.settings.home, runtime.cipher, secret, "reg"
    )

    assert result.lake_rows_removed == 2
    con = ibis.duckdb.connect()
    raw = runtime.lake.events_table(con).member_id.execute().tolist()
    assert raw == ["other"]
    with transaction(runtime.engine) as conn:
        assert erasure.erased_among(conn, secret, ["guest", "reg", "other"]) == {"guest", "reg"}


def test_a_build_after_a_merge_profiles_the_merged_member_once(
    runtime: Runtime, tmp_path: Path
) -> None:
    holders.install()
    taobao_runtime(runtime, tmp_path)
    run_build(runtime, BUILD_PROGRAM, as_of=AS_OF)
    with transaction(runtime.engine) as conn:
        apart = [profiles.get_profile(conn, m).fields["lifetime_events"] for m in ("1", "100")]
        merge.merge(conn, PROGRAM.privacy, PROGRAM, "1", "100", secret=SECRET, actor=SYSTEM)

    result = run_build(runtime, BUILD_PROGRAM, as_of=AS_OF)

    assert result.members == 42  # 43 ids in the file, two of them one person
    with transaction(runtime.engine) as conn:
        assert profiles.get_profile(conn, "100").fields["lifetime_events"] == sum(apart)
        with pytest.raises(profiles.ProfileNotFound):
            profiles.get_profile(conn, "1")
