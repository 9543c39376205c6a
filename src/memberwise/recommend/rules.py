"""Business rules applied to ranked candidates before the list is cut.

Each rule is a pure function of candidate arrays returning which rows survive: nothing hidden
or out of stock (the caller passes those item ids), nothing the member refunded, no durable the
member just bought (durable = a category the data shows is rarely re-bought, see
:class:`~memberwise.recommend.candidates.RepeatSource`), and at most ``max_per_category`` items
of one category per list so one interest does not fill the screen.
"""

from __future__ import annotations

import numpy as np

from memberwise.recommend.candidates import RepeatSource, member_rows
from memberwise.recommend.interactions import BoolArray, FloatArray, IntArray, Interactions


def not_hidden(item: IntArray, hidden: IntArray) -> BoolArray:
    """Rows whose item is not in ``hidden`` (hidden, delisted or out-of-stock items)."""
    if len(hidden) == 0:
        return np.ones(len(item), bool)
    return ~np.isin(item, hidden)


def not_refunded(data: Interactions, members: IntArray, pos: IntArray, item: IntArray) -> BoolArray:
    """Rows whose item the member did not refund every time they bought it.

    A member who bought an item in more baskets than they refunded it kept buying it after
    a refund (a staple re-bought after one damaged delivery): it stays, as their own history
    says.
    """
    if len(data.refund_member) == 0 or len(pos) == 0:
        return np.ones(len(pos), bool)
    n = data.n_items
    refunded = data.refund_member.astype(np.int64) * n + data.refund_item
    keys, refunds = np.unique(refunded, return_counts=True)
    query = np.where(members[pos] >= 0, members[pos], -1) * n + item
    idx = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    hit = keys[idx] == query
    if not hit.any():
        return np.ones(len(pos), bool)
    bought = _baskets_with(data, members, pos, item)
    return np.asarray(~hit | (bought > refunds[idx]), bool)


def _baskets_with(data: Interactions, members: IntArray, pos: IntArray, item: IntArray) -> IntArray:
    """The member's purchase baskets holding the item, per candidate row."""
    rows, rpos = member_rows(data, members)
    buy = data.is_purchase[rows]
    rows, rpos = rows[buy], rpos[buy]
    n = data.n_items
    key = np.unique(
        np.stack([rpos * n + data.item[rows].astype(np.int64), data.group[rows]], 1), axis=0
    )[:, 0]
    keys, counts = np.unique(key, return_counts=True)
    query = pos * n + item
    if len(keys) == 0:
        return np.zeros(len(pos), np.int64)
    idx = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[idx] == query, counts[idx], 0)


def not_durable_just_bought(
    data: Interactions,
    members: IntArray,
    pos: IntArray,
    item: IntArray,
    repeat: RepeatSource,
    *,
    cooldown: float,
) -> BoolArray:
    """Rows that are not a durable of a category the member bought within ``cooldown``.

    A member who just bought a phone is not shown phones (the same or another) for
    ``cooldown`` time units; consumables are exempt — re-buying them is the point — and so is
    an item the member has bought in two baskets or more (their own re-buying outweighs the
    category's).
    """
    if len(pos) == 0:
        return np.ones(0, bool)
    durable = ~repeat.consumable(data, item)
    if not durable.any():
        return np.ones(len(pos), bool)
    rows, rpos = member_rows(data, members)
    buy = data.is_purchase[rows]
    rows, rpos = rows[buy], rpos[buy]
    recent = (data.now[data.member[rows]] - data.ts[rows]) <= cooldown
    rows, rpos = rows[recent], rpos[recent]
    bought_item = data.item[rows].astype(np.int64)
    bought_cat = data.item_category[bought_item].astype(np.int64)
    # Category key: the category, or the item itself when the catalog has no category.
    n = data.n_items
    bought_key = np.where(bought_cat >= 0, n + bought_cat, bought_item)
    cand_cat = data.item_category[item].astype(np.int64)
    cand_key = np.where(cand_cat >= 0, n + cand_cat, item)
    width = n + max(data.n_categories, 1)
    hit = np.isin(pos * width + cand_key, rpos * width + bought_key)
    blocked = durable & hit
    if blocked.any():
        blocked[blocked] = _baskets_with(data, members, pos[blocked], item[blocked]) < 2
    return ~blocked


def diverse(
    pos: IntArray, category: IntArray, score: FloatArray, *, max_per_category: int
) -> BoolArray:
    """Rows kept when each member's list holds at most ``max_per_category`` items of one
    category (the best-scored ones); items without a category are not limited."""
    if len(pos) == 0 or max_per_category <= 0:
        return np.ones(len(pos), bool)
    order = np.lexsort((-score, category, pos))
    p, c = pos[order], category[order]
    starts = np.flatnonzero(np.r_[True, (p[1:] != p[:-1]) | (c[1:] != c[:-1])])
    within = np.arange(len(p)) - np.repeat(starts, np.diff(np.r_[starts, len(p)]))
    keep_sorted = (within < max_per_category) | (c < 0)
    keep = np.empty(len(pos), bool)
    keep[order] = keep_sorted
    return keep
