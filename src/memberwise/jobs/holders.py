"""What every domain holds about a member, registered with privacy's erasure/export registry.

Privacy sits below the domains whose tables it must export, erase and merge, so this module,
which sits above them all, fills privacy's registry in (:func:`install`; the app, the CLI and
the jobs call it). Each table keyed by member gets a policy: financial records (points, coupons,
orders, refunds, subscriptions, benefit claims) are kept pseudonymised, as the law requires of
them; everything else about the member is deleted. A test checks that every table with a
``member_id`` column is covered, so a new table cannot be forgotten.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection

from memberwise.campaigns import tables as campaigns
from memberwise.kit import outbox
from memberwise.ledger import merge as ledger_merge
from memberwise.ledger import tables as ledger
from memberwise.members import service as members
from memberwise.members.schemas import MemberUpdate
from memberwise.membership import service as membership_service
from memberwise.membership import tables as membership
from memberwise.predict import tables as predict
from memberwise.privacy import erasure, merge, rights
from memberwise.privacy.crypto import FieldCipher
from memberwise.privacy.erasure import Holder, HolderContext, Policy, table_holder, text_holder
from memberwise.privacy.schemas import Principal
from memberwise.profiles import tables as profiles
from memberwise.recommend import tables as recommend
from memberwise.service import service as desk
from memberwise.service import tables as service
from memberwise.webhooks import tables as webhooks

_installed = False


def _json_rows(groups: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {
        k: [{c: _jsonable(v) for c, v in r.items()} for r in rows] for k, rows in groups.items()
    }


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _member_export(ctx: HolderContext, member_id: str) -> Any:
    return members.export_member(ctx.conn, ctx.cipher, member_id)


def _member_erase(ctx: HolderContext, member_id: str, pseudonym: str) -> tuple[Policy, int]:
    return "delete", members.forget_member(ctx.conn, member_id)


def _correct(
    conn: Connection, cipher: FieldCipher, member_id: str, fields: dict[str, Any], actor: Principal
) -> None:
    members.update_member(conn, cipher, member_id, MemberUpdate(**fields), actor=actor)


def _merge_ledger(
    conn: Connection, program: Any, source: str, target: str, at: datetime, actor: Principal
) -> dict[str, int]:
    return ledger_merge.merge_member(conn, program, source, target, at=at, actor=actor)


def _merge_membership(
    conn: Connection, program: Any, source: str, target: str, at: datetime, actor: Principal
) -> dict[str, int]:
    return membership_service.merge_member(conn, program, source, target, at=at, actor=actor)


def _check_correction(fields: dict[str, Any]) -> str | None:
    try:
        MemberUpdate(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"corrections.{where}: {first['msg']}"
    return None


def install() -> None:
    """Register every domain's holders (idempotent)."""
    global _installed
    if _installed:
        return
    erasure.register(
        Holder(name="members", export=_member_export, erase=_member_erase, tables=("members",))
    )
    rights.register_corrector(_correct, _check_correction)
    merge.register_merger("ledger", _merge_ledger)
    merge.register_merger("membership", _merge_membership)
    keep = "pseudonymise"
    for table, policy in (
        (ledger.points_balances, keep),
        (ledger.points_entries, keep),
        (ledger.points_lots, keep),
        (ledger.points_allocations, keep),
        (ledger.points_earn_periods, keep),
        (ledger.coupon_member_counts, keep),
        (ledger.coupons, keep),
        (ledger.orders, keep),
        (ledger.order_refunds, keep),
        (ledger.benefit_counters, keep),
        (ledger.benefit_uses, keep),
        (membership.subscriptions, keep),
        (membership.member_tiers, "delete"),
        (membership.tier_history, "delete"),
        (membership.tier_notices, "delete"),
        (membership.invitations, "delete"),
        (membership.member_managers, "delete"),
        (profiles.member_profiles, "delete"),
        (predict.member_predictions, "delete"),
        (recommend.member_recommendations, "delete"),
        (recommend.coupon_suggestions, "delete"),
    ):
        # Merges of these are exact ledger operations, done by privacy.merge with the
        # domains' services; re-keying alone would collide on their keys.
        erasure.register(table_holder(table, policy=policy, merge=False))  # type: ignore[arg-type]
    # The service desk: tickets with their threads are deleted (what the member wrote and was
    # told); compensations and after-sales requests are financial records, kept pseudonymised.
    erasure.register(
        Holder(
            name="service_tickets",
            export=lambda ctx, member_id: _json_rows(desk.export_member(ctx.conn, member_id)),
            erase=lambda ctx, member_id, _p: ("delete", desk.forget_member(ctx.conn, member_id)),
            merge=lambda ctx, source, target: desk.merge_member(ctx.conn, source, target),
            tables=("service_tickets", "service_events"),
        )
    )
    erasure.register(table_holder(service.service_compensations, policy=keep))  # type: ignore[arg-type]
    erasure.register(table_holder(service.service_after_sales, policy=keep))  # type: ignore[arg-type]
    # Messages waiting for the platform's webhooks, their deliveries, and campaign exposure:
    # deleted on erasure (nothing more is sent about an erased member), re-keyed on a merge
    # where no key can collide.
    erasure.register(table_holder(outbox.outbox, policy="delete"))
    erasure.register(
        table_holder(webhooks.webhook_deliveries, policy="delete", column="member_key")
    )
    erasure.register(table_holder(campaigns.campaign_members, policy="delete", merge=False))
    erasure.register(table_holder(campaigns.journey_enrollments, policy="delete", merge=False))
    # Stored responses and event details may quote the member id.
    erasure.register(
        text_holder(ledger.idempotency_keys, ["scope", "key"], ["scope", "key", "response"])
    )
    erasure.register(text_holder(ledger.points_entries, ["entry_id"], ["idem_key"]))
    erasure.register(text_holder(membership.subscription_payments, ["payment_id"], ["response"]))
    erasure.register(text_holder(membership.subscription_events, ["event_id"], ["details"]))
    _installed = True
