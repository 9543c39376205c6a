"""Interactions: the behaviour events the recommender learns from, as integer-indexed arrays.

Everything downstream (candidate sources, ranker, rules, evaluation) works on one
:class:`Interactions` value: members and items numbered from 0, one row per item event with its
event-type weight, its time and its *group* (a purchase basket or a browsing session). Two ways
in: :func:`from_events` reads Arrow tables with the event contract of
:mod:`memberwise.events.schemas`, :func:`from_baskets` reads ordered baskets without timestamps
(Ta-Feng), where time is counted in baskets instead of days.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

IntArray = npt.NDArray[np.int64]
Int32Array = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
StrArray = npt.NDArray[np.str_]

#: How much one event of each type says about a member's taste (purchases most). Events not
#: listed (search, login, service, complaint) carry no item preference; refunds are negative
#: evidence and handled by the business rules instead.
EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "favorite": 3.0,
    "cart": 4.0,
    "review": 2.0,
    "purchase": 8.0,
}
KINDS: tuple[str, ...] = tuple(EVENT_WEIGHTS)
PURCHASE = KINDS.index("purchase")
DAY_US = 86_400_000_000

TimeUnit = Literal["day", "basket"]


@dataclass
class Interactions:
    """Item events of members, integer-indexed, sorted by member then time.

    ``ts`` is in days since the Unix epoch (``unit == "day"``) or in the member's own basket
    ordinal (``unit == "basket"``, 0 = first basket); ``now`` is each member's reference time in
    the same unit (the end of the period, or the member's basket count). ``group`` numbers
    purchase baskets (an order, or a member's purchases of one day without ``order_id``) and
    browsing sessions (item events less than ``session_gap`` apart) globally.
    """

    member_ids: StrArray
    item_ids: StrArray
    member: Int32Array
    item: Int32Array
    kind: npt.NDArray[np.int8]
    ts: FloatArray
    group: IntArray
    now: FloatArray
    unit: TimeUnit = "day"
    item_category: Int32Array = field(default_factory=lambda: np.zeros(0, np.int32))
    category_ids: StrArray = field(default_factory=lambda: np.zeros(0, np.str_))
    category_names: StrArray = field(default_factory=lambda: np.zeros(0, np.str_))
    item_price: FloatArray = field(default_factory=lambda: np.zeros(0))
    item_first_seen: FloatArray = field(default_factory=lambda: np.zeros(0))
    item_titles: StrArray = field(default_factory=lambda: np.zeros(0, np.str_))
    member_region: Int32Array = field(default_factory=lambda: np.zeros(0, np.int32))
    region_ids: StrArray = field(default_factory=lambda: np.zeros(0, np.str_))
    refund_member: Int32Array = field(default_factory=lambda: np.zeros(0, np.int32))
    refund_item: Int32Array = field(default_factory=lambda: np.zeros(0, np.int32))

    def __post_init__(self) -> None:
        n_items = len(self.item_ids)
        if len(self.item_category) != n_items:
            self.item_category = np.full(n_items, -1, np.int32)
        if len(self.item_price) != n_items:
            self.item_price = np.full(n_items, np.nan)
        if len(self.item_first_seen) != n_items:
            self.item_first_seen = _first_seen(self.item, self.ts, n_items, self.unit)
        if len(self.item_titles) != n_items:
            self.item_titles = self.item_ids.copy()
        if len(self.member_region) != len(self.member_ids):
            self.member_region = np.full(len(self.member_ids), -1, np.int32)

    # -- sizes and views -------------------------------------------------------------------
    @property
    def n_members(self) -> int:
        """How many members (rows of every member × item matrix)."""
        return len(self.member_ids)

    @property
    def n_items(self) -> int:
        """How many items (columns of every member × item matrix)."""
        return len(self.item_ids)

    @property
    def n_categories(self) -> int:
        """How many categories the items fall into (0 when unknown, as in Ta-Feng)."""
        return len(self.category_ids)

    @property
    def weight(self) -> npt.NDArray[np.float32]:
        """Each row's event-type weight (:data:`EVENT_WEIGHTS`)."""
        weights = np.array([EVENT_WEIGHTS[k] for k in KINDS], np.float32)
        return weights[self.kind]

    @property
    def is_purchase(self) -> BoolArray:
        """Which rows are purchases."""
        return np.asarray(self.kind == PURCHASE)

    def matrix(self, *, purchases_only: bool = False) -> sp.csr_matrix:
        """The member × item matrix of summed event weights (duplicates add up)."""
        rows = self.is_purchase if purchases_only else slice(None)
        return sp.csr_matrix(
            (self.weight[rows], (self.member[rows], self.item[rows])),
            shape=(self.n_members, self.n_items),
            dtype=np.float32,
        )

    def member_index(self, member_ids: Sequence[str] | StrArray) -> IntArray:
        """Row of each member id, -1 for members not seen in training."""
        ids = np.asarray(member_ids, dtype=np.str_)
        pos = np.searchsorted(self.member_ids, ids)
        pos = np.minimum(pos, max(self.n_members - 1, 0))
        found = (self.n_members > 0) & (self.member_ids[pos] == ids) if len(ids) else pos >= 0
        return np.where(found, pos, -1).astype(np.int64)

    def item_index(self, item_ids: Sequence[str] | StrArray) -> IntArray:
        """Column of each item id, -1 for items not seen in training."""
        ids = np.asarray(item_ids, dtype=np.str_)
        if self.n_items == 0 or len(ids) == 0:
            return np.full(len(ids), -1, np.int64)
        order = np.argsort(self.item_ids, kind="stable")
        sorted_ids = self.item_ids[order]
        pos = np.minimum(np.searchsorted(sorted_ids, ids), self.n_items - 1)
        return np.where(sorted_ids[pos] == ids, order[pos], -1).astype(np.int64)

    def member_starts(self) -> IntArray:
        """``starts[m]:starts[m + 1]`` are member ``m``'s rows (rows are sorted by member)."""
        return np.searchsorted(self.member, np.arange(self.n_members + 1)).astype(np.int64)

    def split_last(self, *, label_days: float = 7.0) -> tuple[Interactions, dict[int, IntArray]]:
        """A time split: history before the cut and, per member, the items bought after it.

        In days, the cut is ``label_days`` before the end of the period; in baskets, it is each
        member's last purchase basket (the Ta-Feng protocol, one step earlier). Members keep
        their row numbers, so the labels index the same members in both halves.
        """
        if self.unit == "basket":
            last = np.full(self.n_members, -1.0)
            np.maximum.at(last, self.member, np.where(self.is_purchase, self.ts, -1.0))
            cut = last[self.member]
            label_rows = self.is_purchase & (self.ts == cut)
            keep = self.ts < cut
            now = np.maximum(last, 0.0)
        else:
            end = float(self.now.max()) if self.n_members else 0.0
            cut_at = end - label_days
            label_rows = self.is_purchase & (self.ts >= cut_at)
            keep = self.ts < cut_at
            now = np.full(self.n_members, cut_at)
        labels = _labels(self.member[label_rows], self.item[label_rows])
        history = self.subset(keep, now=now)
        return history, labels

    def subset(self, rows: BoolArray, *, now: FloatArray | None = None) -> Interactions:
        """The same members, items and catalog with only the given event rows."""
        refunds = np.ones(len(self.refund_member), bool)
        return Interactions(
            member_ids=self.member_ids,
            item_ids=self.item_ids,
            member=self.member[rows],
            item=self.item[rows],
            kind=self.kind[rows],
            ts=self.ts[rows],
            group=self.group[rows],
            now=self.now if now is None else now,
            unit=self.unit,
            item_category=self.item_category,
            category_ids=self.category_ids,
            category_names=self.category_names,
            item_price=self.item_price,
            item_first_seen=_first_seen(self.item[rows], self.ts[rows], self.n_items, self.unit),
            item_titles=self.item_titles,
            member_region=self.member_region,
            region_ids=self.region_ids,
            refund_member=self.refund_member[refunds],
            refund_item=self.refund_item[refunds],
        )

    # -- persistence (npz + JSON, no pickle) -----------------------------------------------
    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """Every array, for :func:`numpy.savez` (strings as fixed-width unicode, no pickle)."""
        return {
            name: np.asarray(getattr(self, name))
            for name in (
                "member_ids",
                "item_ids",
                "member",
                "item",
                "kind",
                "ts",
                "group",
                "now",
                "item_category",
                "category_ids",
                "category_names",
                "item_price",
                "item_first_seen",
                "item_titles",
                "member_region",
                "region_ids",
                "refund_member",
                "refund_item",
            )
        }

    def save(self, path: Path) -> None:
        """Write the interactions to ``path`` (an ``.npz`` file)."""
        arrays: dict[str, Any] = {"unit": np.array(self.unit), **self.arrays()}
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> Interactions:
        """Read interactions written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as npz:
            values = {name: npz[name] for name in npz.files}
        unit = str(values.pop("unit"))
        if unit not in ("day", "basket"):
            raise ValueError(f"unknown time unit {unit!r} in {path}")
        return cls(unit="day" if unit == "day" else "basket", **values)


def sorted_unique(values: IntArray) -> IntArray:
    """The distinct values, sorted (a plain sort: faster than ``np.unique`` here)."""
    if len(values) == 0:
        return values
    s = np.sort(values)
    keep = np.ones(len(s), bool)
    keep[1:] = s[1:] != s[:-1]
    return np.asarray(s[keep])


def first_of_runs(sorted_values: IntArray) -> IntArray:
    """Index of the first element of each run of equal values in a sorted array."""
    if len(sorted_values) == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])


def distinct_pairs(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> IntArray:
    """Indices of one row per distinct ``(a, b)`` pair, in ``(a, b)`` order (a sort, which is
    much faster than ``np.unique(axis=0)`` on stacked columns)."""
    if len(a) == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((b, a))
    sa, sb = a[order], b[order]
    first = np.ones(len(order), bool)
    first[1:] = (sa[1:] != sa[:-1]) | (sb[1:] != sb[:-1])
    return np.asarray(order[first], np.int64)


def _labels(member: Int32Array, item: Int32Array) -> dict[int, IntArray]:
    """Distinct items per member as a dict of sorted arrays."""
    if len(member) == 0:
        return {}
    pairs = np.unique(np.stack([member.astype(np.int64), item.astype(np.int64)], 1), axis=0)
    bounds = np.flatnonzero(np.diff(pairs[:, 0])) + 1
    return {int(chunk[0, 0]): chunk[:, 1].copy() for chunk in np.split(pairs, bounds) if len(chunk)}


def _first_seen(item: Int32Array, ts: FloatArray, n_items: int, unit: TimeUnit) -> FloatArray:
    """When each item was first seen in the events (NaN if never; basket time has no calendar)."""
    first = np.full(n_items, np.inf)
    if unit == "day" and len(item):
        np.minimum.at(first, item, ts)
    first[np.isinf(first)] = np.nan
    return first


def _codes(values: pa.ChunkedArray | pa.Array) -> tuple[StrArray, Int32Array]:
    """Sorted distinct non-null strings and each value's index into them (-1 for null)."""
    arr = pa.chunked_array([values]) if isinstance(values, pa.Array) else values
    arr = arr.cast(pa.string())
    distinct = pc.unique(arr.drop_null()).to_numpy(zero_copy_only=False).astype(np.str_)
    distinct = np.sort(distinct)
    if len(distinct) == 0:
        return distinct, np.full(len(arr), -1, np.int32)
    index = pc.index_in(arr, value_set=pa.array(distinct.tolist(), pa.string()))
    codes = index.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    return distinct, codes


def _mode_by(key: Int32Array, value: Int32Array, n_keys: int) -> Int32Array:
    """The most frequent non-negative ``value`` per ``key`` (-1 when a key has none)."""
    out = np.full(n_keys, -1, np.int32)
    ok = (key >= 0) & (value >= 0)
    if not ok.any():
        return out
    # One int64 per (key, value): np.unique(axis=0) sorts a void dtype, several times slower.
    span = int(value[ok].max()) + 1
    codes, counts = np.unique(
        key[ok].astype(np.int64) * span + value[ok].astype(np.int64), return_counts=True
    )
    pairs = np.stack([codes // span, codes % span], 1)
    # Sort by key, then count descending, then value ascending: the first row of a key wins.
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
    pairs = pairs[order]
    first = np.ones(len(pairs), bool)
    first[1:] = pairs[1:, 0] != pairs[:-1, 0]
    out[pairs[first, 0]] = pairs[first, 1]
    return out


def from_events(
    events: pa.Table,
    *,
    now: datetime | None = None,
    items: pa.Table | None = None,
    categories: pa.Table | None = None,
    session_gap: timedelta = timedelta(minutes=30),
) -> Interactions:
    """Interactions from an Arrow table with the event contract's columns.

    Uses ``member_id, type, ts, item_id`` and, when present, ``category_id, price, order_id,
    region``. Every member in ``events`` gets a row number (even one with only logins, so it
    is "known" and gets popular items); rows without ``item_id`` or of a type outside
    :data:`EVENT_WEIGHTS` carry no preference, except refunds, kept for the business rules.
    ``items`` (optional: ``item_id`` and any of ``category_id, price, launched_at, title``)
    fills in the catalog for items events do not describe, ``categories`` (``category_id,
    name``) names categories in reasons. ``now`` (default: the latest event) is the reference
    time for recency and new arrivals.
    """
    cols = set(events.column_names)
    if not {"member_id", "type", "ts", "item_id"} <= cols:
        raise ValueError("events need the columns member_id, type, ts and item_id")
    member_ids, member = _codes(events["member_id"])
    types = events["type"].cast(pa.string())
    has_item = pc.is_valid(events["item_id"]).to_numpy(zero_copy_only=False)
    ts_us = events["ts"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    ts_all = ts_us.to_numpy(zero_copy_only=False).astype(np.float64) / DAY_US

    item_sources = [events["item_id"].filter(pc.is_valid(events["item_id"]))]
    if items is not None:
        item_sources.append(pa.chunked_array([items["item_id"]]))
    item_ids = np.sort(
        pc.unique(
            pa.chunked_array(
                [c.cast(pa.string()) for s in item_sources for c in s.chunks], pa.string()
            )
        )
        .to_numpy(zero_copy_only=False)
        .astype(np.str_)
    )
    item_lookup = pa.array(item_ids.tolist(), pa.string())
    item_all = (
        pc.index_in(events["item_id"].cast(pa.string()), value_set=item_lookup)
        .fill_null(-1)
        .to_numpy(zero_copy_only=False)
        .astype(np.int32)
    )

    kind_all = (
        pc.index_in(types, value_set=pa.array(KINDS, pa.string()))
        .fill_null(-1)
        .to_numpy(zero_copy_only=False)
        .astype(np.int8)
    )
    refund = pc.equal(types, "refund").fill_null(False).to_numpy(zero_copy_only=False) & has_item
    rows = (kind_all >= 0) & has_item

    # Catalog: each item's most frequent category, median price, first sight.
    n_items = len(item_ids)
    cat_sources = []
    if "category_id" in cols:
        cat_sources.append(events["category_id"])
    if items is not None and "category_id" in items.column_names:
        cat_sources.append(pa.chunked_array([items["category_id"]]))
    category_ids = np.zeros(0, np.str_)
    item_category = np.full(n_items, -1, np.int32)
    if cat_sources:
        category_ids, _ = _codes(
            pa.chunked_array(
                [c for s in cat_sources for c in s.cast(pa.string()).chunks], pa.string()
            )
        )
        lookup = pa.array(category_ids.tolist(), pa.string())
        if "category_id" in cols:
            ev_cat = (
                pc.index_in(events["category_id"].cast(pa.string()), value_set=lookup)
                .fill_null(-1)
                .to_numpy(zero_copy_only=False)
                .astype(np.int32)
            )
            item_category = _mode_by(item_all, ev_cat, n_items)
        if items is not None and "category_id" in items.column_names:
            idx = pc.index_in(items["item_id"].cast(pa.string()), value_set=item_lookup)
            cat = pc.index_in(items["category_id"].cast(pa.string()), value_set=lookup)
            idx_np = idx.fill_null(-1).to_numpy(zero_copy_only=False)
            cat_np = cat.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
            ok = (idx_np >= 0) & (cat_np >= 0)
            item_category[idx_np[ok]] = cat_np[ok]
    category_names = category_ids.copy()
    if categories is not None and len(category_ids):
        names = dict(
            zip(
                categories["category_id"].cast(pa.string()).to_pylist(),
                categories["name"].cast(pa.string()).to_pylist(),
                strict=True,
            )
        )
        category_names = np.array([names.get(c) or c for c in category_ids.tolist()], dtype=np.str_)

    item_price = np.full(n_items, np.nan)
    if "price" in cols:
        price = events["price"].cast(pa.float64()).fill_null(np.nan).to_numpy()
        ok = (item_all >= 0) & ~np.isnan(price)
        if ok.any():
            order = np.lexsort((price[ok], item_all[ok]))
            it, pr = item_all[ok][order], price[ok][order]
            starts = np.flatnonzero(np.r_[True, it[1:] != it[:-1]])
            ends = np.r_[starts[1:], len(it)]
            item_price[it[starts]] = pr[(starts + ends - 1) // 2]
    item_titles = item_ids.copy()
    launched = np.full(n_items, np.nan)
    if items is not None:
        idx_np = (
            pc.index_in(items["item_id"].cast(pa.string()), value_set=item_lookup)
            .fill_null(-1)
            .to_numpy(zero_copy_only=False)
        )
        ok = idx_np >= 0
        if "price" in items.column_names:
            pr = items["price"].cast(pa.float64()).fill_null(np.nan).to_numpy()
            fill = ok & np.isnan(item_price[np.maximum(idx_np, 0)])
            item_price[idx_np[fill]] = pr[fill]
        if "title" in items.column_names:
            titles = items["title"].cast(pa.string()).fill_null("").to_numpy(zero_copy_only=False)
            good = ok & (titles != "")
            item_titles = item_titles.astype(object)
            item_titles[idx_np[good]] = titles[good]
            item_titles = item_titles.astype(np.str_)
        if "launched_at" in items.column_names:
            la = items["launched_at"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
            la_np = la.to_numpy(zero_copy_only=False).astype(np.float64)
            valid = ok & pc.is_valid(la).to_numpy(zero_copy_only=False)
            launched[idx_np[valid]] = la_np[valid] / DAY_US

    region_ids = np.zeros(0, np.str_)
    member_region = np.full(len(member_ids), -1, np.int32)
    if "region" in cols:
        region_ids, region = _codes(events["region"])
        member_region = _mode_by(member, region, len(member_ids))

    # Item rows sorted by member then time; groups: purchase baskets and browsing sessions.
    m, it, kd, t = member[rows], item_all[rows], kind_all[rows], ts_all[rows]
    order = np.lexsort((t, m))
    m, it, kd, t = m[order], it[order], kd[order], t[order]
    group = np.zeros(len(m), np.int64)
    purchase = kd == PURCHASE
    # A basket is an order, or a member's purchases of one day when there is no order id.
    if "order_id" in cols:
        _, order_code = _codes(events["order_id"])
        order_code = order_code[rows][order]
    else:
        order_code = np.full(len(m), -1, np.int32)
    if purchase.any():
        day = np.floor(t).astype(np.int64)
        first_day = int(day.min()) if len(day) else 0
        span = int(day.max()) - first_day + 1 if len(day) else 1
        n_orders = int(order_code.max()) + 1 if len(order_code) else 0
        basket_key = np.where(
            order_code >= 0,
            order_code.astype(np.int64),
            n_orders + m.astype(np.int64) * span + (day - first_day),
        )
        _, basket = np.unique(basket_key[purchase], return_inverse=True)
        group[purchase] = basket.ravel()
    n_baskets = int(group[purchase].max()) + 1 if purchase.any() else 0
    browse = ~purchase
    if browse.any():
        bm, bt = m[browse], t[browse]
        new = np.ones(len(bm), bool)
        new[1:] = (bm[1:] != bm[:-1]) | ((bt[1:] - bt[:-1]) > session_gap.total_seconds() / 86_400)
        group[browse] = n_baskets + np.cumsum(new) - 1

    if now is None:
        end = float(ts_all.max()) if len(ts_all) else 0.0
    else:
        end = now.astimezone(UTC).timestamp() / 86_400
    data = Interactions(
        member_ids=member_ids,
        item_ids=item_ids,
        member=m.astype(np.int32),
        item=it.astype(np.int32),
        kind=kd.astype(np.int8),
        ts=t,
        group=group,
        now=np.full(len(member_ids), end),
        unit="day",
        item_category=item_category,
        category_ids=category_ids,
        category_names=category_names,
        item_price=item_price,
        item_titles=item_titles,
        member_region=member_region,
        region_ids=region_ids,
        refund_member=member[refund].astype(np.int32),
        refund_item=item_all[refund].astype(np.int32),
    )
    known = ~np.isnan(launched)
    data.item_first_seen[known] = launched[known]
    return data


def from_baskets(baskets: Mapping[str, Sequence[Sequence[str]]]) -> Interactions:
    """Interactions from each member's purchase baskets in time order (no timestamps).

    Time is the basket ordinal: a member's ``b``-th basket has ``ts == b`` and the member's
    ``now`` is their basket count, so recency is "baskets ago". Repeated items inside a basket
    count once.
    """
    member_ids = np.array(sorted(baskets), dtype=np.str_)
    members: list[int] = []
    items: list[str] = []
    ts: list[int] = []
    groups: list[int] = []
    counts = np.zeros(len(member_ids))
    group = 0
    for m, member_id in enumerate(member_ids.tolist()):
        seq = baskets[member_id]
        counts[m] = len(seq)
        for b, basket in enumerate(seq):
            distinct = list(dict.fromkeys(str(i) for i in basket))
            members.extend([m] * len(distinct))
            items.extend(distinct)
            ts.extend([b] * len(distinct))
            groups.extend([group] * len(distinct))
            group += 1
    item_ids, item = np.unique(np.array(items, dtype=np.str_), return_inverse=True)
    n = len(members)
    return Interactions(
        member_ids=member_ids,
        item_ids=item_ids.astype(np.str_),
        member=np.array(members, np.int32),
        item=item.astype(np.int32),
        kind=np.full(n, PURCHASE, np.int8),
        ts=np.array(ts, np.float64),
        group=np.array(groups, np.int64),
        now=counts,
        unit="basket",
    )
