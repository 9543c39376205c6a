"""The demo platform generator: a deterministic stream of behaviour events plus its tables.

Members are generated in parts of :data:`MEMBERS_PER_PART`; part ``k`` draws everything from
``numpy.random.default_rng([seed, 2, k])`` and writes ``events/part-{k:05d}.parquet`` by itself,
so memory stays bounded, parts can run in worker processes, and the output is the same for a
seed whatever the number of workers. Inside a part everything is vectorized (NumPy draws, Arrow
``take`` from string dictionaries); Python loops only run per part, rhythm or festival.

The model, in one paragraph: each member (see :mod:`memberwise.demo.personas`) has sessions on
days drawn from their rhythm's day weights (weekends, Singles' Day, 12.12, 618) at hours drawn
from their hour profile; a session may start with a login and a search and views a few items,
mostly of one category; viewed items are carted, favourited or bought with the member's
propensities, and a session's purchases form one order. Members with staples (milk powder,
diapers, fresh food...) also re-buy them at about the item's ``rebuy_days``. Every purchase may
later be refunded, complained about or reviewed, at the merchant's (good or bad) rates. Rates
are calibrated once per run so the view/cart/favorite/purchase shares match Taobao
UserBehavior's and the event count matches ``members * events_per_member``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memberwise.demo.catalog import (
    DAY_US,
    PRICE_BANDS,
    TAXONOMY,
    BoolArray,
    Catalog,
    FloatArray,
    IntArray,
    build_catalog,
)
from memberwise.demo.personas import (
    AFFINITY,
    AFFINITY_CDF,
    CHANNEL_CDF,
    CHANNELS,
    HOUR_CDF,
    HOUR_PROFILE,
    PROVINCE_NAMES,
    Members,
    member_ids,
    member_table,
    persona_param,
    pick_rows,
    sample_members,
    session_tops,
)
from memberwise.events.schemas import EVENT_TYPES, INPUT_SCHEMA, MIN_TS, max_ts

CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")
#: Event types as indices into the contract's EVENT_TYPES.
VIEW, SEARCH, FAVORITE, CART, PURCHASE, REFUND, REVIEW, COMPLAINT, LOGIN, SERVICE = map(
    EVENT_TYPES.index,
    (
        "view",
        "search",
        "favorite",
        "cart",
        "purchase",
        "refund",
        "review",
        "complaint",
        "login",
        "service",
    ),
)

#: Taobao UserBehavior's behaviour counts (pv, cart, fav, buy): the funnel the demo matches.
TAOBAO_FUNNEL: dict[str, int] = {
    "view": 89_716_264,
    "cart": 5_530_446,
    "favorite": 2_888_258,
    "purchase": 2_015_839,
}
MEMBERS_PER_PART = 5_000
#: Members drawn (behaviour only) to calibrate rates: as many as the run has, within these
#: bounds (the event count's sampling error is ~0.6 % at 20,000 and ~0.2 % at 200,000).
CALIBRATION_MEMBERS = (20_000, 200_000)
#: Spend above which a member is a black-card candidate (100,000 CNY, in fen).
BIG_SPEND_FEN = 10_000_000

MEAN_VIEWS = 6.0  # views per session (geometric)
REPEAT_VIEW = 0.25  # chance a later view of a session returns to its first item
FOCUS = 0.85  # share of a session's views in the session's category
VIEW_GAP_S = 45.0  # mean seconds between views
P_LOGIN = 0.3
P_GENERAL_SERVICE = 0.004  # a session that contacts service about the account, not an order
REPLENISH_CART = 0.4  # a re-buy is carted first this often
MAX_STAPLES = 5
#: Share of purchases that are staple re-buys (the rest come from browsing sessions).
REBUY_SHARE = 0.35
DISCOUNTS: FloatArray = np.array([0.95, 0.9, 0.85, 0.8, 0.7])

#: (month, day, promo name, session weight, purchase conversion multiplier).
FESTIVALS: tuple[tuple[int, int, str, float, float], ...] = (
    (11, 11, "double11", 3.0, 2.6),
    (12, 12, "double12", 1.8, 1.5),
    (6, 18, "618", 2.2, 1.8),
)
#: Warm-up days before a festival (month, first day, last day, session weight): more browsing,
#: a little less buying (:data:`PRESALE_CONVERSION`; members wait for the day).
PRESALE: tuple[tuple[int, int, int, float], ...] = ((11, 1, 10, 1.25), (6, 1, 17, 1.15))
PRESALE_CONVERSION = 0.85
#: Session weight of a weekday and of a weekend day, per rhythm (regular, night owl, weekend).
WEEKDAY_WEIGHT = (1.0, 1.0, 0.55)
WEEKEND_WEIGHT = (1.15, 1.15, 2.6)

REFUND_REASONS = ("七天无理由退货", "质量问题", "尺码不合适", "发错货了", "商品破损", "和描述不符")
REVIEWS_GOOD = ("质量很好", "物流很快", "性价比高", "非常满意，会回购", "包装精美", "宝贝很好用")
REVIEWS_MIXED = ("还可以", "一般般", "物流太慢了", "价格有点贵", "包装有点简陋")
REVIEWS_BAD = ("和描述不符", "质量太差了", "用了两天就坏了", "客服不理人", "假货，别买")
COMPLAINTS = ("商家迟迟不发货", "客服态度很差", "疑似假货", "退款一直不处理", "虚假宣传")
SERVICE_ORDER = ("咨询发货时间", "修改收货地址", "申请开发票", "查询物流", "咨询退换货")
SERVICE_GENERAL = ("会员权益咨询", "积分怎么用", "优惠券无法使用", "修改手机号", "账号安全问题")
_TEXT_GROUPS = (
    REFUND_REASONS,
    REVIEWS_GOOD,
    REVIEWS_MIXED,
    REVIEWS_BAD,
    COMPLAINTS,
    SERVICE_ORDER,
    SERVICE_GENERAL,
)
TEXTS: tuple[str, ...] = tuple(t for group in _TEXT_GROUPS for t in group)
_TEXT_START = np.cumsum([0, *(len(g) for g in _TEXT_GROUPS)]).astype(np.int64)
(T_REFUND, T_GOOD, T_MIXED, T_BAD, T_COMPLAINT, T_SERVICE_ORDER, T_SERVICE_GENERAL) = range(7)
#: Review stars (1..5) by merchant quality: good merchants mostly 5, bad ones many 1s and 2s.
RATING_GOOD: FloatArray = np.array([0.03, 0.03, 0.07, 0.25, 0.62])
RATING_BAD: FloatArray = np.array([0.30, 0.20, 0.15, 0.15, 0.20])
#: One popular item of a good merchant "turns bad" this many days before the period's end
#: (a faulty batch): from then on its orders are complained about and refunded at these rates
#: and reviewed like a bad merchant's. Written to ``incidents.json`` so tests and demos know
#: what the feedback stage's rising-complaint test should find, and when.
TURNS_BAD_DAYS_BEFORE_END = 21
TURNED_BAD_COMPLAINT = 0.5
TURNED_BAD_SPEEDUP = 3.0
TURNED_BAD_REFUND = 0.30

VIEW_SOURCES = ("search", "recommend", "homepage", "shop", "live")
LOGIN_METHODS = ("password", "sms", "qr", "auto")
PAYMENTS = ("alipay", "wechat_pay", "huabei", "card")
PROMOS: tuple[str | None, ...] = (None, *(f[2] for f in FESTIVALS))
#: Every ``properties`` value events carry (as JSON text); events hold an index into it.
PROPERTIES: tuple[str, ...] = tuple(
    orjson.dumps(value).decode()
    for value in (
        *({"source": s} for s in VIEW_SOURCES),
        *({"method": m} for m in LOGIN_METHODS),
        *(
            {"payment": p} if promo is None else {"payment": p, "promo": promo}
            for promo in PROMOS
            for p in PAYMENTS
        ),
    )
)
_P_SOURCE, _P_LOGIN, _P_PAYMENT = 0, len(VIEW_SOURCES), len(VIEW_SOURCES) + len(LOGIN_METHODS)


@dataclass(frozen=True)
class Calendar:
    """The generated days (China dates ``start`` .. ``start + days - 1``) and their weights.

    ``session_cdf[r]`` is the running sum of rhythm ``r``'s day weights (length ``days + 1``),
    ``purchase_cdf[r]`` the same weighted by each day's purchase conversion; sessions are drawn
    from the first, and the second is what calibration needs.
    """

    start: date
    days: int
    start_us: int
    conversion: FloatArray
    promo: IntArray
    singles_day: IntArray
    session_cdf: FloatArray
    purchase_cdf: FloatArray

    @property
    def end_us(self) -> int:
        """The period's end (exclusive): the China midnight after the last day."""
        return self.start_us + self.days * DAY_US

    def weight(self, rhythm: IntArray, start: IntArray, end: IntArray) -> FloatArray:
        """Session weight of each member's active days ``start .. end - 1``."""
        return np.asarray(self.session_cdf[rhythm, end] - self.session_cdf[rhythm, start])

    def purchase_weight(self, rhythm: IntArray, start: IntArray, end: IntArray) -> FloatArray:
        """Conversion-weighted session weight of the same days."""
        return np.asarray(self.purchase_cdf[rhythm, end] - self.purchase_cdf[rhythm, start])

    def sample_days(
        self, rng: np.random.Generator, rhythm: IntArray, start: IntArray, end: IntArray
    ) -> IntArray:
        """A day in each ``start .. end - 1`` drawn by the rhythm's day weights."""
        day = np.empty(len(rhythm), dtype=np.int64)
        u = rng.random(len(rhythm))
        for r in range(self.session_cdf.shape[0]):
            sel = np.flatnonzero(rhythm == r)
            cdf = self.session_cdf[r]
            lo, hi = cdf[start[sel]], cdf[end[sel]]
            found = np.searchsorted(cdf, lo + u[sel] * (hi - lo), side="right") - 1
            day[sel] = np.clip(found, start[sel], end[sel] - 1)
        return day


