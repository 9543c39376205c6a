"""The points ledger: lots, spends allocated nearest-expiry first, maturation, expiry, refund
reversal, awards and staff adjustments.

Model
-----
* ``points_entries`` is append-only: every change of a member's balance is one entry with its
  ``available_delta``, ``pending_delta`` and ``debt_delta`` and a unique ``idem_key`` (the order
  or refund id for order points, ``review:<member>:<id>`` / ``check_in:<member>:<day>`` for
  awards, the ``Idempotency-Key`` header for API writes), so a replay finds the entry and
  changes nothing.
* Each credit is a *lot* (``points_lots``): ``pending`` while its order is in the return window
  (``pending_days``), then ``available``; ``expired`` or ``cancelled`` when expiry or a refund
  takes what was left. A debit (spend, expiry, reversal) is allocated to lots — nearest expiry
  first — and each allocation is recorded (``points_allocations``), so ``lot.remaining ==
  lot.points - sum(allocations)`` always.
* ``points_balances`` caches the sums: ``available == sum(available_delta) == sum(remaining of
  available lots)`` (likewise pending), never negative (a CHECK constraint as well as a
  guarded UPDATE).

Concurrency: every write to a member's points first changes the member's balance row (a
guarded ``UPDATE ... WHERE available >= :n`` for a spend, a no-op ``UPDATE`` otherwise), which
is the member's lock for the rest of the transaction on PostgreSQL and takes the single write
lock on SQLite; lots are read only after that, so two spends can never allocate the same points.
Lock order everywhere: coupons, then coupon budgets, then the member's balance (a writer that
needs several takes them in that order, so two writers cannot wait on each other).

Refunds (see :class:`memberwise.program.ledger.RefundShortfall`): the points an order earned
are taken back pro rata to the money refunded; first from the order's own lot, then from the
member's other available points; what the member no longer has becomes money deducted from the
refund (default) or a debt that the next points to become available repay.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping

from memberwise.kit import outbox
from memberwise.kit.ids import new_id
from memberwise.kit.pagination import Page, decode_cursor, encode_cursor
from memberwise.kit.time import as_utc, utcnow
from memberwise.ledger import report_repository, repository
from memberwise.ledger.schemas import (
    AdjustmentIn,
    AwardKind,
    Balance,
    Entry,
    EntryKind,
    Lot,
    LotStatus,
    PointsChange,
    PointsOut,
)
from memberwise.ledger.service import (
    AwardNotConfigured,
    InsufficientPoints,
    NothingToAdjust,
    idempotent,
    member_exists,
)
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, Principal
from memberwise.program.ledger import PointsSettings, day_key, month_key
from memberwise.program.schemas import Program


@dataclass(frozen=True)
class Credit:
    """A credit made (or found, on a replay): its entry, its lot and the points granted."""

    entry_id: str
    lot_id: str | None
    points: int
    replay: bool


@dataclass(frozen=True)
class Reversal:
    """What taking back ``wanted`` points did: from the order's lot, from other lots, and the
    shortfall the member no longer had (turned into debt or a refund deduction)."""

    from_order: int
    from_others: int
    shortfall: int
    entry_id: str | None


def entry_row(
    member_id: str,
    kind: EntryKind,
    key: str,
    at: datetime,
    actor: Principal,
    *,
    available: int = 0,
    pending: int = 0,
    debt: int = 0,
    order_id: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    return {
        "entry_id": new_id(),
        "member_id": member_id,
        "kind": kind.value,
        "available_delta": available,
        "pending_delta": pending,
        "debt_delta": debt,
        "idem_key": key,
        "order_id": order_id,
        "reason": reason,
        "actor": actor.key_id,
        "created_at": at,
    }


def allocate(conn: Connection, member_id: str, entry_id: str, points: int) -> list[tuple[str, int]]:
    """Take ``points`` from the member's available lots, nearest expiry first, recording each
    allocation. The caller has already debited the balance (which holds the member's lock)."""
    taken: list[tuple[str, int]] = []
    left = points
    for lot in repository.spendable_lots(conn, member_id):
        if left == 0:
            break
        n = min(left, int(lot["remaining"]))
        repository.take_from_lot(conn, lot["lot_id"], n)
        taken.append((lot["lot_id"], n))
        left -= n
    if left:  # pragma: no cover - balance == sum of available lots makes this unreachable
        raise RuntimeError(f"member {member_id} has {left} points fewer in lots than in balance")
    repository.insert_allocations(
        conn,
        [
            {"entry_id": entry_id, "lot_id": lot, "member_id": member_id, "points": n}
            for lot, n in taken
        ],
    )
    return taken


def cap_earn(conn: Connection, program: Program, member_id: str, points: int, at: datetime) -> int:
    """How many of ``points`` fit under the daily and monthly earn caps (and count them)."""
    s = program.points
    if points <= 0 or (s.daily_cap is None and s.monthly_cap is None):
        return points
    tz = program.display_timezone
    grant = points
    day = f"d:{day_key(at, tz)}"
    month = f"m:{month_key(at, tz)}"
    if s.daily_cap is not None:
        grant = min(grant, max(0, s.daily_cap - repository.earned_in(conn, member_id, day)))
    if s.monthly_cap is not None:
        grant = min(grant, max(0, s.monthly_cap - repository.earned_in(conn, member_id, month)))
    if grant:
        if s.daily_cap is not None:
            repository.add_earned(conn, member_id, day, grant, s.daily_cap)
        if s.monthly_cap is not None:
            repository.add_earned(conn, member_id, month, grant, s.monthly_cap)
    return grant


def credit(
    conn: Connection,
    program: Program,
    member_id: str,
    points: int,
    *,
    kind: EntryKind,
    key: str,
    at: datetime,
    pending_days: int = 0,
    order_id: str | None = None,
    reason: str | None = None,
    actor: Principal = SYSTEM,
    capped: bool = True,
    expires_at: datetime | bool | None = True,
    audited: bool = True,
    fresh: bool = False,
) -> Credit:
    """Credit ``points`` as a new lot (pending for ``pending_days``), at most once per ``key``.

    Earn caps cut the credit when ``capped``; ``expires_at`` True means the program's expiry
    policy, otherwise the given moment (or None: never). Points that become available at once
    repay any debt first. ``fresh`` skips the replay check (the caller already owns ``key``,
    e.g. through the order row it claimed); ``audited`` False leaves the audit row to the
    caller (an order writes one row for all it did).
    """
    at = as_utc(at)
    balance = repository.lock_balance(conn, member_id, at)
    found = None if fresh else repository.entry_by_key(conn, key)
    if found is not None:
        return Credit(
            found["entry_id"], None, found["available_delta"] + found["pending_delta"], True
        )
    grant = cap_earn(conn, program, member_id, points, at) if capped else points
    pending = pending_days > 0
    entry = entry_row(
        member_id,
        kind,
        key,
        at,
        actor,
        available=0 if pending else grant,
        pending=grant if pending else 0,
        order_id=order_id,
        reason=reason,
    )
    repository.insert_entries(conn, [entry])
    if grant == 0:
        return Credit(entry["entry_id"], None, 0, False)
    lot_id = new_id()
    expiry = (
        program.points.expires_at(at, program.display_timezone)
        if expires_at is True
        else (expires_at or None)
    )
    repository.insert_lots(
        conn,
        [
            {
                "lot_id": lot_id,
                "member_id": member_id,
                "entry_id": entry["entry_id"],
                "order_id": order_id,
                "points": grant,
                "remaining": grant,
                "status": LotStatus.pending.value if pending else LotStatus.available.value,
                "earned_at": at,
                "available_at": at + timedelta(days=pending_days),
                "expires_at": expiry,
            }
        ],
    )
    if pending:
        repository.change_balance(conn, member_id, at, pending=grant)
    else:
        repository.change_balance(conn, member_id, at, available=grant)
        if balance["debt"]:
            _repay(conn, member_id, at, int(balance["debt"]), actor, key)
    if not audited:
        return Credit(entry["entry_id"], lot_id, grant, False)
    privacy.audit(
        conn,
        actor,
        f"points.{kind.value}",
        "points_entry",
        entry["entry_id"],
        member_id=member_id,
        reason=reason,
        details={"points": grant, "pending": pending, "order_id": order_id},
    )
    return Credit(entry["entry_id"], lot_id, grant, False)


def debit(
    conn: Connection,
    member_id: str,
    points: int,
    *,
    kind: EntryKind,
    key: str,
    at: datetime,
    order_id: str | None = None,
    reason: str | None = None,
    actor: Principal = SYSTEM,
    audited: bool = True,
    fresh: bool = False,
) -> str:
    """Spend ``points`` of the member's available points (nearest expiry first), at most once
    per ``key``; the entry id (a replay's is the first spend's). ``fresh`` skips the replay
    check (the caller already owns ``key``, e.g. through the order row it claimed).

    Raises InsufficientPoints (nothing changes) when the member has fewer available.
    """
    at = as_utc(at)
    if not fresh:
        # Lock first, then look: a concurrent spend under the same key has committed by then.
        repository.lock_balance(conn, member_id, at)
        found = repository.entry_by_key(conn, key)
        if found is not None:
            return str(found["entry_id"])
    if not repository.change_balance(conn, member_id, at, available=-points):
        have = repository.get_balance(conn, member_id)
        available = 0 if have is None else int(have["available"])
        raise InsufficientPoints(
            f"the member has {available} points available, fewer than the {points} asked for"
        )
    entry = entry_row(
        member_id, kind, key, at, actor, available=-points, order_id=order_id, reason=reason
    )
    repository.insert_entries(conn, [entry])
    allocate(conn, member_id, entry["entry_id"], points)
    if not audited:
        return str(entry["entry_id"])
    privacy.audit(
        conn,
        actor,
        f"points.{kind.value}",
        "points_entry",
        entry["entry_id"],
        member_id=member_id,
        reason=reason,
        details={"points": -points, "order_id": order_id},
    )
    return str(entry["entry_id"])


def _repay(
    conn: Connection, member_id: str, at: datetime, debt: int, actor: Principal, cause: str
) -> int:
    """Repay the member's points debt from available points (the member's lock is held)."""
    row = repository.get_balance(conn, member_id)
    assert row is not None
    n = min(debt, int(row["available"]))
    if n <= 0:
        return 0
    repository.change_balance(conn, member_id, at, available=-n, debt=-n)
    entry = entry_row(
        member_id, EntryKind.repay_debt, f"repay:{cause}", at, actor, available=-n, debt=-n
    )
    repository.insert_entries(conn, [entry])
    allocate(conn, member_id, entry["entry_id"], n)
    privacy.audit(
        conn,
        actor,
        "points.repay_debt",
        "points_entry",
        entry["entry_id"],
        member_id=member_id,
        details={"points": n},
    )
    return n


# -- maturation and expiry (the periodic run and order completion) --------------------------------


def _mature_member(
    conn: Connection,
    member_id: str,
    lots: list[RowMapping],
    at: datetime,
    actor: Principal,
    key: str,
) -> int:
    """Make the given pending lots available (the member's lock is held); the points moved."""
    total = sum(int(lot["remaining"]) for lot in lots)
    ids = [lot["lot_id"] for lot in lots]
    repository.set_lot_status(conn, ids, LotStatus.available.value)
    if total == 0:
        return 0
    balance = repository.get_balance(conn, member_id)
    assert balance is not None
    repository.change_balance(conn, member_id, at, pending=-total, available=total)
    entry = entry_row(
        member_id,
        EntryKind.mature,
        key,
        at,
        actor,
        available=total,
        pending=-total,
        order_id=lots[0]["order_id"] if len({lot["order_id"] for lot in lots}) == 1 else None,
    )
    repository.insert_entries(conn, [entry])
    privacy.audit(
        conn,
        actor,
        "points.mature",
        "points_entry",
        entry["entry_id"],
        member_id=member_id,
        details={"points": total, "lots": ids},
    )
    if balance["debt"]:
        _repay(conn, member_id, at, int(balance["debt"]), actor, key)
    return total


def mature_order(
    conn: Connection, member_id: str, order_id: str, at: datetime, actor: Principal = SYSTEM
) -> int:
    """Make an order's pending points available now (its return window closed); the points."""
    at = as_utc(at)
    repository.lock_balance(conn, member_id, at)
    lots = [
        lot
        for lot in repository.order_lots(conn, order_id)
        if lot["status"] == LotStatus.pending.value and lot["member_id"] == member_id
    ]
    if not lots:
        return 0
    return _mature_member(conn, member_id, lots, at, actor, f"mature:{order_id}:{new_id()}")


def _due_members(
    conn: Connection, status: str, column: str, at: datetime, batch: int
) -> Iterator[str]:
    """Each member with a ``status`` lot whose ``column`` has passed, once, locked, read a
    batch of due lots at a time (the caller settles the member's lots before the next read)."""
    done: set[str] = set()
    while True:
        due = repository.due_lots(conn, status=status, column=column, at=at, limit=batch)
        members = sorted({d["member_id"] for d in due} - done)
        if not members:
            return
        for member_id in members:
            done.add(member_id)
            repository.lock_balance(conn, member_id, at)
            yield member_id


def mature_due(
    conn: Connection, *, at: datetime | None = None, actor: Principal = SYSTEM, batch: int = 1000
) -> int:
    """Make every pending lot whose return window has passed available; the points moved."""
    at = as_utc(at or utcnow())
    moved = 0
    for member_id in _due_members(conn, "pending", "available_at", at, batch):
        lots = [
            lot
            for lot in repository.lots_of(conn, member_id, ["pending"])
            if as_utc(lot["available_at"]) <= at
        ]
        moved += _mature_member(conn, member_id, lots, at, actor, f"mature:{member_id}:{new_id()}")
    return moved


def expire_due(
    conn: Connection, *, at: datetime | None = None, actor: Principal = SYSTEM, batch: int = 1000
) -> int:
    """Expire what is left of every available lot past its expiry (FIFO by lot); the points."""
    at = as_utc(at or utcnow())
    expired = 0
    for member_id in _due_members(conn, "available", "expires_at", at, batch):
        lots = [
            lot
            for lot in repository.lots_of(conn, member_id, ["available"])
            if lot["expires_at"] is not None and as_utc(lot["expires_at"]) <= at
        ]
        total = sum(int(lot["remaining"]) for lot in lots)
        # Every lot past expiry is settled, the spent-out ones too (they leave the due list).
        repository.expire_lots(conn, member_id, at)
        if total == 0:
            continue
        repository.change_balance(conn, member_id, at, available=-total)
        entry = entry_row(
            member_id,
            EntryKind.expire,
            f"expire:{member_id}:{new_id()}",
            at,
            actor,
            available=-total,
        )
        repository.insert_entries(conn, [entry])
        repository.insert_allocations(
            conn,
            [
                {
                    "entry_id": entry["entry_id"],
                    "lot_id": lot["lot_id"],
                    "member_id": member_id,
                    "points": int(lot["remaining"]),
                }
                for lot in lots
            ],
        )
        outbox.emit(
            conn,
            "points.expired",
            {"points": total, "entry_id": entry["entry_id"], "at": at},
            member_id=member_id,
            at=at,
        )
        privacy.audit(
            conn,
            actor,
            "points.expire",
            "points_entry",
            entry["entry_id"],
            member_id=member_id,
            details={"points": total},
        )
        expired += total
    return expired


# -- refunds ---------------------------------------------------------------------------------------


def reverse(
    conn: Connection,
    settings: PointsSettings,
    member_id: str,
    order_id: str,
    points: int,
    *,
    key: str,
    at: datetime,
    actor: Principal = SYSTEM,
    allow_debt: bool,
) -> Reversal:
    """Take back ``points`` an order earned: from its lot, then the member's other available
    points (nearest expiry first); the rest is the shortfall, recorded as debt when
    ``allow_debt`` (else the caller deducts it from the refund). The member's lock is held."""
    if points <= 0:
        return Reversal(0, 0, 0, None)
    entry = entry_row(member_id, EntryKind.reverse_refund, key, at, actor, order_id=order_id)
    allocations: list[dict[str, Any]] = []
    from_order = 0
    pending_delta = 0
    available_delta = 0
    for lot in repository.order_lots(conn, order_id):
        status = lot["status"]
        if (
            status not in (LotStatus.pending.value, LotStatus.available.value)
            or lot["member_id"] != member_id
        ):
            continue
        n = min(points - from_order, int(lot["remaining"]))
        if n <= 0:
            continue
        emptied = n == int(lot["remaining"])
        repository.take_from_lot(
            conn, lot["lot_id"], n, LotStatus.cancelled.value if emptied else None
        )
        allocations.append(
            {
                "entry_id": entry["entry_id"],
                "lot_id": lot["lot_id"],
                "member_id": member_id,
                "points": n,
            }
        )
        from_order += n
        if status == LotStatus.pending.value:
            pending_delta -= n
        else:
            available_delta -= n
    rest = points - from_order
    balance = repository.get_balance(conn, member_id)
    assert balance is not None
    from_others = min(rest, int(balance["available"]) + available_delta)
    shortfall = rest - from_others
    debt = shortfall if allow_debt else 0
    entry["available_delta"] = available_delta - from_others
    entry["pending_delta"] = pending_delta
    entry["debt_delta"] = debt
    entry["reason"] = f"refund takes back {points} points" + (
        f", {shortfall} short" if shortfall else ""
    )
    if not repository.change_balance(
        conn,
        member_id,
        at,
        available=available_delta - from_others,
        pending=pending_delta,
        debt=debt,
    ):  # pragma: no cover - amounts were read under the member's lock
        raise InsufficientPoints("the member's points changed during the refund; retry it")
    repository.insert_entries(conn, [entry])
    repository.insert_allocations(conn, allocations)
    if from_others:
        allocate(conn, member_id, entry["entry_id"], from_others)
    privacy.audit(
        conn,
        actor,
        "points.reverse_refund",
        "points_entry",
        entry["entry_id"],
        member_id=member_id,
        details={
            "order_id": order_id,
            "from_order": from_order,
            "from_others": from_others,
            "shortfall": shortfall,
            "debt": debt,
        },
    )
    return Reversal(from_order, from_others, shortfall, str(entry["entry_id"]))


# -- API-facing operations ----------------------------------------------------------------------


def balance_of(conn: Connection, member_id: str) -> Balance:
    row = repository.get_balance(conn, member_id)
    if row is None:
        return Balance(member_id=member_id, available=0, pending=0, debt=0)
    return Balance(
        member_id=member_id, available=row["available"], pending=row["pending"], debt=row["debt"]
    )


def award(
    conn: Connection,
    program: Program,
    member_id: str,
    kind: AwardKind,
    source_id: str,
    *,
    at: datetime | None = None,
    actor: Principal = SYSTEM,
) -> PointsChange:
    """Points for a review (once per review id) or a check-in (once per day, display zone).

    Raises AwardNotConfigured when the program awards nothing for it.
    """
    at = as_utc(at or utcnow())
    points = program.points.review if kind is AwardKind.review else program.points.check_in
    if points <= 0:
        raise AwardNotConfigured(f"the program awards no points for a {kind.value}")
    source = source_id if kind is AwardKind.review else day_key(at, program.display_timezone)
    entry_kind = EntryKind.earn_review if kind is AwardKind.review else EntryKind.earn_check_in
    made = credit(
        conn,
        program,
        member_id,
        points,
        kind=entry_kind,
        key=f"{kind.value}:{member_id}:{source}",
        at=at,
        actor=actor,
        reason=f"{kind.value} {source_id}",
    )
    return PointsChange(
        entry_id=made.entry_id, points=made.points, balance=balance_of(conn, member_id)
    )


def adjust(
    conn: Connection,
    program: Program,
    member_id: str,
    points: int,
    *,
    reason: str,
    key: str,
    at: datetime | None = None,
    actor: Principal = SYSTEM,
) -> PointsChange:
    """A staff adjustment: positive credits an available lot (the program's expiry applies),
    negative spends. Raises NothingToAdjust for 0, InsufficientPoints past the balance."""
    at = as_utc(at or utcnow())
    if points == 0:
        raise NothingToAdjust("an adjustment of 0 points changes nothing")
    if points > 0:
        made = credit(
            conn,
            program,
            member_id,
            points,
            kind=EntryKind.adjust,
            key=key,
            at=at,
            reason=reason,
            actor=actor,
            capped=False,
        )
        entry_id = made.entry_id
    else:
        entry_id = debit(
            conn,
            member_id,
            -points,
            kind=EntryKind.adjust,
            key=key,
            at=at,
            reason=reason,
            actor=actor,
        )
    return PointsChange(entry_id=entry_id, points=points, balance=balance_of(conn, member_id))


def adjust_once(
    conn: Connection,
    program: Program,
    member_id: str,
    data: AdjustmentIn,
    key: str,
    *,
    actor: Principal = SYSTEM,
) -> PointsChange:
    """:func:`adjust` once per ``Idempotency-Key``: a retry gets the first answer. Raises
    MemberUnknown and :func:`adjust`'s refusals."""
    member_exists(conn, member_id)

    def work() -> PointsChange:
        return adjust(
            conn,
            program,
            member_id,
            data.points,
            reason=data.reason,
            key=f"adjust:{member_id}:{key}",
            actor=actor,
        )

    out, _ = idempotent(conn, f"points.adjust:{member_id}", key, data, PointsChange, work)
    assert isinstance(out, PointsChange)
    return out


def spend(
    conn: Connection,
    member_id: str,
    points: int,
    *,
    reason: str,
    key: str,
    at: datetime | None = None,
    actor: Principal = SYSTEM,
) -> PointsChange:
    """Spend points on a gift. Raises InsufficientPoints (nothing changes)."""
    entry_id = debit(
        conn,
        member_id,
        points,
        kind=EntryKind.spend_redeem,
        key=key,
        at=as_utc(at or utcnow()),
        reason=reason or "gift",
        actor=actor,
    )
    return PointsChange(entry_id=entry_id, points=-points, balance=balance_of(conn, member_id))


def points_of(
    conn: Connection, member_id: str, *, after: str | None = None, limit: int = 50
) -> PointsOut:
    """The member's balance, lots holding points, and a page of history (newest first).

    Raises InvalidCursor when ``after`` was not made by us.
    """
    key = decode_cursor(after)
    before: tuple[datetime, str] | None = None
    if key is not None:
        ts, _, entry_id = key.partition("|")
        try:
            before = (as_utc(datetime.fromisoformat(ts)), entry_id)
        except ValueError:
            from memberwise.kit.pagination import InvalidCursor

            raise InvalidCursor("the cursor is not valid; pass next_cursor from a page") from None
    rows = repository.entries_page(conn, member_id, before=before, limit=limit + 1)
    entries = [Entry.model_validate(dict(r)) for r in rows[:limit]]
    next_cursor = (
        encode_cursor(
            f"{as_utc(rows[limit - 1]['created_at']).isoformat()}|{rows[limit - 1]['entry_id']}"
        )
        if len(rows) > limit
        else None
    )
    lots = [
        Lot.model_validate(dict(r))
        for r in repository.lots_of(
            conn, member_id, [LotStatus.pending.value, LotStatus.available.value]
        )
    ]
    return PointsOut(
        balance=balance_of(conn, member_id),
        lots=lots,
        history=Page[Entry](items=entries, next_cursor=next_cursor),
    )


def earned_in_window(conn: Connection, as_of: datetime, days: int) -> dict[str, int]:
    """Points each member earned in the ``days`` before ``as_of``, for tier qualification: lots
    not cancelled (points reversed by a refund were never earned; spent or expired ones were)."""
    return report_repository.points_earned_window(conn, as_of, days)


def earned_since(conn: Connection, since: dict[str, datetime]) -> dict[str, int]:
    """Points each member earned since their own time in ``since`` (their last tier change)."""
    return report_repository.points_earned_since(conn, since)
