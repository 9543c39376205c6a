"""Merchant quality: publish a build's scorecards, keep the penalty ledger (append-only, with
appeals), take the actions its thresholds and the scorecards call for, and say which items a
member must not be recommended. Never commits (the caller's unit of work does); every action
and every ledger change writes an audit row in the same transaction.

Hooks: :data:`COMPLAINT_HOOKS` lets a higher domain (the service desk) act on complaints from
members of the ticket tiers about kept-away merchants; :func:`excluded_items` is what the
recommender's exclusion hook calls.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from memberwise.kit.errors import Conflict, InvalidRequest, NotFound
from memberwise.kit.ids import new_id
from memberwise.kit.storage import parquet_batches
from memberwise.kit.time import utcnow
from memberwise.merchants import repository
from memberwise.merchants.penalties import balance, crossed, period_start
from memberwise.merchants.schemas import (
    ActionOut,
    AppealOut,
    LedgerOut,
    MerchantOut,
    PenaltyOut,
    PenaltyResult,
    ScorecardOut,
    ScorecardsOut,
)
from memberwise.merchants.stage import COMPLAINTS, ITEMS, SCORECARDS
from memberwise.merchants.tables import merchant_scorecards
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, Principal
from memberwise.program.merchants import MerchantSettings


class MerchantNotFound(NotFound):
    code = "merchant_not_found"


class UnknownViolation(InvalidRequest):
    code = "unknown_violation"


class PenaltyNotFound(NotFound):
    code = "penalty_not_found"


class AppealNotFound(NotFound):
    code = "appeal_not_found"


class AppealExists(Conflict):
    code = "appeal_exists"


class AppealClosed(Conflict):
    code = "appeal_closed"


class NotAppealable(InvalidRequest):
    code = "penalty_not_appealable"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


@dataclass(frozen=True)
class Complaint:
    """A complaint handed to :data:`COMPLAINT_HOOKS` (a member of a ticket tier complaining
    about a kept-away merchant)."""

    event_id: str
    member_id: str
    merchant_id: str
    item_id: str | None
    order_id: str | None
    ts: datetime
    text: str | None
    tier: str


#: Called as ``hook(conn, complaint)`` in the publish transaction for each complaint of a member
#: of ``keep_away.ticket_tiers`` about a kept-away merchant; the service desk registers one to
#: open a ticket (idempotent by ``event_id`` on its side). Empty until that desk exists.
COMPLAINT_HOOKS: list[Callable[[Connection, Complaint], None]] = []


def _penalty(row: Mapping[Any, Any]) -> PenaltyOut:
    return PenaltyOut.model_validate(dict(row))


def _action(row: Mapping[Any, Any]) -> ActionOut:
    return ActionOut.model_validate(dict(row))


def _appeal(row: Mapping[Any, Any]) -> AppealOut:
    return AppealOut.model_validate(dict(row))


# --- the penalty ledger -------------------------------------------------------------------


def points(
    conn: Connection, settings: MerchantSettings, merchant_id: str, at: datetime, tz: str
) -> int:
    """The merchant's penalty points at ``at`` (yearly reset applied)."""
    entries = [(r["created_at"], int(r["points"])) for r in repository.penalties(conn, merchant_id)]
    return balance(entries, at, settings, tz)


