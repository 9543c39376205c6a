"""The coupon ledger: issuance under budgets and per-member limits, pricing, redemption exactly
once, restoration on cancellation, expiry.

Templates live in the program (:class:`memberwise.program.ledger.CouponTemplate`); a coupon
is one issued instance, owned by one member. Guarantees, each one guarded UPDATE:

* **Exactly once**: ``UPDATE coupons SET status='redeemed' ... WHERE status='issued' AND
  valid_from <= now < valid_until``; of any number of concurrent redemptions one changes the
  row and the others change nothing and are refused (``coupon_already_redeemed``).
* **Budgets**: ``coupon_budgets.issued`` counts issuance against ``budget_count``;
  ``redeemed_money`` counts the money taken off against ``budget_money`` (maintained only for
  templates that have a money budget, so unbudgeted coupons never contend for one hot row).
* **Per-member limit**: ``coupon_member_counts`` counts a member's coupons of a template.
* **Idempotent issuance**: ``(issue_key, member_id, template)`` is unique; issuing again under
  the same key finds the coupons and issues nothing more.

:func:`price` checks a member's chosen coupons against a cart without changing anything (the
checkout quote uses it too); the order's transaction then marks them used
(:func:`redemptions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, RowMapping

from memberwise.kit import outbox
from memberwise.kit.errors import NotFound
from memberwise.kit.ids import new_id
from memberwise.kit.time import as_utc, utcnow
from memberwise.ledger import coupon_repository, fast_repository
from memberwise.ledger.schemas import (
    CouponOut,
    CouponStatus,
    EntryKind,
    IssueIn,
    IssueOut,
    OrderItem,
    PointsChange,
    RedemptionIn,
    RedemptionOut,
    TemplateOut,
)
from memberwise.ledger.service import (
    BudgetExhausted,
    CouponAlreadyRedeemed,
    CouponExpired,
    CouponNotApplicable,
    CouponNotFound,
    CouponTemplateNotFound,
    InvalidOrder,
    MemberUnknown,
    NotForPoints,
    PerMemberLimit,
    idempotent,
    member_exists,
)
from memberwise.membership import service as membership
from memberwise.privacy import service as privacy
from memberwise.privacy.schemas import SYSTEM, Principal
from memberwise.program.ledger import CouponKind, CouponTemplate
from memberwise.program.schemas import Program


def template_of(program: Program, name: str) -> CouponTemplate:
    """The program's template ``name``. Raises CouponTemplateNotFound."""
    found = program.coupons.get(name)
    if found is None:
        raise CouponTemplateNotFound(f"the program has no coupon template {name!r}")
    return found


def _window(template: CouponTemplate, at: datetime, timezone: str) -> tuple[datetime, datetime]:
    """When a coupon issued at ``at`` is valid: from issuance (or the template's start) to the
    end of its last day in the display zone (capped by the template's end)."""
    start = max(at, as_utc(template.valid_from)) if template.valid_from else at
    ends: list[datetime] = []
    if template.valid_days is not None:
        zone = ZoneInfo(timezone)
        last = at.astimezone(zone).date() + timedelta(days=template.valid_days - 1)
        ends.append(as_utc(datetime.combine(last + timedelta(days=1), time(), zone)))
    if template.valid_until is not None:
        ends.append(as_utc(template.valid_until))
    return start, min(ends)


def coupon_out(row: RowMapping | Mapping[str, Any]) -> CouponOut:
    return CouponOut.model_validate(dict(row))


@dataclass(frozen=True)
class _Refusal:
    code: str


def _segment_of(conn: Connection, member_id: str) -> set[str]:
    from memberwise.profiles import service as profiles

    try:
        profile = profiles.get_profile(conn, member_id)
    except NotFound:
        return set()
    names = {profile.segment}
    if profile.persona is not None:
        names.add(f"persona-{profile.persona}")
    return names


