"""The profile field catalog: every field a build computes, its type and what it means.

The names are a public contract: tag, segment, tier and invitation rules and the API use them,
so a field is never renamed, only added. ``docs/profiles.md`` lists this catalog (a test keeps
the two equal). Windows are measured back from the build's ``as_of`` time: ``_30d`` means
events with ``as_of - 30 days < ts <= as_of``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from memberwise.profiles.rules import FieldType

#: The windows of the windowed fields, in days.
WINDOWS: tuple[int, ...] = (30, 90, 365)
#: Window of the habit fields (hours, days of week, channels) and of category/brand affinity.
HABIT_DAYS = 90
#: Hour buckets of the ``share_events_HH_to_HH`` fields, in the program's time zone.
HOUR_BUCKETS: tuple[tuple[int, int], ...] = ((2, 6), (6, 10), (10, 14), (14, 18), (18, 22), (22, 2))
#: How much one event of a type weighs in category and brand affinity.
AFFINITY_WEIGHTS: dict[str, int] = {"view": 1, "favorite": 2, "cart": 3, "purchase": 5}
#: How many top categories and brands a profile lists.
TOP_N = 5


@dataclass(frozen=True)
class Field:
    """One profile field: its name, type, unit and meaning."""

    name: str
    type: FieldType
    description: str
    unit: str = ""


NUMBER, STRING, TIMESTAMP = FieldType.number, FieldType.string, FieldType.timestamp

#: Counts per window: field stem -> what is counted.
WINDOW_COUNTS: dict[str, str] = {
    "events": "events of any type",
    "views": "view events",
    "searches": "search events",
    "favorites": "favorite events",
    "carts": "add-to-cart events",
    "purchases": "purchase events (order lines)",
    "orders": "distinct orders (a purchase without `order_id` is its own order)",
    "units": "units bought (`quantity`, 1 when absent)",
    "spend": "money spent: sum of `price * quantity` over purchases, in minor units",
    "refunds": "refund events",
    "reviews": "review events",
    "complaints": "complaint events",
    "service_contacts": "service events (contacts with the service desk)",
    "logins": "login events",
    "active_days": "distinct days with any event (UTC days)",
    "distinct_categories": "distinct categories of viewed, favoured, carted or bought items",
    "distinct_brands": "distinct brands of viewed, favoured, carted or bought items",
}


def _catalog() -> tuple[Field, ...]:
    fields = [
        Field("region", STRING, "the member's region: as registered, else the latest event's"),
        Field("credit_stars", NUMBER, "credit stars (0-7) as the platform registered them"),
        Field("first_seen", TIMESTAMP, "time of the member's first event"),
        Field("last_seen", TIMESTAMP, "time of the member's latest event up to `as_of`"),
        Field("tenure_days", NUMBER, "whole days from `first_seen` to `as_of`", "days"),
        Field("days_since_last_seen", NUMBER, "whole days from `last_seen` to `as_of`", "days"),
        Field("last_purchase", TIMESTAMP, "time of the latest purchase (null: never bought)"),
        Field(
            "recency_days",
            NUMBER,
            "whole days from the latest purchase to `as_of` (null: never bought)",
            "days",
        ),
        Field("lifetime_events", NUMBER, "events up to `as_of`, all time"),
        Field("lifetime_orders", NUMBER, "distinct orders up to `as_of`, all time"),
        Field("lifetime_spend", NUMBER, "money spent up to `as_of`, all time", "minor units"),
    ]
    for stem, meaning in WINDOW_COUNTS.items():
        unit = "minor units" if stem == "spend" else ""
        for days in WINDOWS:
            fields.append(Field(f"{stem}_{days}d", NUMBER, f"{meaning}, last {days} days", unit))
    fields += [
        Field("refund_amount_365d", NUMBER, "refunded money, last 365 days", "minor units"),
        Field(
            "aov_365d", NUMBER, "average order value: spend / orders, last 365 days", "minor units"
        ),
        Field("refund_rate_365d", NUMBER, "refunds / purchases, last 365 days"),
        Field("avg_rating_365d", NUMBER, "average stars (1-5) of the member's reviews, 365 days"),
        Field("view_to_cart_90d", NUMBER, "carts / views, last 90 days"),
        Field("cart_to_purchase_90d", NUMBER, "purchases / carts, last 90 days"),
        Field("view_to_purchase_90d", NUMBER, "purchases / views, last 90 days"),
        Field("views_per_category_30d", NUMBER, "views / distinct categories (browse depth), 30d"),
        Field("views_per_category_90d", NUMBER, "views / distinct categories (browse depth), 90d"),
        Field(
            "singles_day_share_365d",
            NUMBER,
            "share of 365-day spend made on 11 November (program time zone)",
        ),
    ]
    for start, end in HOUR_BUCKETS:
        fields.append(
            Field(
                f"share_events_{start:02d}_to_{end:02d}",
                NUMBER,
                f"share of the last {HABIT_DAYS} days' events from {start:02d}:00 to "
                f"{end:02d}:00 (program time zone)",
            )
        )
    fields += [
        Field(
            "peak_hour",
            NUMBER,
            f"hour of day (0-23, program time zone) with most events, last {HABIT_DAYS} days; "
            "ties go to the earliest hour",
        ),
        Field("share_events_weekend", NUMBER, f"share of events on Sat/Sun, last {HABIT_DAYS}d"),
        Field(
            "peak_weekday",
            NUMBER,
            f"day of week (1 = Monday .. 7 = Sunday) with most events, last {HABIT_DAYS} days",
        ),
        Field("top_channel", STRING, f"channel with most events, last {HABIT_DAYS} days"),
        Field("top_channel_share", NUMBER, f"share of events on `top_channel`, {HABIT_DAYS}d"),
        Field("distinct_channels_90d", NUMBER, "distinct channels used, last 90 days"),
        Field(
            "top_category",
            STRING,
            f"category with the highest affinity, last {HABIT_DAYS} days",
        ),
        Field(
            "top_category_affinity",
            NUMBER,
            "the top category's share of the member's weighted events (view 1, favorite 2, "
            "cart 3, purchase 5)",
        ),
        Field("top_brand", STRING, f"brand with the highest affinity, last {HABIT_DAYS} days"),
        Field("top_brand_affinity", NUMBER, "the top brand's share of weighted events"),
        Field(
            "price_band",
            NUMBER,
            "1 (cheapest fifth) .. 5 (dearest fifth): where the member's purchases sit in their "
            "categories' price distributions, last 365 days",
        ),
        Field("r_score", NUMBER, "recency quintile 1-5 among buyers of the last 365 days"),
        Field("f_score", NUMBER, "frequency (orders_365d) quintile 1-5 among buyers"),
        Field("m_score", NUMBER, "monetary (spend_365d) quintile 1-5 among buyers"),
        Field("rfm_score", NUMBER, "r_score + f_score + m_score (3-15; null: no purchase)"),
    ]
    # Filled by the build's `predictions` stage (memberwise.predict.stage); null in profiles
    # made without it, and when the build could not fit the model (build.json says why).
    fields += [
        Field(
            "clv_12m",
            NUMBER,
            "predicted profit of the next 12 months' repeat purchases, discounted "
            "(BG/NBD x Gamma-Gamma x the program's margin; 0: never bought)",
            "CNY",
        ),
        Field(
            "p_alive",
            NUMBER,
            "probability (0-1) the member is still an active buyer (BG/NBD; 1 without "
            "repeat purchases, as the model assumes)",
        ),
        Field(
            "churn_risk",
            NUMBER,
            "calibrated probability (0-1) of no purchase in the next "
            "`predictions.churn_horizon_days` days (LightGBM on profile fields)",
        ),
    ]
    return tuple(fields)


#: The fields the build's `predictions` stage fills in (null until it runs).
PREDICTED_FIELDS: tuple[str, ...] = ("clv_12m", "p_alive", "churn_risk")

#: Every profile field, in the order profiles list them.
FIELDS: tuple[Field, ...] = _catalog()
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
#: name -> type, what the rule checker needs.
FIELD_TYPES: Mapping[str, FieldType] = {f.name: f.type for f in FIELDS}

#: The detail lists a profile carries besides its fields (not usable in rules).
DETAILS: dict[str, str] = {
    "top_categories": f"up to {TOP_N} categories with their affinity (share of weighted events)",
    "top_brands": f"up to {TOP_N} brands with their affinity",
    "price_bands": "band 1-5 per category the member bought in, last 365 days",
    "channel_mix": f"share of events per channel, last {HABIT_DAYS} days",
}