def record_violation(
    conn: Connection,
    settings: MerchantSettings,
    merchant_id: str,
    violation: str,
    reason: str,
    *,
    idempotency_key: str,
    tz: str,
    actor: Principal = SYSTEM,
    at: datetime | None = None,
) -> PenaltyResult:
    """Add a violation's points to the ledger and take the actions newly due.

    A replay with the same key returns the first entry and changes nothing. Raises
    UnknownViolation for a violation the program does not define, IdempotencyKeyReused when
    the key was used for a different violation."""
    spec = settings.violations.get(violation)
    if spec is None:
        raise UnknownViolation(
            f"violation {violation!r} is not in the program; known: "
            f"{', '.join(sorted(settings.violations))}",
            details={"violations": sorted(settings.violations)},
        )
    now = at or utcnow()
    found = repository.penalty_by_key(conn, merchant_id, idempotency_key)
    if found is not None:
        if found["violation"] != violation:
            raise IdempotencyKeyReused(
                f"idempotency key {idempotency_key!r} was used for another violation",
                details={"entry_id": found["entry_id"]},
            )
        return PenaltyResult(
            entry=_penalty(found),
            points=points(conn, settings, merchant_id, now, tz),
            actions=[_action(r) for r in repository.active_actions(conn, merchant_id, now)],
        )
    row: dict[str, Any] = {
        "entry_id": new_id(),
        "merchant_id": merchant_id,
        "violation": violation,
        "points": spec.points,
        "reason": reason,
        "reverses": None,
        "idempotency_key": idempotency_key,
        "actor": actor.key_id,
        "created_at": now,
    }
    repository.insert_penalty(conn, row)
    privacy.audit(
        conn, actor, "merchant.penalty", "merchant", merchant_id, reason=reason,
        details={"entry_id": row["entry_id"], "violation": violation, "points": spec.points},
    )  # fmt: skip
    total = points(conn, settings, merchant_id, now, tz)
    apply_thresholds(conn, settings, merchant_id, total, now, tz, actor=actor)
    return PenaltyResult(
        entry=_penalty(row),
        points=total,
        actions=[_action(r) for r in repository.active_actions(conn, merchant_id, now)],
    )


def apply_thresholds(
    conn: Connection,
    settings: MerchantSettings,
    merchant_id: str,
    total: int,
    at: datetime,
    tz: str,
    *,
    actor: Principal = SYSTEM,
) -> list[ActionOut]:
    """Take each action whose threshold ``total`` has reached and which was not taken yet
    in the current points year; the actions taken now."""
    year = period_start(at, settings, tz).date().isoformat()
    taken = []
    for threshold in crossed(total, settings.thresholds):
        key = f"{threshold.action.value}:{threshold.points}:{year}"
        if repository.action_by_trigger(conn, merchant_id, key) is not None:
            continue
        reason = f"{total} penalty points reached the {threshold.points}-point threshold"
        row: dict[str, Any] = {
            "action_id": new_id(),
            "merchant_id": merchant_id,
            "kind": threshold.action.value,
            "reason": reason,
            "points": total,
            "starts_at": at,
            "ends_at": at + timedelta(days=threshold.days) if threshold.days else None,
            "lifted_at": None,
            "trigger_key": key,
            "created_at": at,
        }
        repository.insert_action(conn, row)
        privacy.audit(
            conn, actor, f"merchant.{threshold.action.value}", "merchant", merchant_id,
            reason=reason, details={"action_id": row["action_id"], "points": total,
                                    "days": threshold.days},
        )  # fmt: skip
        taken.append(_action(row))
    return taken


def appeal(conn: Connection, entry_id: str, reason: str, *, actor: Principal = SYSTEM) -> AppealOut:
    """Open an appeal against a penalty entry. Raises PenaltyNotFound, NotAppealable for a
    reversal entry, AppealExists when the entry already has an appeal."""
    entry = repository.penalty(conn, entry_id)
    if entry is None:
        raise PenaltyNotFound(f"no penalty entry {entry_id}")
    if entry["reverses"] is not None:
        raise NotAppealable("a reversal entry cannot be appealed")
    if repository.appeal_of(conn, entry_id) is not None:
        raise AppealExists(f"penalty entry {entry_id} already has an appeal")
    row = {
        "appeal_id": new_id(),
        "entry_id": entry_id,
        "merchant_id": entry["merchant_id"],
        "reason": reason,
        "status": "open",
        "decision": None,
        "decided_by": None,
        "created_at": utcnow(),
        "decided_at": None,
    }
    repository.insert_appeal(conn, row)
    privacy.audit(conn, actor, "merchant.appeal", "merchant", entry["merchant_id"], reason=reason,
                  details={"appeal_id": row["appeal_id"], "entry_id": entry_id})  # fmt: skip
    return _appeal(row)