def issue(
    conn: Connection,
    program: Program,
    template: str,
    member_ids: Sequence[str],
    *,
    key: str,
    source: str = "operator",
    at: datetime | None = None,
    actor: Principal = SYSTEM,
    strict: bool = False,
) -> IssueOut:
    """Issue one coupon of ``template`` to each member, at most once per ``key``.

    Members outside the template's tiers or segments, at its per-member limit, or past the
    count budget get none (``refused``: member id -> code); with ``strict`` the first refusal
    is raised instead (one member asking). Raises CouponTemplateNotFound, CouponExpired when
    the template can no longer be issued.
    """
    at = as_utc(at or utcnow())
    tmpl = template_of(program, template)
    start, end = _window(tmpl, at, program.display_timezone)
    if end <= at:
        raise CouponExpired(f"coupon template {template!r} ended at {end.isoformat()}")
    issued: list[CouponOut] = []
    refused: dict[str, str] = {}
    exhausted = False
    created = 0
    wanted = sorted(set(member_ids))
    known: set[str] = set()
    for i in range(0, len(wanted), 1000):
        known |= coupon_repository.known_members(conn, wanted[i : i + 1000])
    # Sorted: issuance takes each member's counter row, always in the same order.
    for member_id in wanted:
        if member_id not in known:
            if strict:
                raise MemberUnknown(f"no member {member_id!r}")
            refused[member_id] = MemberUnknown.code
            continue
        found = coupon_repository.coupon_by_issue(conn, key, member_id, template)
        if found is not None:
            issued.append(coupon_out(found))
            continue
        refusal = _refuse(conn, program, tmpl, member_id, at) or (
            _Refusal(BudgetExhausted.code) if exhausted else None
        )
        limit = tmpl.per_member_limit
        if (
            refusal is None
            and limit is not None
            and not coupon_repository.count_member_issue(conn, template, member_id, limit)
        ):
            refusal = _Refusal(PerMemberLimit.code)
        if refusal is None and not coupon_repository.reserve_issue(
            conn, template, 1, tmpl.budget_count
        ):
            exhausted = True
            refusal = _Refusal(BudgetExhausted.code)
            if tmpl.per_member_limit is not None:
                coupon_repository.uncount_member_issue(conn, template, member_id)
        if refusal is not None:
            if strict:
                raise _ERRORS[refusal.code](_MESSAGES[refusal.code].format(template=template))
            refused[member_id] = refusal.code
            continue
        values = {
            "coupon_id": new_id(),
            "template": template,
            "member_id": member_id,
            "status": CouponStatus.issued.value,
            "source": source,
            "issue_key": key,
            "issued_at": at,
            "valid_from": start,
            "valid_until": end,
            "order_id": None,
            "discount": None,
            "redeemed_at": None,
        }
        coupon_repository.insert_coupon(conn, values)
        outbox.emit(
            conn,
            "coupon.issued",
            {
                "coupon_id": values["coupon_id"],
                "template": template,
                "source": source,
                "valid_from": start,
                "valid_until": end,
            },
            member_id=member_id,
            at=at,
        )
        issued.append(coupon_out(values))
        created += 1
    if created:
        privacy.audit(
            conn,
            actor,
            "coupons.issue",
            "coupon_template",
            template,
            member_id=issued[0].member_id if len(issued) == 1 else None,
            details={"key": key, "source": source, "issued": created, "refused": len(refused)},
        )
    return IssueOut(template=template, issued=len(issued), coupons=issued, refused=refused)


_ERRORS: dict[str, type[CouponNotApplicable | PerMemberLimit | BudgetExhausted]] = {
    CouponNotApplicable.code: CouponNotApplicable,
    PerMemberLimit.code: PerMemberLimit,
    BudgetExhausted.code: BudgetExhausted,
}
_MESSAGES = {
    CouponNotApplicable.code: "the member is not among those coupon template {template!r} is for",
    PerMemberLimit.code: "the member already has as many {template!r} coupons as one member may",
    BudgetExhausted.code: "coupon template {template!r} has no budget left",
}


