"""Identity merge: two member ids of one person (a guest id and a registered id) become one.

The source id is folded into the target: the domains above privacy move their ledgers exactly
through the mergers they register (points lots, coupons, orders, subscriptions, the better tier
with its history), consents resolve to the stricter answer per purpose, and the merge is
recorded so that events are re-keyed when read (the lake keeps what was ingested) and a repeat
of the same merge changes nothing. Every merge leaves an audit row.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from memberwise.kit.errors import Conflict, InvalidRequest
from memberwise.kit.ids import new_id
from memberwise.kit.time import utcnow
from memberwise.privacy import consent, erasure, repository
from memberwise.privacy.schemas import MergeResult, Principal, PrivacySettings
from memberwise.privacy.service import audit
from memberwise.privacy.tables import member_merges


class InvalidMerge(InvalidRequest):
    code = "invalid_merge"


class MergedElsewhere(Conflict):
    code = "merged_elsewhere"


#: ``merger(conn, program, source, target, at, actor)`` -> rows moved by kind. ``program`` is
#: whatever the caller passed (privacy does not know the program's type).
Merger = Callable[[Connection, Any, str, str, datetime, Principal], dict[str, int]]
_mergers: dict[str, Merger] = {}


def register_merger(name: str, merger: Merger) -> None:
    """Add (or replace, by name) a domain's merger."""
    _mergers[name] = merger


def merge(
    conn: Connection,
    settings: PrivacySettings,
    program: Any,
    source: str,
    target: str,
    *,
    secret: bytes,
    actor: Principal,
    at: datetime | None = None,
) -> MergeResult:
    """Fold ``source`` into ``target`` in the caller's transaction.

    Idempotent: the same merge again returns ``merged=False`` and changes nothing. Raises
    InvalidMerge (the same id twice, or a target that was itself merged away), MergedElsewhere
    (the source was merged into another id), MemberErased (either id was erased).
    """
    if source == target:
        raise InvalidMerge("a member cannot be merged into itself")
    done = repository.get_merge(conn, source)
    if done is not None:
        if done["target_id"] != target:
            raise MergedElsewhere(f"{source!r} was merged into another member already")
        return MergeResult(
            source_id=source, target_id=target, merged=False, moved=done["details"] or {}
        )
    onward = repository.get_merge(conn, target)
    if onward is not None:
        raise InvalidMerge(
            f"{target!r} was merged into {onward['target_id']!r}; merge into that id"
        )
    if erasure.erased_among(conn, secret, [source, target]):
        raise erasure.MemberErased("an erased member cannot be merged")
    now = at or utcnow()
    moved: dict[str, int] = {
        "consents": _stricter_consents(conn, settings, source, target, now, actor)
    }
    for name, merger in _mergers.items():
        for kind, count in merger(conn, program, source, target, now, actor).items():
            moved[f"{name}.{kind}"] = count
    # Ids merged into the source earlier now read as the target.
    moved["aliases"] = repository.rekey_rows(conn, member_merges, "target_id", source, target)
    repository.insert_merge(
        conn,
        {
            "source_id": source,
            "target_id": target,
            "merged_at": now,
            "actor": actor.key_id,
            "details": moved,
        },
    )
    audit(
        conn,
        actor,
        "member.merge",
        "member",
        target,
        member_id=target,
        details={"source": source, **moved},
    )
    return MergeResult(source_id=source, target_id=target, merged=True, moved=moved)


def _stricter_consents(
    conn: Connection,
    settings: PrivacySettings,
    source: str,
    target: str,
    at: datetime,
    actor: Principal,
) -> int:
    """Give the target, per purpose, the stricter of the two ids' answers; returns records
    appended. Both ids' records stay as they were (they are the evidence)."""
    theirs = repository.latest_consents(conn, target)
    mine = repository.latest_consents(conn, source)
    appended = 0
    for purpose, row in mine.items():
        have = theirs.get(purpose)
        wanted = consent.stricter(have["status"] if have else None, row["status"])
        if have is not None and wanted == have["status"]:
            continue
        repository.insert_consent(
            conn,
            {
                "record_id": new_id(),
                "member_id": target,
                "purpose": purpose,
                "status": wanted,
                "notice_version": row["notice_version"],
                "channel": "merge",
                "request_id": f"merge:{source}",
                "recorded_at": at,
                "actor": actor.key_id,
            },
        )
        appended += 1
    _ = settings  # the purposes a program no longer lists are carried over all the same
    return appended