def decide_appeal(
    conn: Connection,
    settings: MerchantSettings,
    appeal_id: str,
    *,
    uphold: bool,
    decision: str,
    tz: str,
    actor: Principal = SYSTEM,
    at: datetime | None = None,
) -> AppealOut:
    """Decide an open appeal. Upheld: a reversing entry takes the points back and penalty
    actions no longer justified by the points are lifted. Raises AppealNotFound,
    AppealClosed when it was already decided."""
    found = repository.appeal(conn, appeal_id)
    if found is None:
        raise AppealNotFound(f"no appeal {appeal_id}")
    now = at or utcnow()
    values = {
        "status": "upheld" if uphold else "rejected",
        "decision": decision,
        "decided_by": actor.key_id,
        "decided_at": now,
    }
    if not repository.decide_appeal(conn, appeal_id, values):
        raise AppealClosed(f"appeal {appeal_id} is already {found['status']}")
    merchant_id = found["merchant_id"]
    if uphold:
        entry = repository.penalty(conn, found["entry_id"])
        assert entry is not None  # a foreign key guarantees it
        repository.insert_penalty(
            conn,
            {
                "entry_id": new_id(), "merchant_id": merchant_id, "violation": entry["violation"],
                "points": -int(entry["points"]), "reason": f"appeal upheld: {decision}",
                "reverses": entry["entry_id"], "idempotency_key": f"appeal:{appeal_id}",
                "actor": actor.key_id, "created_at": now,
            },
        )  # fmt: skip
        total = points(conn, settings, merchant_id, now, tz)
        kinds = {t.action.value: t.points for t in settings.thresholds}
        lift = [
            r["action_id"]
            for r in repository.active_actions(conn, merchant_id, now)
            if r["kind"] in kinds and total < kinds[r["kind"]]
        ]
        if lift:
            repository.lift_actions(conn, lift, now)
        privacy.audit(conn, actor, "merchant.appeal_upheld", "merchant", merchant_id,
                      reason=decision, details={"appeal_id": appeal_id, "points": total,
                                                "lifted": lift})  # fmt: skip
    else:
        privacy.audit(conn, actor, "merchant.appeal_rejected", "merchant", merchant_id,
                      reason=decision, details={"appeal_id": appeal_id})  # fmt: skip
    row = repository.appeal(conn, appeal_id)
    assert row is not None
    return _appeal(row)


def ledger(conn: Connection, settings: MerchantSettings, merchant_id: str, tz: str) -> LedgerOut:
    """The merchant's penalty entries, appeals and actions, with the points now."""
    return LedgerOut(
        merchant_id=merchant_id,
        points=points(conn, settings, merchant_id, utcnow(), tz),
        entries=[_penalty(r) for r in repository.penalties(conn, merchant_id)],
        appeals=[_appeal(r) for r in repository.appeals(conn, merchant_id)],
        actions=[_action(r) for r in repository.actions(conn, merchant_id)],
    )


# --- scorecards -----------------------------------------------------------------------------


def _parquet_rows(
    path: Path, build_id: str | None = None, **extra: Any
) -> Iterator[dict[str, Any]]:
    for batch in parquet_batches(path, 5_000):
        for row in batch.to_pylist():
            if build_id is not None:
                row["build_id"] = build_id
            row.update(extra)
            yield row


def _scorecard_rows(path: Path, build_id: str, as_of: datetime) -> Iterator[dict[str, Any]]:
    columns = {c.name for c in merchant_scorecards.c}
    for row in _parquet_rows(path, build_id, as_of=as_of):
        yield {k: v for k, v in row.items() if k in columns}