def issue_once(
    conn: Connection, program: Program, data: IssueIn, key: str, *, actor: Principal = SYSTEM
) -> IssueOut:
    """An operator's issuance to members or a segment, once per ``Idempotency-Key``: a retry
    gets the first answer. Raises :func:`issue`'s refusals."""

    def work() -> IssueOut:
        member_ids = (
            segment_member_ids(conn, data.segment) if data.segment is not None else data.member_ids
        )
        return issue(conn, program, data.template, member_ids, key=f"operator:{key}", actor=actor)

    out, _ = idempotent(conn, "coupons.issue", key, data, IssueOut, work)
    assert isinstance(out, IssueOut)
    return out


def _refuse(
    conn: Connection, program: Program, tmpl: CouponTemplate, member_id: str, at: datetime
) -> _Refusal | None:
    if tmpl.tiers and membership.tier_of(conn, member_id) not in tmpl.tiers:
        return _Refusal(CouponNotApplicable.code)
    if tmpl.segments and not _segment_of(conn, member_id) & set(tmpl.segments):
        return _Refusal(CouponNotApplicable.code)
    return None


# -- pricing and redemption ----------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """A coupon priced against a cart: money off the goods and off shipping."""

    coupon_id: str
    template: str
    goods: int
    shipping: int
    with_points: bool
    budget_money: int | None


def eligible_amount(template: CouponTemplate, items: Sequence[OrderItem]) -> int:
    """Fen of the cart's goods the template applies to (its categories, or all)."""
    return sum(
        i.price * i.quantity
        for i in items
        if not template.categories or i.category in template.categories
    )


def discount_for(
    template: CouponTemplate, items: Sequence[OrderItem], shipping_fee: int
) -> tuple[int, int] | None:
    """(goods, shipping) fen a template takes off this cart, or None when it does not apply."""
    eligible = eligible_amount(template, items)
    if template.kind is CouponKind.free_shipping:
        if shipping_fee <= 0 or eligible <= 0 or eligible < template.min_spend:
            return None
        return 0, shipping_fee
    if eligible <= 0 or eligible < template.min_spend:
        return None
    if template.kind is CouponKind.percent_off:
        off = eligible * template.percent // 100
        if template.max_discount is not None:
            off = min(off, template.max_discount)
    else:
        off = min(template.amount, eligible)
    return off, 0


def price(
    conn: Connection,
    program: Program,
    member_id: str,
    coupon_ids: Sequence[str],
    items: Sequence[OrderItem],
    shipping_fee: int,
    *,
    tier: str | None,
    at: datetime,
    read: Mapping[str, dict[str, Any]] | None = None,
) -> list[Applied]:
    """Check the member's chosen coupons against a cart and price them; changes nothing.

    Raises CouponNotFound (not the member's), CouponAlreadyRedeemed, CouponExpired,
    CouponNotApplicable (template gone, tier, not valid yet, categories, threshold, no
    shipping fee, stacking) and InvalidOrder (the same coupon twice). ``read``: coupons the
    caller has already read with ``repository.fast_coupon``'s columns (saves a round trip).
    """
    if not coupon_ids:
        return []
    if len(set(coupon_ids)) != len(coupon_ids):
        raise InvalidOrder("the same coupon is listed twice")
    applied: list[Applied] = []
    goods_left = sum(i.price * i.quantity for i in items)
    templates: list[CouponTemplate] = []
    for coupon_id in coupon_ids:
        row = (read or {}).get(coupon_id) or fast_repository.fast_coupon(conn, coupon_id, at)
        if row is None or row["member_id"] != member_id:
            raise CouponNotFound(f"the member has no coupon {coupon_id!r}")
        _check_state(row)
        tmpl = program.coupons.get(row["template"])
        if tmpl is None:
            raise CouponNotApplicable(f"coupon {coupon_id!r} is of a template the program dropped")
        if tmpl.tiers and tier not in tmpl.tiers:
            raise CouponNotApplicable(f"coupon {coupon_id!r} is for members of other tiers")
        off = discount_for(tmpl, items, shipping_fee)
        if off is None:
            raise CouponNotApplicable(
                f"coupon {coupon_id!r} does not apply to this order (its categories, minimum "
                "spend or shipping fee)"
            )
        goods = min(off[0], goods_left)
        goods_left -= goods
        templates.append(tmpl)
        applied.append(
            Applied(coupon_id, row["template"], goods, off[1], tmpl.with_points, tmpl.budget_money)
        )
    if len(applied) > 1:
        if not all(t.stackable for t in templates):
            raise CouponNotApplicable("a coupon that cannot be combined is used with others")
        if len({a.template for a in applied}) != len(applied):
            raise CouponNotApplicable("two coupons of the same template cannot be combined")
        if sum(1 for a in applied if a.shipping) > 1:
            raise CouponNotApplicable("only one coupon may take off the shipping fee")
    return applied