def build_calendar(end: date, days: int) -> Calendar:
    """The ``days`` China dates before ``end`` with weekly rhythm and festival weights."""
    start = end - timedelta(days=days)
    start_us = int(datetime(start.year, start.month, start.day, tzinfo=CHINA).timestamp()) * 10**6
    weights = np.ones((3, days))
    conversion = np.ones(days)
    promo = np.zeros(days, dtype=np.int64)
    singles: list[int] = []
    for d in range(days):
        day = start + timedelta(days=d)
        weights[:, d] = WEEKEND_WEIGHT if day.weekday() >= 5 else WEEKDAY_WEIGHT
        for month, first, last, boost in PRESALE:
            if day.month == month and first <= day.day <= last:
                weights[:, d] *= boost
                conversion[d] = PRESALE_CONVERSION
        for f, (month, mday, _, boost, conv) in enumerate(FESTIVALS):
            if (day.month, day.day) == (month, mday):
                weights[:, d] *= boost
                conversion[d] = conv
                promo[d] = f + 1
        if (day.month, day.day) == (11, 11):
            singles.append(d)
    zero = np.zeros((3, 1))
    return Calendar(
        start=start,
        days=days,
        start_us=start_us,
        conversion=conversion,
        promo=promo,
        singles_day=np.array(singles, dtype=np.int64),
        session_cdf=np.concatenate([zero, np.cumsum(weights, axis=1)], axis=1),
        purchase_cdf=np.concatenate([zero, np.cumsum(weights * conversion, axis=1)], axis=1),
    )


@dataclass(frozen=True)
class Rates:
    """Global rates fitted by :func:`calibrate`: sessions per unit of member activity and day
    weight, and per-view chances of cart, favorite and purchase (before member multipliers)."""

    session: float
    cart: float
    favorite: float
    purchase: float
    staples: float


