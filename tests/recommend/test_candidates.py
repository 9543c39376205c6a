"""Each candidate source on the checkerboard of tastes: its candidates are the member's own
group's items, with the reason arguments the data implies."""

from __future__ import annotations

import numpy as np
import pytest

from memberwise.recommend.candidates import (
    AlsSource,
    Candidates,
    CoocSource,
    NeighboursSource,
    NewArrivalsSource,
    PopularSource,
    RepeatSource,
    top_per_member,
)
from memberwise.recommend.interactions import Interactions, from_baskets, from_events
from tests.recommend import END, categories, checkerboard, group_of, item_id, member_id


@pytest.fixture(scope="module")
def data() -> Interactions:
    return from_events(checkerboard(), categories=categories())


def _members(data: Interactions) -> np.ndarray:
    return np.arange(data.n_members, dtype=np.int64)


def _groups_match(data: Interactions, cands: Candidates, members: np.ndarray) -> float:
    """Share of candidates in the member's own group."""
    own = np.array([group_of(m) for m in data.member_ids[members[cands.pos]].tolist()])
    got = np.array([group_of(i) for i in data.item_ids[cands.item].tolist()])
    return float((own == got).mean())


def test_interactions_from_events_index_members_items_and_baskets(data: Interactions) -> None:
    # Given the checkerboard, when indexed, then 48 members, 32 items, one basket per order.
    assert data.n_members == 48
    assert data.n_items == 32
    assert data.unit == "day"
    assert data.now[0] == pytest.approx(END.timestamp() / 86_400 - 2 + 11 / 24 + 1 / 1440, abs=1)
    m = data.member_index([member_id(0, 0)])[0]
    rows = (data.member == m) & data.is_purchase
    # 8 weekly orders plus one durable order.
    assert len(np.unique(data.group[rows])) == 9
    assert data.member_index(["nobody"]).tolist() == [-1]
    assert data.category_names[data.item_category[data.item_index([item_id(0, 0)])[0]]] == "母婴"


def test_repeat_source_proposes_the_weekly_staple_first_with_its_interval(
    data: Interactions,
) -> None:
    src = RepeatSource()
    src.fit(data)
    members = _members(data)
    cands = src.candidates(data, members, 3)
    first = cands.take(np.r_[True, cands.pos[1:] != cands.pos[:-1]])
    # Every member's best repeat candidate is their group's staple, bought 8 times weekly.
    assert [data.item_ids[i] for i in first.item] == [
        item_id(group_of(m), 0) for m in data.member_ids.tolist()
    ]
    assert set(first.arg.tolist()) == {8}
    assert np.allclose(first.arg2, 7.0, atol=0.2)
    # Staples are consumables; the once-bought durable category is not.
    staple = data.item_index([item_id(0, 0)])
    durable = data.item_index([item_id(0, 5)])
    assert src.consumable(data, staple).tolist() == [True]
    assert src.consumable(data, durable).tolist() == [False]


def test_als_source_recommends_within_the_members_group(data: Interactions) -> None:
    src = AlsSource(factors=8, iterations=10, threads=1)
    src.fit(data)
    members = _members(data)
    cands = src.candidates(data, members, 4)
    assert len(cands) == 4 * data.n_members
    assert _groups_match(data, cands, members) == 1.0


def test_als_source_warm_started_from_a_fit_keeps_its_factors_and_its_candidates(
    data: Interactions,
) -> None:
    # Given ALS fitted on the data, when a second source starts from its factors with no
    # sweep, then it has exactly the same factors and candidates; with a few sweeps it still
    # recommends within the member's group.
    first = AlsSource(factors=8, iterations=10, threads=1)
    first.fit(data)
    members = _members(data)
    same = AlsSource(factors=8, iterations=10, threads=1)
    same.fit_from(data, first, 0)
    assert np.array_equal(same.user_factors, first.user_factors)
    assert np.array_equal(same.item_factors, first.item_factors)
    a, b = first.candidates(data, members, 4), same.candidates(data, members, 4)
    assert np.array_equal(a.item, b.item) and np.array_equal(a.score, b.score)
    refit = AlsSource(factors=8, iterations=10, threads=1)
    refit.fit_from(data, first, 3)
    assert not np.array_equal(refit.user_factors, first.user_factors)
    assert _groups_match(data, refit.candidates(data, members, 4), members) == 1.0


def test_als_candidates_are_each_members_best_pool_items_best_first(data: Interactions) -> None:
    # implicit's top-k gives the same lists as sorting every member's full score row.
    src = AlsSource(factors=8, iterations=10, threads=1)
    src.fit(data)
    members = _members(data)
    cands = src.candidates(data, members, 5)
    scores = src.user_factors @ src.item_factors[src.pool_items].T
    expected = src.pool_items[np.argsort(-scores, axis=1, kind="stable")[:, :5]]
    assert cands.item.reshape(-1, 5).tolist() == expected.tolist()
    assert np.all(np.diff(cands.score.reshape(-1, 5), axis=1) <= 0)


