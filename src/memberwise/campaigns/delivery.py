"""Giving a member an offer and telling the platform: the one path campaigns and journeys share.

The offer goes through the ledgers under an idempotency key (a coupon issued once per key, points
credited once per key), then a webhook message in the outbox carries the text, the channels and
what was given, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from memberwise.campaigns.schemas import Channel, Offer, OfferKind
from memberwise.kit import outbox
from memberwise.ledger import coupons as ledger_coupons
from memberwise.ledger import points as ledger_points
from memberwise.privacy import consent
from memberwise.privacy.schemas import Principal, Purpose
from memberwise.program.schemas import Program

#: The consent purpose each channel needs (PIPL/GDPR: marketing is consented per channel). An
#: in-app message is shown only inside the app the member opened, so it asks for none.
CHANNEL_PURPOSE: dict[Channel, str | None] = {
    Channel.push: Purpose.marketing_push.value,
    Channel.sms: Purpose.marketing_sms.value,
    Channel.email: Purpose.marketing_email.value,
    Channel.app: None,
}


class Reach:
    """The channels each member consented to, for a batch of sends (one query a purpose)."""

    def __init__(self, conn: Connection, program: Program, channels: Sequence[Channel]) -> None:
        self.channels = list(channels)
        self._audiences = {
            purpose: consent.audience(conn, program.privacy, purpose)
            for c in self.channels
            if (purpose := CHANNEL_PURPOSE[c]) is not None
        }

    def of(self, member_id: str) -> list[Channel]:
        """The campaign's channels this member may be sent on (empty: send nothing)."""
        return [
            c
            for c in self.channels
            if (purpose := CHANNEL_PURPOSE[c]) is None or self._audiences[purpose].allows(member_id)
        ]


def deliver(
    conn: Connection,
    program: Program,
    *,
    event_type: str,
    key: str,
    member_id: str,
    offer: Offer,
    channels: Sequence[Channel],
    context: Mapping[str, Any],
    reason: str,
    now: datetime,
    actor: Principal,
) -> str:
    """Give ``offer`` to ``member_id`` and write the ``event_type`` message; its message id.

    Runs in a savepoint: a refusal rolls back only this member's writes. Raises the ledger's
    refusals (a coupon's budget or limit, an unknown member) unchanged, so the caller records
    them as the reason a member was skipped."""
    with conn.begin_nested():  # a refusal rolls back this member's writes, and only them
        given: dict[str, object] = {"kind": offer.kind.value}
        if offer.kind is OfferKind.coupon:
            issued = ledger_coupons.issue(
                conn,
                program,
                offer.coupon_template or "",
                [member_id],
                key=key,
                source="campaign",
                at=now,
                actor=actor,
                strict=True,
            )
            given["coupon_id"] = issued.coupons[0].coupon_id
        elif offer.kind is OfferKind.points:
            ledger_points.adjust(
                conn,
                program,
                member_id,
                offer.points or 0,
                reason=reason,
                key=f"{key}:{member_id}",
                at=now,
                actor=actor,
            )
            given["points"] = offer.points
        return outbox.emit(
            conn,
            event_type,
            {
                **context,
                "channels": [c.value for c in channels],
                "message": offer.message,
                "offer": given,
            },
            member_id=member_id,
            at=now,
        )
