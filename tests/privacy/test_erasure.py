"""Erasure that really forgets, on the real stores: after erasing a member, no file under the
home (store, WAL, lake, builds, dead letters, logs) and no store row holds their id, phone,
email or name; their financial records stay, pseudonymised; re-sent events do not return."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from memberwise.events.bulk import ingest_paths
from memberwise.events.bulk_hooks import member_registrar
from memberwise.jobs import holders
from memberwise.jobs.build import run_build
from memberwise.kit.db import transaction
from memberwise.ledger.tables import points_entries
from memberwise.members import service as members
from memberwise.members.tables import members as members_table
from memberwise.privacy import consent, erasure, keys
from memberwise.privacy.crypto import DecryptionError
from memberwise.privacy.schemas import SYSTEM, ConsentIn, ConsentStatus, PrivacySettings, Role
from memberwise.privacy.tables import erasures
from memberwise.runtime import Runtime
from memberwise.store import metadata
from tests.jobs.test_build import AS_OF, PROGRAM
from tests.privacy.factories import taobao_runtime

Auth = Callable[[Role], dict[str, str]]

WHO = "zq-erase-0042"
NAME = "张三丰测"
PHONE = "13800138421"
EMAIL = "zsf.erase@example.com"
SECRETS = [WHO, NAME, PHONE, EMAIL]


def _events(member: str, start: datetime, n: int = 6) -> list[dict[str, object]]:
    return [
        {
            "event_id": f"ev-{i}-{abs(hash((member, i))) % 10**8}",
            "member_id": member,
            "type": "purchase" if i % 3 == 0 else "view",
            "ts": (start + timedelta(days=i, hours=3)).isoformat(),
            "item_id": f"item-{i % 4}",
            "category_id": "c1",
            "price": 1999,
            "quantity": 1,
            "order_id": f"o-{i}-{abs(hash(member)) % 1000}" if i % 3 == 0 else None,
        }
        for i in range(n)
    ]


def _found_in_files(home: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [s for s in SECRETS if s.encode() in data]
            if hits:
                found[str(path.relative_to(home))] = hits
    return found


def _found_in_store(engine: Engine) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    with transaction(engine) as conn:
        for table in metadata.sorted_tables:
            text = repr([tuple(r) for r in conn.execute(select(table))])
            hits = [s for s in SECRETS if s in text]
            if hits:
                found[table.name] = hits
    return found


@pytest.fixture
def lived(runtime: Runtime, tmp_path: Path, client: TestClient, auth: Auth) -> Runtime:
    """A member with PII, consents, points, events in the lake (API and bulk), a dead-letter
    row, and a published build that includes them."""
    holders.install()
    taobao_runtime(runtime, tmp_path)
    body = {"member_id": WHO, "name": NAME, "phone": PHONE, "email": EMAIL, "region": "浙江"}
    assert client.post("/v1/members", json=body, headers=auth(Role.platform)).status_code == 201
    start = AS_OF - timedelta(days=20)
    sent = client.post(
        "/v1/events", json={"events": _events(WHO, start)}, headers=auth(Role.platform)
    )
    assert sent.json()["accepted"] == 6, sent.text
    award = client.post(
        f"/v1/members/{WHO}/points/adjustments",
        json={"points": 120, "reason": "welcome gift"},
        headers=auth(Role.service) | {"Idempotency-Key": "welcome-1"},
    )
    assert award.status_code in (200, 201), award.text
    with transaction(runtime.engine) as conn:
        consent.record(
            conn,
            PrivacySettings(),
            WHO,
            ConsentIn(
                purpose="marketing_sms", status=ConsentStatus.granted, channel="app", request_id="q"
            ),
            actor=SYSTEM,
        )
    # A bulk file with one good row and one bad row of the member (-> the dead letter).
    source = tmp_path / "late.jsonl"
    good = _events(WHO, start - timedelta(days=30), 1)[0] | {"event_id": "bulk-1"}
    bad = {"event_id": "bulk-2", "member_id": WHO, "type": "teleport", "ts": "yesterday"}
    source.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    dead = runtime.settings.home / "deadletter"
    result = ingest_paths([source], runtime.lake, fmt="jsonl", deadletter_dir=dead)
    assert (result.files[0].accepted, result.files[0].rejected) == (1, 1), result.files[0]
    run_build(runtime, PROGRAM, as_of=AS_OF)
    assert _found_in_files(runtime.settings.home), "the set-up should have left traces"
    return runtime


def test_an_erased_member_is_nowhere_under_the_home_nor_in_the_store(
    lived: Runtime, client: TestClient, auth: Auth
) -> None:
    rt = lived
    secret = erasure.tombstone_secret(rt.settings.pii_key_bytes)
    with transaction(rt.engine) as conn:
        sealed = members.get_member(conn, rt.cipher, WHO, actor=SYSTEM)
    assert sealed.pii is not None and sealed.pii.phone == PHONE
    with transaction(rt.engine) as conn:
        key = keys.member_ciphers(conn, rt.cipher, [WHO], create=False)[WHO]

    result = erasure.erase_member(rt.engine, rt.lake, rt.settings.home, rt.cipher, secret, WHO)

    assert result.lake_rows_removed == 7 and result.lake_files_rewritten >= 1
    assert result.rows_deleted["members"] == 1
    assert result.rows_pseudonymised["points_entries.member_id"] == 1
    assert _found_in_files(rt.settings.home) == {}
    assert _found_in_store(rt.engine) == {}
    # The financial record stays, under the pseudonym; the key that sealed the PII is gone.
    with transaction(rt.engine) as conn:
        kept = conn.execute(
            select(points_entries.c.member_id, points_entries.c.available_delta)
        ).all()
        assert list(kept) == [(result.pseudonym, 120)]
        assert keys.member_ciphers(conn, rt.cipher, [WHO], create=False) == {}
        assert erasure.is_erased(conn, secret, WHO)
    with pytest.raises(DecryptionError):
        key.open(rt.cipher.seal("x", context="c"), context="c")
    # A re-sent batch does not bring the member back; erasing twice is refused.
    again = client.post(
        "/v1/events",
        json={"events": _events(WHO, AS_OF - timedelta(days=20))},
        headers=auth(Role.platform),
    )
    assert again.status_code == 200 and again.json()["accepted"] == 0
    assert _found_in_files(rt.settings.home) == {}
    with pytest.raises(erasure.MemberErased):
        erasure.erase_member(rt.engine, rt.lake, rt.settings.home, rt.cipher, secret, WHO)
    # The next build publishes everyone else and not the member.
    build = run_build(rt, PROGRAM, as_of=AS_OF)
    assert build.members == 43
    assert _found_in_files(rt.settings.home) == {}


def test_a_re_ingested_old_file_is_scrubbed_by_its_ingest(runtime: Runtime, tmp_path: Path) -> None:
    holders.install()
    secret = erasure.tombstone_secret(runtime.settings.pii_key_bytes)
    source = tmp_path / "old.jsonl"
    rows = _events(WHO, AS_OF - timedelta(days=5), 3) + _events("other", AS_OF, 2)
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    dead = tmp_path / "dead"
    ingest_paths([source], runtime.lake, fmt="jsonl", deadletter_dir=dead)
    erasure.erase_member(
        runtime.engine, runtime.lake, runtime.settings.home, runtime.cipher, secret, WHO
    )
    copy = tmp_path / "old-copy.jsonl"
    copy.write_text(source.read_text())  # the same rows, as a new file
    registrar = member_registrar(runtime.settings)
    ingest_paths([copy], runtime.lake, fmt="jsonl", deadletter_dir=dead, on_members=registrar)
    with transaction(runtime.engine) as conn:
        records = conn.execute(select(members_table.c.member_id)).scalars().all()
    assert sorted(records) == ["other"]  # the erased member got no record again
    assert _found_in_files(runtime.settings.home)  # the files' rows landed first
    assert registrar.erased_seen

    # What `memberwise ingest` does when the files end: the tombstone scrubs them again.
    removed = registrar.scrub_erased(runtime.lake)

    assert removed == 3
    assert _found_in_files(runtime.settings.home) == {}
    with transaction(runtime.engine) as conn:
        stamped = conn.execute(select(erasures.c.files_scrubbed_at)).scalar_one()
    assert stamped is not None and stamped.tzinfo is UTC


def test_every_table_keyed_by_member_is_covered_by_a_holder() -> None:
    """A new table with a member_id column must say how it is exported and erased."""
    holders.install()
    covered = {t for h in erasure.holders() for t in h.tables}
    # member_keys is shredded first; erasures hold no id (a keyed hash).
    covered |= {"member_keys"}
    keyed = {t.name for t in metadata.sorted_tables if "member_id" in t.c}
    assert sorted(keyed - covered) == []