def publish_build(conn: Connection, build_dir: Path) -> int:
    """Replace the published scorecards and merchant items with the build's, then: add a
    ``poor_service`` violation (once a month) to merchants below the program's percentile,
    give the support badge (once a month) to the best merchants without penalties, and hand
    ticket-tier members' complaints about kept-away merchants to :data:`COMPLAINT_HOOKS`.
    The number of scorecards (0 when the build has no merchants stage output)."""
    if not (build_dir / SCORECARDS).exists():
        return 0
    manifest = json.loads((build_dir / "build.json").read_text())
    section = manifest.get("merchants", {})
    settings = MerchantSettings.model_validate(section.get("settings", {}))
    tz = str(section.get("timezone", "Asia/Shanghai"))
    as_of = datetime.fromisoformat(manifest["as_of"])
    count = repository.replace_scorecards(conn, _scorecard_rows(build_dir / SCORECARDS,
                                                                build_dir.name, as_of))  # fmt: skip
    repository.replace_items(conn, _parquet_rows(build_dir / ITEMS))
    month = as_of.strftime("%Y-%m")
    if "poor_service" in settings.violations:
        for merchant_id in repository.below_percentile(conn, settings.poor_service_percentile):
            record_violation(
                conn, settings, merchant_id, "poor_service",
                f"quality score below the {settings.poor_service_percentile:g}th percentile "
                f"of its industry (build {build_dir.name})",
                idempotency_key=f"poor_service:{month}", tz=tz, at=as_of,
            )  # fmt: skip
    grant_badges(conn, settings, as_of, tz)
    tiers = set(section.get("ticket_tiers", settings.keep_away.ticket_tiers))
    if COMPLAINT_HOOKS and tiers and (build_dir / COMPLAINTS).exists():
        _complaints_to_hooks(conn, settings, tiers, build_dir / COMPLAINTS, as_of)
    clear_exclusion_cache()
    return count


def grant_badges(
    conn: Connection, settings: MerchantSettings, at: datetime, tz: str
) -> list[ActionOut]:
    """The support badge for a month to merchants at or above ``badge_percentile`` with no
    penalty points; audited. Already granted this month: nothing new."""
    support = settings.support
    key = f"badge:{at.strftime('%Y-%m')}"
    granted = []
    for merchant_id in repository.at_or_above_percentile(conn, support.badge_percentile):
        if points(conn, settings, merchant_id, at, tz) > 0:
            continue
        if repository.action_by_trigger(conn, merchant_id, key) is not None:
            continue
        reason = (
            f"{support.badge}: quality at or above the {support.badge_percentile:g}th "
            "percentile of its industry, no penalty points"
        )
        row: dict[str, Any] = {
            "action_id": new_id(), "merchant_id": merchant_id, "kind": "badge",
            "reason": reason,
            "points": None, "starts_at": at, "ends_at": at + timedelta(days=31),
            "lifted_at": None, "trigger_key": key, "created_at": at,
        }  # fmt: skip
        repository.insert_action(conn, row)
        privacy.audit(conn, SYSTEM, "merchant.badge", "merchant", merchant_id,
                      reason=reason, details={"action_id": row["action_id"]})  # fmt: skip
        granted.append(_action(row))
    return granted


def kept_away_merchants(conn: Connection, settings: MerchantSettings, at: datetime) -> set[str]:
    """Merchants below the keep-away percentile or under one of its actions."""
    keep = settings.keep_away
    found = set(repository.below_percentile(conn, keep.below_percentile))
    found |= set(repository.merchants_under(conn, [a.value for a in keep.under_actions], at))
    return found


def _complaints_to_hooks(
    conn: Connection, settings: MerchantSettings, tiers: set[str], path: Path, at: datetime
) -> None:
    from memberwise.membership import service as membership_service

    away = kept_away_merchants(conn, settings, at)
    for row in _parquet_rows(path):
        if row["merchant_id"] not in away:
            continue
        tier = membership_service.tier_of(conn, row["member_id"])
        if tier is None or tier not in tiers:
            continue
        complaint = Complaint(
            event_id=row["event_id"], member_id=row["member_id"],
            merchant_id=row["merchant_id"], item_id=row["item_id"], order_id=row["order_id"],
            ts=row["ts"], text=row["text"], tier=tier,
        )  # fmt: skip
        for hook in COMPLAINT_HOOKS:
            hook(conn, complaint)


def scorecard(
    conn: Connection, settings: MerchantSettings, merchant_id: str, tz: str
) -> MerchantOut:
    """The merchant's published scorecard, points, actions in force and badge.

    Raises MerchantNotFound when it has neither a scorecard nor ledger entries."""
    card = repository.scorecard(conn, merchant_id)
    now = utcnow()
    entries = repository.penalties(conn, merchant_id)
    if card is None and not entries:
        raise MerchantNotFound(f"no scorecard or penalty for merchant {merchant_id}")
    active = [_action(r) for r in repository.active_actions(conn, merchant_id, now)]
    return MerchantOut(
        scorecard=None if card is None else ScorecardOut.model_validate(dict(card)),
        points=balance([(r["created_at"], int(r["points"])) for r in entries], now, settings, tz),
        actions=active,
        badge=settings.support.badge if any(a.kind == "badge" for a in active) else None,
        kept_away=merchant_id in kept_away_merchants(conn, settings, now),
    )