@dataclass(frozen=True)
class Context:
    """Everything a part needs; sent once to each worker process."""

    seed: int
    members: int
    members_per_part: int
    calendar: Calendar
    catalog: Catalog
    rates: Rates
    staple_cdf: FloatArray
    staple_leaves: IntArray
    events_dir: Path
    #: The item that turns bad (-1: none, the period is too short) and its first bad day.
    bad_item: int = -1
    bad_day: int = -1

    @property
    def parts(self) -> int:
        """How many part files the run writes."""
        return -(-self.members // self.members_per_part)


@dataclass(frozen=True)
class PartResult:
    """What a part reports back: counts, its members' rows and its big spenders."""

    part: int
    events: int
    by_type: list[int]
    members: pa.Table
    big_spenders: int
    gmv_fen: int


@dataclass(frozen=True)
class DemoSummary:
    """What a generation run made, for the CLI summary and for scripts."""

    out: str
    first_day: str
    last_day: str
    seed: int
    members: int
    items: int
    merchants: int
    categories: int
    parts: int
    events: int
    events_by_type: dict[str, int]
    big_spenders: int
    gmv_fen: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-ready values."""
        return dataclasses.asdict(self)


def _staple_matrix(catalog: Catalog) -> tuple[FloatArray, IntArray]:
    """Per persona, a CDF over consumable leaves: squared category affinity times leaf traffic
    (squared so staples follow a persona's core categories: parents re-buy baby goods)."""
    leaves = np.flatnonzero(catalog.leaf_rebuy > 0).astype(np.int64)
    leaf_weight = np.array([leaf.weight for top in TAXONOMY for leaf in top.leaves])[leaves]
    weights = AFFINITY[:, catalog.leaf_top[leaves]] ** 2 * leaf_weight
    cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    cdf[:, -1] = 1.0
    return cdf, leaves


def _staples(
    rng: np.random.Generator,
    ctx_catalog: Catalog,
    staple_cdf: FloatArray,
    staple_leaves: IntArray,
    m: Members,
    scale: float,
) -> tuple[IntArray, FloatArray, IntArray, IntArray]:
    """Re-buys of members' staples: (member, time in days, item, quantity) of each.

    A staple is re-bought every ``rebuy_days * quantity`` days (2 packs last twice as long; a
    member's own pace, with jitter) from a random point in its first cycle until the member's
    active window ends. ``scale`` multiplies the persona's mean number of staples.
    """
    n = len(m)
    mean = persona_param("staples", m.persona) * scale * np.sqrt(m.activity)
    count = np.minimum(rng.poisson(mean), MAX_STAPLES)
    owner = np.repeat(np.arange(n, dtype=np.int64), count)
    leaf = staple_leaves[pick_rows(rng, staple_cdf, m.persona[owner])]
    band = _bands(rng, m.price_quantile[owner])
    item = ctx_catalog.sample_item(rng, leaf, band)
    item = np.where(ctx_catalog.item_launch_day[item] >= 0, ctx_catalog.item_fallback[item], item)
    quantity = 1 + (rng.random(len(owner)) < 0.35) * rng.integers(1, 3, len(owner))
    cycle = ctx_catalog.leaf_rebuy[leaf] * quantity * np.exp(rng.normal(0, 0.15, len(owner)))
    start = m.start_day[owner].astype(np.float64)
    end = m.end_day[owner].astype(np.float64)
    if len(owner) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, np.zeros(0), empty, empty
    first = start + rng.random(len(owner)) * np.minimum(cycle, end - start)
    steps = int(np.ceil(((end - start) / cycle).max() * 1.5)) + 1
    gaps = cycle[:, None] * np.exp(rng.normal(0, 0.12, (len(owner), steps)))
    gaps[:, 0] = 0.0
    when = first[:, None] + np.cumsum(gaps, axis=1)
    keep = when < end[:, None]
    rows = np.nonzero(keep)[0]
    return owner[rows], when[keep], item[rows], quantity[rows].astype(np.int64)


def _bands(rng: np.random.Generator, quantile: FloatArray) -> IntArray:
    """A price band near each member's favoured quantile (members sometimes trade up/down)."""
    x = quantile + rng.normal(0, 0.15, len(quantile))
    return np.clip(np.floor(x * PRICE_BANDS), 0, PRICE_BANDS - 1).astype(np.int64)


def calibrate(
    catalog: Catalog,
    calendar: Calendar,
    staple_cdf: FloatArray,
    staple_leaves: IntArray,
    *,
    seed: int,
    events_per_member: float,
    sample: int = CALIBRATION_MEMBERS[0],
    rebuy_share: float = REBUY_SHARE,
) -> Rates:
    """Fit the global rates on a sample of members so that the expected event count is
    ``events_per_member`` a member, the view/cart/favorite/purchase shares are Taobao's, and
    staple re-buys are ``rebuy_share`` (default :data:`REBUY_SHARE`) of purchases.

    Expectations are sums over ``sample`` members (sessions, views, re-buys), so the only error
    is the sample's.
    """
    rng = np.random.default_rng([seed, 1])
    m = sample_members(rng, sample, days=calendar.days, start_us=calendar.start_us)
    sessions = m.activity * calendar.weight(m.rhythm, m.start_day, m.end_day)
    buying = m.activity * calendar.purchase_weight(m.rhythm, m.start_day, m.end_day)
    eligible_views = MEAN_VIEWS - REPEAT_VIEW * (MEAN_VIEWS - 1)
    view = TAOBAO_FUNNEL["view"]
    r_cart, r_fav, r_buy = (TAOBAO_FUNNEL[k] / view for k in ("cart", "favorite", "purchase"))
    after = (
        float(np.average(persona_param("review", m.persona), weights=sessions * m.conversion))
        + float(catalog.merchant_refund.mean())
        + 0.03
        + 3 * float(catalog.merchant_complaint.mean())
    )
    per_view = 1 + r_cart + r_fav + r_buy * (1 + after)
    extras = P_LOGIN + P_GENERAL_SERVICE + persona_param("search", m.persona)
    # With re-buys a fixed share of purchases, views = scale * MEAN_VIEWS * sum(sessions) / (1 -
    # REBUY_SHARE * r_buy), and events = views * per_view + scale * sum(sessions * extras).
    session_views = MEAN_VIEWS * sessions.sum() / (1 - rebuy_share * r_buy)
    target = events_per_member * len(m)
    scale = target / (session_views * per_view + float((sessions * extras).sum()))
    wanted = rebuy_share * r_buy * scale * session_views
    state = rng.bit_generator.state
    unit = len(_staples(rng, catalog, staple_cdf, staple_leaves, m, 1.0)[0])
    staples = wanted / max(unit, 1)
    rng.bit_generator.state = state
    rebuys = len(_staples(rng, catalog, staple_cdf, staple_leaves, m, staples)[0])
    views = scale * MEAN_VIEWS * sessions.sum() + rebuys
    session_buys = max(r_buy * views - rebuys, 0.1 * r_buy * views)
    session_views = scale * MEAN_VIEWS
    return Rates(
        session=float(scale),
        cart=float(
            (r_cart * views - REPLENISH_CART * rebuys) / (session_views * (sessions * m.cart).sum())
        ),
        favorite=float(r_fav * views / (session_views * (sessions * m.favorite).sum())),
        purchase=float(session_buys / (scale * eligible_views * (buying * m.conversion).sum())),
        staples=float(staples),
    )


class _Events:
    """The columns of one part's events, gathered block by block and joined at the end.

    Index columns use -1 (0 for quantity and rating) for null; strings are indices into the
    catalog's or this module's dictionaries.
    """

    _INDEX = ("item", "price", "order", "channel", "query", "text", "props")

    def __init__(self) -> None:
        self.blocks: list[dict[str, IntArray]] = []

    def add(self, kind: int, member: IntArray, ts: IntArray, **columns: IntArray) -> None:
        """Append ``len(member)`` events of type ``kind``; missing columns are null."""
        n = len(member)
        block = {"type": np.full(n, kind, dtype=np.int64), "member": member, "ts": ts}
        for name in (*self._INDEX, "quantity", "rating"):
            value = columns.get(name)
            block[name] = (
                np.full(n, -1 if name in self._INDEX else 0, dtype=np.int64)
                if value is None
                else value.astype(np.int64)
            )
        self.blocks.append(block)

    def columns(self) -> dict[str, IntArray]:
        """All blocks concatenated, column by column."""
        return {k: np.concatenate([b[k] for b in self.blocks]) for k in self.blocks[0]}


def _time_of_day(
    rng: np.random.Generator, rhythm: IntArray, day: IntArray, cal: Calendar
) -> IntArray:
    """Microseconds into the China day for session starts, by hour profile; on Singles' Day a
    fifth of sessions start in the midnight hour (the sale opens at 00:00)."""
    hour = pick_rows(rng, HOUR_CDF, HOUR_PROFILE[rhythm])
    if len(cal.singles_day):
        rush = np.isin(day, cal.singles_day) & (rng.random(len(day)) < 0.2)
        hour = np.where(rush, 0, hour)
    return hour * 3_600_000_000 + rng.integers(0, 3_600_000_000, len(hour))


def _prices(
    rng: np.random.Generator, ctx: Context, item: IntArray, day: IntArray
) -> tuple[IntArray, IntArray]:
    """Paid unit prices (list price, often discounted, mostly on festival days) and the
    properties index of each purchase (payment method and promotion)."""
    promo = ctx.calendar.promo[day]
    discounted = rng.random(len(item)) < np.where(promo > 0, 0.85, 0.3)
    factor = np.where(discounted, DISCOUNTS[rng.integers(0, len(DISCOUNTS), len(item))], 1.0)
    price = np.round(ctx.catalog.item_price[item] * factor).astype(np.int64)
    props = _P_PAYMENT + promo * len(PAYMENTS) + rng.integers(0, len(PAYMENTS), len(item))
    return price, props


def _text(rng: np.random.Generator, group: int | IntArray, n: int) -> IntArray:
    """A random text of the given group(s) of :data:`TEXTS`."""
    sizes = np.diff(_TEXT_START)
    return np.asarray(
        _TEXT_START[group] + rng.integers(0, 1 << 30, n) % sizes[group], dtype=np.int64
    )


@dataclass(frozen=True)
class _Sessions:
    """One part's sessions: who, which day, when it starts, on which channel, about which
    category, how many views (the views of session ``i`` are ``first[i]:first[i] + views[i]``)
    and whether it started with a search."""

    member: IntArray
    day: IntArray
    start: IntArray
    channel: IntArray
    top: IntArray
    views: IntArray
    first: IntArray
    searched: BoolArray


@dataclass(frozen=True)
class _Views:
    """One part's session views (re-buy visits are not here): session, item, time."""

    session: IntArray
    member: IntArray
    day: IntArray
    ts: IntArray
    item: IntArray
    leaf: IntArray
    repeat: BoolArray
    channel: IntArray


@dataclass(frozen=True)
class _Lines:
    """Order lines: one per purchase event; ``order`` numbers orders within the part."""

    member: IntArray
    ts: IntArray
    item: IntArray
    day: IntArray
    quantity: IntArray
    order: IntArray
    channel: IntArray

    @staticmethod
    def concat(first: _Lines, second: _Lines) -> _Lines:
        """Both sets of lines; ``second``'s orders are renumbered after ``first``'s."""
        offset = int(first.order.max()) + 1 if len(first.order) else 0
        return _Lines(
            *(
                np.concatenate([a, b + offset if f.name == "order" else b])
                for f, a, b in zip(
                    dataclasses.fields(_Lines),
                    dataclasses.astuple(first),
                    dataclasses.astuple(second),
                    strict=True,
                )
            )
        )


def generate_part(ctx: Context, k: int) -> tuple[pa.Table, PartResult]:
    """Generate part ``k``: its members' events (as an Arrow table in ``INPUT_SCHEMA``, sorted
    by time) and its members' table rows. Deterministic in ``(ctx.seed, k)``."""
    rng = np.random.default_rng([ctx.seed, 2, k])
    first = k * ctx.members_per_part
    n = min(ctx.members_per_part, ctx.members - first)
    m = sample_members(rng, n, days=ctx.calendar.days, start_us=ctx.calendar.start_us)
    ev = _Events()
    sessions = _sessions(rng, ctx, m)
    views = _views(rng, ctx, m, sessions, ev)
    _session_extras(rng, ctx, sessions, views, ev)
    lines = _Lines.concat(_funnel(rng, ctx, m, sessions, views, ev), _rebuys(rng, ctx, m, ev))
    price, props = _prices(rng, ctx, lines.item, lines.day)
    ev.add(
        PURCHASE,
        lines.member,
        lines.ts,
        item=lines.item,
        price=price,
        quantity=lines.quantity,
        order=lines.order,
        channel=lines.channel,
        props=props,
    )
    _after_sales(rng, ctx, m, lines, price, ev)
    return _finish(ctx, k, first, m, ev, rng)


def _sessions(rng: np.random.Generator, ctx: Context, m: Members) -> _Sessions:
    """How many sessions each member has (Poisson in activity times the days' weights), on
    which days, at which hours, on which channel and about which category."""
    cal = ctx.calendar
    expected = ctx.rates.session * m.activity * cal.weight(m.rhythm, m.start_day, m.end_day)
    member = np.repeat(np.arange(len(m), dtype=np.int64), rng.poisson(expected))
    rhythm = m.rhythm[member]
    day = cal.sample_days(rng, rhythm, m.start_day[member], m.end_day[member])
    start = cal.start_us + day * DAY_US + _time_of_day(rng, rhythm, day, cal)
    persona = m.persona[member]
    # Members mostly use their own channel, sometimes another their persona likes.
    usual = rng.random(len(member)) < 0.75
    channel = np.where(usual, m.channel[member], pick_rows(rng, CHANNEL_CDF, persona))
    top = session_tops(rng, m, member)
    views = rng.geometric(1.0 / MEAN_VIEWS, len(member)).astype(np.int64)
    searched = rng.random(len(member)) < persona_param("search", persona)
    return _Sessions(
        member=member,
        day=day,
        start=start,
        channel=channel,
        top=top,
        views=views,
        first=np.cumsum(views) - views,
        searched=searched,
    )


def _views(rng: np.random.Generator, ctx: Context, m: Members, s: _Sessions, ev: _Events) -> _Views:
    """The sessions' views: items of the session's category (mostly) in the member's price
    band, sometimes going back to the first item; a view every ~45 s."""
    cat = ctx.catalog
    session = np.repeat(np.arange(len(s.member), dtype=np.int64), s.views)
    first = s.first[session]
    member = s.member[session]
    day = s.day[session]
    position = np.arange(len(session)) - first
    focused = rng.random(len(session)) < FOCUS
    top = np.where(focused, s.top[session], pick_rows(rng, AFFINITY_CDF, m.persona[member]))
    leaf = cat.sample_leaf(rng, top)
    item = cat.sample_item(rng, leaf, _bands(rng, m.price_quantile[member]))
    item = cat.available(item, day)
    repeat = (position > 0) & (rng.random(len(session)) < REPEAT_VIEW)
    item = np.where(repeat, item[first], item)
    leaf = np.where(repeat, leaf[first], leaf)
    gap = (rng.exponential(VIEW_GAP_S, len(session)) * 1e6).astype(np.int64) + 1_000_000
    gap[s.first] = 0
    elapsed = np.cumsum(gap)
    ts = s.start[session] + elapsed - elapsed[first]
    channel = s.channel[session]
    # A session that starts with a search lands its first view from the results.
    source = rng.integers(1, len(VIEW_SOURCES), len(session))
    source = np.where(s.searched[session] & (position == 0), 0, source)
    ev.add(
        VIEW,
        member,
        ts,
        item=item,
        price=cat.item_price[item],
        channel=channel,
        props=_P_SOURCE + source,
    )
    return _Views(
        session=session,
        member=member,
        day=day,
        ts=ts,
        item=item,
        leaf=leaf,
        repeat=repeat,
        channel=channel,
    )


def _session_extras(
    rng: np.random.Generator, ctx: Context, s: _Sessions, v: _Views, ev: _Events
) -> None:
    """Logins and searches just before sessions start (a search names the first viewed leaf),
    and the odd service question about the account."""
    cat = ctx.catalog
    login = np.flatnonzero(rng.random(len(s.member)) < P_LOGIN)
    method = rng.integers(0, len(LOGIN_METHODS), len(login))
    ev.add(
        LOGIN,
        s.member[login],
        s.start[login] - 10_000_000,
        channel=s.channel[login],
        props=_P_LOGIN + method,
    )
    search = np.flatnonzero(s.searched)
    leaf = v.leaf[s.first[search]]
    phrases = cat.query_start[leaf + 1] - cat.query_start[leaf]
    query = cat.query_start[leaf] + rng.integers(0, 1 << 30, len(search)) % phrases
    ev.add(
        SEARCH,
        s.member[search],
        s.start[search] - 5_000_000,
        channel=s.channel[search],
        query=query,
    )
    asks = np.flatnonzero(rng.random(len(s.member)) < P_GENERAL_SERVICE)
    ev.add(
        SERVICE,
        s.member[asks],
        s.start[asks] - 60_000_000,
        channel=s.channel[asks],
        text=_text(rng, T_SERVICE_GENERAL, len(asks)),
    )


def _funnel(
    rng: np.random.Generator, ctx: Context, m: Members, s: _Sessions, v: _Views, ev: _Events
) -> _Lines:
    """Carts and favorites seconds after views; purchases (never of a repeat view) checked
    out together as one order a few minutes after the session's last view."""
    cat, rates = ctx.catalog, ctx.rates
    n = len(v.session)
    cart = np.flatnonzero(rng.random(n) < rates.cart * m.cart[v.member])
    ev.add(
        CART,
        v.member[cart],
        v.ts[cart] + rng.integers(3_000_000, 90_000_000, len(cart)),
        item=v.item[cart],
        price=cat.item_price[v.item[cart]],
        quantity=np.ones(len(cart), dtype=np.int64),
        channel=v.channel[cart],
    )
    fav = np.flatnonzero(rng.random(n) < rates.favorite * m.favorite[v.member])
    ev.add(
        FAVORITE,
        v.member[fav],
        v.ts[fav] + rng.integers(2_000_000, 30_000_000, len(fav)),
        item=v.item[fav],
        price=cat.item_price[v.item[fav]],
        channel=v.channel[fav],
    )
    chance = rates.purchase * m.conversion[v.member] * ctx.calendar.conversion[v.day]
    buy = np.flatnonzero(~v.repeat & (rng.random(n) < np.minimum(chance, 0.9)))
    session = v.session[buy]
    new_order = np.ones(len(buy), dtype=np.bool_)
    new_order[1:] = session[1:] != session[:-1]
    order = np.cumsum(new_order) - 1
    last_view = v.ts[s.first + s.views - 1]
    checkout = last_view[session[new_order]]
    checkout = checkout + rng.integers(30_000_000, 600_000_000, len(checkout))
    item = v.item[buy]
    consumable = cat.leaf_rebuy[cat.item_leaf[item]] > 0
    several = rng.random(len(buy)) < np.where(consumable, 0.35, 0.05)
    quantity = 1 + several * rng.geometric(0.5, len(buy))
    return _Lines(
        member=v.member[buy],
        ts=checkout[order],
        item=item,
        day=v.day[buy],
        quantity=quantity.astype(np.int64),
        order=order.astype(np.int64),
        channel=v.channel[buy],
    )


def _rebuys(rng: np.random.Generator, ctx: Context, m: Members, ev: _Events) -> _Lines:
    """Staple re-buys, each a short visit of its own: a view, maybe a cart, the purchase."""
    cat, cal = ctx.catalog, ctx.calendar
    member, when, item, quantity = _staples(
        rng, cat, ctx.staple_cdf, ctx.staple_leaves, m, ctx.rates.staples
    )
    day = np.floor(when).astype(np.int64)
    ts = cal.start_us + day * DAY_US + _time_of_day(rng, m.rhythm[member], day, cal)
    channel = m.channel[member]
    shop = np.full(len(member), _P_SOURCE + VIEW_SOURCES.index("shop"))
    ev.add(VIEW, member, ts, item=item, price=cat.item_price[item], channel=channel, props=shop)
    cart = np.flatnonzero(rng.random(len(member)) < REPLENISH_CART)
    ev.add(
        CART,
        member[cart],
        ts[cart] + 20_000_000,
        item=item[cart],
        price=cat.item_price[item[cart]],
        quantity=quantity[cart],
        channel=channel[cart],
    )
    return _Lines(
        member=member,
        ts=ts + rng.integers(60_000_000, 600_000_000, len(member)),
        item=item,
        day=day,
        quantity=quantity,
        order=np.arange(len(member), dtype=np.int64),
        channel=channel,
    )


def _after_sales(
    rng: np.random.Generator,
    ctx: Context,
    m: Members,
    lines: _Lines,
    price: IntArray,
    ev: _Events,
) -> None:
    """Refunds, complaints, service contacts and reviews that follow purchases by days, at the
    merchant's rates (bad merchants: many more refunds, complaints and low stars)."""
    merchant = ctx.catalog.item_merchant[lines.item]
    n = len(merchant)

    # The turned-bad item's orders after its day (no extra draws: the rest stay as they were);
    # its faults show at once, so its after-sales events come TURNED_BAD_SPEEDUP times sooner.
    worse = (lines.item == ctx.bad_item) & (lines.day >= ctx.bad_day)

    def later(low_days: float, mean_days: float, rows: IntArray) -> IntArray:
        delay = (low_days + rng.exponential(mean_days, len(rows))) * DAY_US
        delay = np.where(worse[rows], delay / TURNED_BAD_SPEEDUP, delay)
        return lines.ts[rows] + delay.astype(np.int64)

    def order_event(kind: int, rows: IntArray, low: float, mean: float, **cols: IntArray) -> None:
        ev.add(
            kind,
            lines.member[rows],
            later(low, mean, rows),
            item=lines.item[rows],
            order=lines.order[rows],
            channel=lines.channel[rows],
            **cols,
        )

    refund_rate = np.where(worse, TURNED_BAD_REFUND, ctx.catalog.merchant_refund[merchant])
    refunded = rng.random(n) < refund_rate
    rows = np.flatnonzero(refunded)
    reason = _text(rng, T_REFUND, len(rows))
    order_event(REFUND, rows, 0.5, 3.0, price=price[rows], quantity=lines.quantity[rows],
                text=reason)  # fmt: skip
    complaint = np.where(worse, TURNED_BAD_COMPLAINT, ctx.catalog.merchant_complaint[merchant])
    rows = np.flatnonzero(rng.random(n) < complaint)
    order_event(COMPLAINT, rows, 1.0, 4.0, text=_text(rng, T_COMPLAINT, len(rows)))
    rows = np.flatnonzero(rng.random(n) < 0.03 + 2 * complaint)
    order_event(SERVICE, rows, 0.1, 1.5, text=_text(rng, T_SERVICE_ORDER, len(rows)))
    # Reviews: fewer after a refund; stars follow the merchant's quality, text the stars.
    chance = persona_param("review", m.persona[lines.member]) * np.where(refunded, 0.5, 1.0)
    rows = np.flatnonzero(rng.random(n) < chance)
    bad = ctx.catalog.merchant_bad[merchant[rows]] | worse[rows]
    cdf = np.cumsum(np.where(bad[:, None], RATING_BAD, RATING_GOOD), axis=1)
    stars = 1 + (rng.random(len(rows))[:, None] >= cdf[:, :4]).sum(axis=1)
    group = np.where(stars >= 4, T_GOOD, np.where(stars == 3, T_MIXED, T_BAD))
    order_event(REVIEW, rows, 2.0, 4.0, rating=stars, text=_text(rng, group, len(rows)))


def _take(values: pa.Array, index: IntArray) -> pa.Array:
    """``values[index]`` as Arrow, null where ``index`` is negative."""
    missing = index < 0
    if missing.any():
        return values.take(pa.array(np.where(missing, 0, index), mask=missing))
    return values.take(pa.array(index))


def _finish(
    ctx: Context, k: int, first: int, m: Members, ev: _Events, rng: np.random.Generator
) -> tuple[pa.Table, PartResult]:
    """Drop events outside the period or the member's active window, sort by time, and turn
    the index columns into the Arrow table of the contract."""
    cal, cat = ctx.calendar, ctx.catalog
    cols = ev.columns()
    member_end = cal.start_us + m.end_day * DAY_US
    ts = cols["ts"]
    keep = (ts >= cal.start_us) & (ts < np.minimum(cal.end_us, member_end[cols["member"]]))
    order = np.flatnonzero(keep)
    order = order[np.argsort(ts[order], kind="stable")]
    c = {name: col[order] for name, col in cols.items()}
    n = len(order)

    item = c["item"]
    has_item = item >= 0
    safe_item = np.where(has_item, item, 0)

    def via_item(values: IntArray) -> IntArray:
        return np.where(has_item, values[safe_item], -1)

    price, quantity, rating = c["price"], c["quantity"], c["rating"]
    columns = [
        pc.binary_join_element_wise(f"e{k}", pc.cast(pa.array(np.arange(n)), pa.string()), "-"),
        member_ids(first, len(m)).take(pa.array(c["member"])),
        pa.array(EVENT_TYPES).take(pa.array(c["type"])),
        pa.array(c["ts"]).cast(pa.timestamp("us", tz="UTC")),
        _take(cat.item_id_array, item),
        _take(pa.array(cat.leaf_ids), via_item(cat.item_leaf)),
        _take(pa.array(cat.brand_names), via_item(cat.item_brand)),
        _take(pa.array(cat.merchant_ids), via_item(cat.item_merchant)),
        pa.array(price, mask=price < 0),
        pa.array(quantity.astype(np.int32), mask=quantity <= 0),
        pc.binary_join_element_wise(
            f"o{k}", pc.cast(pa.array(c["order"], mask=c["order"] < 0), pa.string()), "-"
        ),
        _take(pa.array(CHANNELS), c["channel"]),
        _take(cat.query_array, c["query"]),
        pa.array(rating.astype(np.int32), mask=rating <= 0),
        _take(pa.array(TEXTS), c["text"]),
        pa.array(PROVINCE_NAMES).take(pa.array(m.region[c["member"]])),
        _take(pa.array(PROPERTIES), c["props"]),
    ]
    table = pa.Table.from_arrays(columns, schema=INPUT_SCHEMA)

    kinds = c["type"]
    buys = kinds == PURCHASE
    paid = price[buys] * quantity[buys]
    spend = np.bincount(c["member"][buys], weights=paid, minlength=len(m))
    members = member_table(rng, m, first=first, period_year=cal.start.year)
    result = PartResult(
        part=k,
        events=n,
        by_type=np.bincount(kinds, minlength=len(EVENT_TYPES)).tolist(),
        members=members,
        big_spenders=int((spend > BIG_SPEND_FEN).sum()),
        gmv_fen=int(paid.sum()),
    )
    return table, result


# --- files ----------------------------------------------------------------------------------


def _write_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to a temporary name beside ``path``, fsync, then rename: a crash never
    leaves a partial file under the final name."""
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd", compression_level=1)
    _fsync_rename(tmp, path)


def _fsync_rename(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def part_path(events_dir: Path, k: int) -> Path:
    """File name of part ``k``."""
    return events_dir / f"part-{k:05d}.parquet"


_CONTEXT: Context | None = None


def _init_worker(ctx: Context) -> None:
    global _CONTEXT
    _CONTEXT = ctx


def _run_part(k: int) -> PartResult:
    """Worker entry point: generate part ``k`` and write its file."""
    assert _CONTEXT is not None, "worker not initialised"
    return _generate_and_write(_CONTEXT, k)


def _generate_and_write(ctx: Context, k: int) -> PartResult:
    table, result = generate_part(ctx, k)
    _write_atomic(table, part_path(ctx.events_dir, k))
    return result


def item_count(members: int) -> int:
    """Catalog size for a platform of ``members``: one item per two members, 2,000 .. 200,000."""
    return min(max(members // 2, 2_000), 200_000)


def turned_bad_item(
    catalog: Catalog,
    calendar: Calendar,
    staple_cdf: FloatArray,
    staple_leaves: IntArray,
    *,
    seed: int,
    staples: float,
) -> int:
    """The item that turns bad: the staple re-bought most by a sample of members (from a
    random stream of its own, so the rest of a seed's output does not change) whose merchant
    is good -- many orders a week, so a faulty batch shows within days."""
    rng = np.random.default_rng([seed, 3])
    m = sample_members(rng, 5_000, days=calendar.days, start_us=calendar.start_us)
    _, _, items, _ = _staples(rng, catalog, staple_cdf, staple_leaves, m, staples)
    counts = np.bincount(items, minlength=catalog.n_items)
    counts[catalog.merchant_bad[catalog.item_merchant]] = 0
    return int(np.argmax(counts)) if counts.any() else -1


def build_context(
    out: Path,
    *,
    members: int,
    days: int,
    seed: int,
    end: date,
    events_per_member: float,
    members_per_part: int = MEMBERS_PER_PART,
    rebuy_share: float = REBUY_SHARE,
) -> Context:
    """Catalog, calendar and calibrated rates for a run (everything but the events)."""
    calendar = build_calendar(end, days)
    catalog = build_catalog(
        seed, n_items=item_count(members), start_us=calendar.start_us, days=days
    )
    staple_cdf, staple_leaves = _staple_matrix(catalog)
    low, high = CALIBRATION_MEMBERS
    rates = calibrate(
        catalog,
        calendar,
        staple_cdf,
        staple_leaves,
        seed=seed,
        events_per_member=events_per_member,
        sample=min(max(members, low), high),
        rebuy_share=rebuy_share,
    )
    bad_day = days - TURNS_BAD_DAYS_BEFORE_END
    return Context(
        seed=seed,
        members=members,
        members_per_part=members_per_part,
        calendar=calendar,
        catalog=catalog,
        rates=rates,
        staple_cdf=staple_cdf,
        staple_leaves=staple_leaves,
        events_dir=out / "events",
        bad_item=turned_bad_item(
            catalog, calendar, staple_cdf, staple_leaves, seed=seed, staples=rates.staples
        )
        if bad_day >= 14
        else -1,
        bad_day=bad_day if bad_day >= 14 else -1,
    )


def _results(ctx: Context, workers: int) -> Iterator[PartResult]:
    """Part results in part order, from worker processes when there is more than one."""
    if workers <= 1 or ctx.parts == 1:
        for k in range(ctx.parts):
            yield _generate_and_write(ctx, k)
        return
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(ctx,)
    ) as pool:
        yield from pool.map(_run_part, range(ctx.parts))


def generate_platform(
    out: Path,
    *,
    members: int = 20_000,
    days: int = 120,
    seed: int = 7,
    end: date | None = None,
    events_per_member: float = 100.0,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    members_per_part: int = MEMBERS_PER_PART,
    rebuy_share: float = REBUY_SHARE,
) -> DemoSummary:
    """Generate the demo platform into ``out`` and say what was made.

    Writes ``out/events/part-NNNNN.parquet`` (one per :data:`MEMBERS_PER_PART` members, schema
    ``INPUT_SCHEMA``, sorted by time) and ``members``, ``items``, ``categories`` and
    ``merchants`` Parquet tables; every file lands atomically, and part files of an earlier
    run in ``out`` are removed first. The period is the ``days`` China dates before ``end``
    (default: today's UTC date), i.e. ``end`` itself is not generated. The output depends only
    on the arguments other than ``workers`` (default: up to 2 processes) and ``progress``
    (called with parts done and parts in all). ``rebuy_share`` is the share of purchases that
    are staple re-buys on each member's own cycle (0.35 by default; 0.8 makes a repeat-heavy
    grocery-like shop).

    Raises ValueError when an argument is out of range or ``end`` would stamp events later
    than the event contract accepts.
    """
    began = time.perf_counter()
    end = end or datetime.now(UTC).date()
    if members < 1 or days < 1 or events_per_member <= 0 or members_per_part < 1:
        raise ValueError("members, days, events_per_member and members_per_part must be positive")
    if not 0.0 <= rebuy_share < 1.0:
        raise ValueError("rebuy_share must be at least 0 and below 1")
    last = datetime(end.year, end.month, end.day, tzinfo=CHINA)
    if last > max_ts():
        raise ValueError(f"end {end} is in the future: events would be rejected by ingest")
    if last - timedelta(days=days) < MIN_TS:
        raise ValueError(f"the period would start before {MIN_TS:%Y-%m-%d}, the earliest event")
    ctx = build_context(
        out,
        members=members,
        days=days,
        seed=seed,
        end=end,
        events_per_member=events_per_member,
        members_per_part=members_per_part,
        rebuy_share=rebuy_share,
    )
    ctx.events_dir.mkdir(parents=True, exist_ok=True)
    for stale in (*ctx.events_dir.glob("part-*.parquet"), *ctx.events_dir.glob(".part-*.tmp")):
        stale.unlink()
    for name, table in ctx.catalog.tables().items():
        _write_atomic(table, out / f"{name}.parquet")
    _write_incidents(ctx, out / "incidents.json")

    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    by_type = [0] * len(EVENT_TYPES)
    events = big = gmv = 0
    members_tmp = out / ".members.parquet.tmp"
    with pq.ParquetWriter(members_tmp, _members_schema(), compression="zstd") as writer:
        if progress is not None:
            progress(0, ctx.parts)
        for done, result in enumerate(_results(ctx, workers), start=1):
            writer.write_table(result.members)
            events += result.events
            by_type = [a + b for a, b in zip(by_type, result.by_type, strict=True)]
            big += result.big_spenders
            gmv += result.gmv_fen
            if progress is not None:
                progress(done, ctx.parts)
    _fsync_rename(members_tmp, out / "members.parquet")
    return DemoSummary(
        out=str(out),
        first_day=ctx.calendar.start.isoformat(),
        last_day=(end - timedelta(days=1)).isoformat(),
        seed=seed,
        members=members,
        items=ctx.catalog.n_items,
        merchants=len(ctx.catalog.merchant_ids),
        categories=len(ctx.catalog.top_ids) + len(ctx.catalog.leaf_ids),
        parts=ctx.parts,
        events=events,
        events_by_type=dict(zip(EVENT_TYPES, by_type, strict=True)),
        big_spenders=big,
        gmv_fen=gmv,
        seconds=round(time.perf_counter() - began, 3),
    )


def _write_incidents(ctx: Context, path: Path) -> None:
    """``incidents.json``: what the generator made go wrong on purpose (the item turned bad,
    its merchant and first China date; the bad merchants), for tests and demos to check."""
    cat = ctx.catalog
    incidents: dict[str, Any] = {
        "bad_merchants": [
            m for m, bad in zip(cat.merchant_ids, cat.merchant_bad, strict=True) if bad
        ],
        "turned_bad": None,
    }
    if ctx.bad_item >= 0:
        incidents["turned_bad"] = {
            "item_id": cat.item_id_array[ctx.bad_item].as_py(),
            "merchant_id": cat.merchant_ids[int(cat.item_merchant[ctx.bad_item])],
            "date": (ctx.calendar.start + timedelta(days=ctx.bad_day)).isoformat(),
            "complaint_rate": TURNED_BAD_COMPLAINT,
        }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(orjson.dumps(incidents, option=orjson.OPT_INDENT_2))
    _fsync_rename(tmp, path)


def _members_schema() -> pa.Schema:
    """Schema of ``members.parquet`` (taken from a one-member table so it cannot drift)."""
    rng = np.random.default_rng(0)
    one = sample_members(rng, 1, days=2, start_us=0)
    schema: pa.Schema = member_table(rng, one, first=0, period_year=2024).schema
    return schema