def test_cooc_source_names_the_co_bought_anchor(data: Interactions) -> None:
    src = CoocSource()
    src.fit(data)
    members = _members(data)
    cands = src.candidates(data, members, 5)
    assert _groups_match(data, cands, members) == 1.0
    # The anchor of each candidate is an item of the same group the member interacted with.
    anchors = data.item_ids[cands.arg]
    assert all(
        group_of(a) == group_of(i) for a, i in zip(anchors, data.item_ids[cands.item], strict=True)
    )
    item, similar, _ = src.similar(3)
    assert all(
        group_of(a) == group_of(b)
        for a, b in zip(data.item_ids[item].tolist(), data.item_ids[similar].tolist(), strict=True)
    )


def test_popular_source_uses_the_members_category_and_region(data: Interactions) -> None:
    src = PopularSource()
    src.fit(data)
    members = _members(data)
    cands = src.candidates(data, members, 5)
    assert _groups_match(data, cands, members) == 1.0
    assert np.all(cands.arg2 == 1.0)  # regional
    cat_names = {str(data.category_names[c]) for c in cands.arg}
    assert "母婴" in cat_names


def test_new_arrivals_source_proposes_the_groups_new_item(data: Interactions) -> None:
    src = NewArrivalsSource(days=14)
    src.fit(data)
    assert sorted(data.item_ids[src.new_items].tolist()) == [item_id(g, 6) for g in range(4)]
    members = _members(data)
    cands = src.candidates(data, members, 1)
    assert [data.item_ids[i] for i in cands.item] == [
        item_id(group_of(m), 6) for m in data.member_ids.tolist()
    ]


def test_neighbours_source_smooths_with_same_group_members(data: Interactions) -> None:
    src = NeighboursSource(k=5)
    src.fit(data)
    members = _members(data)
    cands = src.candidates(data, members, 4)
    assert _groups_match(data, cands, members) == 1.0
    # Above max_members exact search is skipped.
    assert len(NeighboursSource(max_members=10).candidates(data, members, 4)) == 0


def test_unknown_members_get_no_personal_candidates(data: Interactions) -> None:
    unknown = np.array([-1], np.int64)
    for src in (RepeatSource(), CoocSource(), NeighboursSource()):
        src.fit(data)
        assert len(src.candidates(data, unknown, 5)) == 0


def test_top_per_member_keeps_the_best_and_breaks_ties_by_item() -> None:
    cands = Candidates(
        np.array([1, 0, 0, 0, 1]),
        np.array([9, 3, 1, 2, 8]),
        np.array([0.5, 0.2, 0.9, 0.9, 0.5]),
        np.zeros(5, np.int64),
        np.zeros(5),
    )
    top = top_per_member(cands, 2)
    assert top.pos.tolist() == [0, 0, 1, 1]
    assert top.item.tolist() == [1, 2, 8, 9]


def test_top_per_member_of_grouped_rows_equals_a_sort_of_every_row() -> None:
    # Rows grouped by member take the partition shortcut (lists of 1-300 rows, ties on
    # integer scores, repeated items); the result is what one three-key sort of all rows gives.
    rng = np.random.default_rng(3)
    for trial in range(40):
        n = int(rng.integers(1, 4000))
        pos = np.sort(rng.integers(0, int(rng.integers(1, 40)), n))
        score = rng.integers(0, 6, n).astype(float) if trial % 2 else rng.random(n)
        cands = Candidates(pos, rng.integers(0, 60, n), score, np.arange(n), np.zeros(n))
        c = int(rng.integers(1, 50))
        order = np.lexsort((cands.item, -cands.score, cands.pos))
        ranked = cands.take(order)
        starts = np.flatnonzero(np.r_[True, ranked.pos[1:] != ranked.pos[:-1]])
        within = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        expected = ranked.take(within < c)

        top = top_per_member(cands, c)

        assert top.arg.tolist() == expected.arg.tolist()


def test_from_baskets_counts_time_in_baskets() -> None:
    data = from_baskets({"u1": [["a", "b"], ["a"], ["a", "c", "a"]], "u2": [["b"]]})
    assert data.unit == "basket"
    assert data.now.tolist() == [3.0, 1.0]
    assert len(data.member) == 6  # "a" twice in the last basket counts once
    src = RepeatSource(basket_decay=0.5)
    src.fit(data)
    cands = src.candidates(data, np.array([0]), 3)
    # Personal vector: a in all 3 baskets -> 1.0; c last basket only -> 1/(1+.5+.25) ; b first
    assert data.item_ids[cands.item].tolist() == ["a", "c", "b"]
    history, labels = data.split_last()
    assert {int(k): data.item_ids[v].tolist() for k, v in labels.items()} == {
        0: ["a", "c"],
        1: ["b"],
    }
    assert history.now.tolist() == [2.0, 0.0]
