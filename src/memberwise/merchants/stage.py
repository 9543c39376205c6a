"""The build's ``merchants`` stage: every merchant's scorecard as of the build's clock, and
which items each merchant sells (what keeping members away from a shop hides).

Writes ``merchant_scorecards.parquet`` (:func:`.scorecard.scorecards`),
``merchant_items.parquet`` and ``merchant_complaints.parquet`` (complaints of the last rate
window, for the service-desk hook), all Ibis expressions over the lake; published by
:func:`memberwise.merchants.service.publish_build`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import ibis

from memberwise.kit.warehouse import write_parquet
from memberwise.merchants.scorecard import counted_ratings, industries, scorecards, service_rates

if TYPE_CHECKING:
    from memberwise.builds import BuildContext

SCORECARDS = "merchant_scorecards.parquet"
ITEMS = "merchant_items.parquet"
COMPLAINTS = "merchant_complaints.parquet"
OUTPUTS: tuple[str, ...] = (SCORECARDS, ITEMS, COMPLAINTS)
INPUTS: tuple[str, ...] = ()


def _parents(ctx: BuildContext) -> ibis.Table:
    from memberwise.recommend import service as recommend_service

    with ctx.runtime.engine.connect() as conn:
        table = recommend_service.categories_table(conn)
    return ibis.memtable(table.select(["category_id", "parent_id"]))


def _ticket_tiers(ctx: BuildContext) -> tuple[str, ...]:
    """The tiers whose complaints about kept-away merchants open tickets: the program's
    ``keep_away.ticket_tiers``, or else its black-card tier."""
    chosen = ctx.program.merchants.keep_away.ticket_tiers
    black_card = ctx.program.black_card
    return chosen or ((black_card.tier,) if black_card is not None else ())


def stage_merchants(ctx: BuildContext) -> int:
    """Scorecards, merchant items and recent complaints; the number of scorecards."""
    settings = ctx.program.merchants
    as_of = ctx.result.as_of
    ctx.progress("merchants", 0, 3)
    events = ctx.runtime.lake.events_table(ctx.con)
    offset = ZoneInfo(ctx.program.display_timezone).utcoffset(as_of) or timedelta(0)
    ratings = counted_ratings(events, as_of=as_of, settings=settings, utc_offset=offset)
    rates = service_rates(events, as_of=as_of, days=settings.rate_window_days)
    industry = industries(events, _parents(ctx), as_of=as_of, days=settings.dsr_window_days)
    cards = scorecards(ratings, rates, industry, shrinkage=settings.shrinkage_ratings)
    rows = write_parquet(ctx.con, cards, ctx.path(SCORECARDS))
    # The publisher reads the program's rules from the manifest (it gets only the directory).
    ctx.meta.setdefault("sections", {})["merchants"] = {
        "settings": settings.model_dump(mode="json"),
        "timezone": ctx.program.display_timezone,
        "ticket_tiers": list(_ticket_tiers(ctx)),
        "scorecards": rows,
    }
    ctx.progress("merchants", 1, 3)
    sold = events.filter(
        events.merchant_id.notnull(), events.item_id.notnull(), events.ts <= ibis.literal(as_of)
    )
    # A grouping, not ``distinct()``: Ibis compiles a distinct followed by an ordering for
    # Spark as ``SELECT DISTINCT *`` of the filtered rows, one row per event.
    pairs = sold.group_by(["merchant_id", "item_id"]).aggregate()
    items = pairs.order_by(["merchant_id", "item_id"])
    write_parquet(ctx.con, items, ctx.path(ITEMS))
    ctx.progress("merchants", 2, 3)
    start = as_of - timedelta(days=settings.rate_window_days)
    complaints = events.filter(
        events.type == "complaint",
        events.merchant_id.notnull(),
        events.ts > ibis.literal(start),
        events.ts <= ibis.literal(as_of),
    ).select("event_id", "member_id", "merchant_id", "item_id", "order_id", "ts", "text")
    write_parquet(ctx.con, complaints.order_by("event_id"), ctx.path(COMPLAINTS))
    ctx.progress("merchants", 3, 3)
    return rows