def _check_state(row: Mapping[str, Any]) -> None:
    """Raise the refusal for a coupon that cannot be used now (``fast_coupon``'s row)."""
    status = row["status"]
    coupon_id = row["coupon_id"]
    if status == CouponStatus.redeemed.value:
        raise CouponAlreadyRedeemed(f"coupon {coupon_id!r} has already been used")
    if status in (CouponStatus.expired.value, CouponStatus.void.value) or not row["valid"]:
        raise CouponExpired(f"coupon {coupon_id!r} has expired")
    if not row["started"]:
        raise CouponNotApplicable(f"coupon {coupon_id!r} is not valid yet")


def redemptions(
    applied: Sequence[Applied],
) -> tuple[list[tuple[str, int]], list[tuple[str, int, int]]]:
    """What redeeming priced coupons writes (``repository.fast_place`` writes it, exactly
    once): each coupon marked used with the money it takes off, then each money budget counted
    (template, money, cap). Lock order: coupons by id, then budgets by template (then the
    member's balance)."""
    marked = [
        (a.coupon_id, a.goods + a.shipping) for a in sorted(applied, key=lambda a: a.coupon_id)
    ]
    counted = [
        (a.template, a.goods + a.shipping, a.budget_money)
        for a in sorted(applied, key=lambda a: a.template)
        if a.budget_money is not None
    ]
    return marked, counted


def refuse_redemption(conn: Connection, step: str, key: str, at: datetime) -> NoReturn:
    """Raise the refusal for a redemption that did not pass (``repository.fast_place``'s
    answer): CouponAlreadyRedeemed / CouponExpired when a concurrent order got there first or
    the coupon ended meanwhile, BudgetExhausted when the money budget would be passed. The
    caller's transaction then rolls everything back."""
    if step == "budget":
        raise BudgetExhausted(f"coupon template {key!r} has no money budget left")
    row = fast_repository.fast_coupon(conn, key, at)
    if row is None:  # pragma: no cover - priced in this transaction
        raise CouponNotFound(f"the member has no coupon {key!r}")
    _check_state(row)
    raise CouponAlreadyRedeemed(f"coupon {key!r} has already been used")


def restore(conn: Connection, program: Program, order_id: str, at: datetime) -> list[str]:
    """Give back the coupons an order used (full refund or cancellation) where the template
    says so; ones past their end come back expired. Returns the ids given back."""
    restored: list[str] = []
    rows = coupon_repository.order_coupons(conn, order_id)
    for row in rows:
        tmpl = program.coupons.get(row["template"])
        if tmpl is not None and not tmpl.restore_on_refund:
            continue
        if coupon_repository.restore_coupon(conn, row["coupon_id"], order_id, at):
            restored.append(row["coupon_id"])
            if tmpl is not None and tmpl.budget_money is not None:
                coupon_repository.release_money(conn, row["template"], int(row["discount"] or 0))
    return restored