def scorecards(
    conn: Connection, *, industry: str | None = None, worst_first: bool = True, limit: int = 50
) -> ScorecardsOut:
    """Published scorecards, worst (or best) quality first."""
    rows = repository.scorecards(conn, industry=industry, worst_first=worst_first, limit=limit)
    return ScorecardsOut(items=[ScorecardOut.model_validate(dict(r)) for r in rows])


# --- keeping members away from bad shops ----------------------------------------------------

#: How long the set of excluded items is reused by the recommendation hook (seconds).
EXCLUSION_TTL = 30.0
_cache_lock = threading.Lock()
_cache: dict[str, tuple[float, frozenset[str]]] = {}


def excluded_items(
    conn: Connection, settings: MerchantSettings, member_id: str, *, tier: str | None
) -> frozenset[str]:
    """Items a member of ``tier`` must not be recommended: those of kept-away merchants when
    the tier is one of ``keep_away.tiers`` (``"*"``: every member). Cached for
    :data:`EXCLUSION_TTL` seconds: it is read on every recommendation."""
    keep = settings.keep_away
    if "*" not in keep.tiers and (tier is None or tier not in keep.tiers):
        return frozenset()
    key = settings.model_dump_json(include={"keep_away"})
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < EXCLUSION_TTL:
        return hit[1]
    merchants = sorted(kept_away_merchants(conn, settings, utcnow()))
    items = frozenset(repository.items_of(conn, merchants))
    with _cache_lock:
        _cache[key] = (now, items)
    return items


def boosted_items(conn: Connection, settings: MerchantSettings) -> dict[str, float]:
    """Score multipliers for the items of merchants holding the support badge now (the
    program's ``support.recommendation_boost``); cached like :func:`excluded_items`."""
    factor = settings.support.recommendation_boost
    if factor == 1.0:
        return {}
    key = "boost:" + settings.model_dump_json(include={"support"})
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < EXCLUSION_TTL:
        return dict.fromkeys(hit[1], factor)
    merchants = sorted(repository.merchants_with(conn, "badge", utcnow()))
    items = frozenset(repository.items_of(conn, merchants))
    with _cache_lock:
        _cache[key] = (now, items)
    return dict.fromkeys(items, factor)


def clear_exclusion_cache() -> None:
    """Forget the cached exclusions (after a publish or an action, and in tests)."""
    with _cache_lock:
        _cache.clear()


_settings_source: Callable[[], MerchantSettings] | None = None


def _recommendation_hook(conn: Connection, member_id: str) -> frozenset[str]:
    if _settings_source is None:
        return frozenset()
    settings = _settings_source()
    keep = settings.keep_away
    tier = None
    if "*" not in keep.tiers:
        from memberwise.membership import service as membership_service

        tier = membership_service.tier_of(conn, member_id)
    return excluded_items(conn, settings, member_id, tier=tier)


def _boost_hook(conn: Connection, member_id: str) -> dict[str, float]:
    if _settings_source is None:
        return {}
    return boosted_items(conn, _settings_source())


def install_recommendation_hook(settings: Callable[[], MerchantSettings]) -> None:
    """Register (once per process) the recommender's exclusion and boost hooks, reading the
    program's merchant section through ``settings`` at each call (a program edit takes
    effect)."""
    from memberwise.recommend import service as recommend_service

    global _settings_source
    _settings_source = settings
    if _recommendation_hook not in recommend_service.EXCLUSION_HOOKS:
        recommend_service.EXCLUSION_HOOKS.append(_recommendation_hook)
    if _boost_hook not in recommend_service.BOOST_HOOKS:
        recommend_service.BOOST_HOOKS.append(_boost_hook)
