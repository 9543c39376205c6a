"""The ``memberwise`` console script: ``ingest`` runs from its own small app (without importing
every domain) and registers the members it sees, set-based, with their audit rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from memberwise.config import Settings
from memberwise.kit.db import make_engine
from tests.conftest import TEST_PII_KEY


def test_memberwise_ingest_starts_without_the_full_cli_and_registers_members(
    settings: Settings, db_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "events.csv"
    source.write_text(
        "event_id,member_id,type,ts\n"
        "e1,m1,view,2026-05-01T10:00:00Z\n"
        "e2,m2,view,2026-05-01T10:00:01Z\n"
        "e3,m1,cart,2026-05-01T10:00:02Z\n"
        "e4,m3,nope,2026-05-01T10:00:03Z\n"
    )
    env = {
        **os.environ,
        "MEMBERWISE_HOME": str(settings.home),
        "MEMBERWISE_DATABASE_URL": db_url,
        "MEMBERWISE_PII_KEY": TEST_PII_KEY,
    }

    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "memberwise", "ingest", str(source), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert (result["rows_read"], result["accepted"], result["rejected"]) == (4, 3, 1)
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "memberwise.events.commands" in imported
    assert "memberwise.cli" not in imported
    engine = make_engine(db_url)
    with engine.connect() as conn:
        members = conn.execute(text("SELECT member_id, source FROM members ORDER BY 1")).all()
        audits = conn.execute(
            text(
                "SELECT subject_id, member_id, actor, action, length(audit_id) FROM audit_log "
                "WHERE action = 'member.autocreate' ORDER BY 1"
            )
        ).all()
    engine.dispose()
    assert [tuple(m) for m in members] == [("m1", "events"), ("m2", "events")]
    assert [tuple(a) for a in audits] == [
        ("m1", "m1", "cli:ingest", "member.autocreate", 32),
        ("m2", "m2", "cli:ingest", "member.autocreate", 32),
    ]