def buy(
    conn: Connection,
    program: Program,
    member_id: str,
    template: str,
    *,
    key: str,
    at: datetime | None = None,
    actor: Principal = SYSTEM,
) -> RedemptionOut:
    """Exchange points for a coupon. Raises NotForPoints, InsufficientPoints and the
    issuance refusals; nothing changes on a refusal."""
    from memberwise.ledger import points

    at = as_utc(at or utcnow())
    tmpl = template_of(program, template)
    if tmpl.points_price is None:
        raise NotForPoints(f"coupon template {template!r} is not sold for points")
    # Issue first, then spend: budgets are locked before the member's balance (lock order).
    out = issue(
        conn,
        program,
        template,
        [member_id],
        key=key,
        source="points",
        at=at,
        actor=actor,
        strict=True,
    )
    entry_id = points.debit(
        conn,
        member_id,
        tmpl.points_price,
        kind=EntryKind.spend_redeem,
        key=key,
        at=at,
        reason=f"coupon {template}",
        actor=actor,
    )
    change = PointsChange(
        entry_id=entry_id, points=-tmpl.points_price, balance=points.balance_of(conn, member_id)
    )
    return RedemptionOut(change=change, coupon=out.coupons[0])


def redeem_once(
    conn: Connection,
    program: Program,
    member_id: str,
    data: RedemptionIn,
    key: str,
    *,
    actor: Principal = SYSTEM,
) -> RedemptionOut:
    """Spend points on a coupon sold for points (:func:`buy`) or on a gift, once per
    ``Idempotency-Key``: a retry gets the first answer. Raises MemberUnknown and the
    refusals of :func:`buy` and :func:`~memberwise.ledger.points.spend`."""
    from memberwise.ledger import points

    member_exists(conn, member_id)
    entry_key = f"redeem:{member_id}:{key}"

    def work() -> RedemptionOut:
        if data.coupon_template is not None:
            return buy(conn, program, member_id, data.coupon_template, key=entry_key, actor=actor)
        assert data.points is not None
        change = points.spend(
            conn, member_id, data.points, reason=data.reason, key=entry_key, actor=actor
        )
        return RedemptionOut(change=change)

    out, _ = idempotent(conn, f"points.redeem:{member_id}", key, data, RedemptionOut, work)
    assert isinstance(out, RedemptionOut)
    return out


def segment_member_ids(conn: Connection, segment: str) -> list[str]:
    """Every member of a segment or persona of the published build. Raises SegmentNotFound."""
    from memberwise.profiles import service as profiles

    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = profiles.segment_members(conn, segment, cursor, limit=1000)
        ids += [m.member_id for m in page.items]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


def expire_due(conn: Connection, *, at: datetime | None = None) -> int:
    """Mark issued coupons past their end expired; how many."""
    return coupon_repository.expire_coupons(conn, as_utc(at or utcnow()))


def member_coupons(
    conn: Connection,
    member_id: str,
    *,
    status: CouponStatus | None = None,
    after: str | None = None,
    limit: int = 50,
) -> tuple[list[CouponOut], str | None]:
    """The member's coupons in id (issue) order; and the last id when there is a next page."""
    rows = coupon_repository.member_coupons(
        conn,
        member_id,
        status=None if status is None else status.value,
        after=after,
        limit=limit + 1,
    )
    out = [coupon_out(r) for r in rows[:limit]]
    return out, (out[-1].coupon_id if len(rows) > limit else None)


def templates(conn: Connection, program: Program) -> list[TemplateOut]:
    """The program's templates with their budgets' use (counted from the coupons)."""
    counts = coupon_repository.coupon_counts(conn)
    out = []
    for name, t in program.coupons.items():
        issued = sum(n for (tmpl, _), (n, _) in counts.items() if tmpl == name)
        redeemed, money = counts.get((name, CouponStatus.redeemed.value), (0, 0))
        out.append(
            TemplateOut(
                name=name,
                kind=t.kind.value,
                description=t.description,
                issued=issued,
                redeemed=redeemed,
                redeemed_money=money,
                budget_count=t.budget_count,
                budget_money=t.budget_money,
            )
        )
    return out
