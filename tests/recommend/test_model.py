"""The Recommender end to end on the checkerboard: lists, reasons, fallback, early access,
similar items and an exact save/load round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from memberwise.recommend.model import RESULT_SCHEMA, Recommender, RecommenderConfig
from memberwise.recommend.policy import GRID, OwnHistory
from tests.recommend import categories, checkerboard, group_of, item_id, member_id

CONFIG = RecommenderConfig(als_factors=8, als_iterations=8, threads=1, neighbours_k=5)


@pytest.fixture(scope="module")
def events() -> pa.Table:
    return checkerboard()


@pytest.fixture(scope="module")
def model(events: pa.Table) -> Recommender:
    return Recommender(CONFIG).fit(events, categories=categories())


def _rows(table: pa.Table, member: str) -> list[dict[str, object]]:
    return [r for r in table.to_pylist() if r["member_id"] == member]


def test_every_member_gets_n_items_of_their_own_tastes(model: Recommender) -> None:
    # Four, because the diversity rule caps a category at four and each group has one
    # everyday category.
    recs = model.recommend(n=4)
    assert recs.schema == RESULT_SCHEMA
    assert recs.num_rows == 48 * 4
    for row in recs.to_pylist():
        assert group_of(str(row["item_id"])) == group_of(str(row["member_id"]))
    ranks = recs.column("rank").to_pylist()
    assert ranks[:5] == [1, 2, 3, 4, 1]


def test_the_weekly_staple_comes_first_with_a_repeat_reason(model: Recommender) -> None:
    recs = model.recommend([member_id(1, 3)], n=5)
    first = recs.to_pylist()[0]
    assert first["item_id"] == item_id(1, 0)
    assert first["source"] == "repeat"
    assert first["reason"] == "bought every week"


def test_rules_hold_in_the_lists(model: Recommender) -> None:
    recs = model.recommend(n=8, exclude_items=[item_id(0, 1)])
    items = recs.column("item_id").to_pylist()
    assert item_id(0, 1) not in items
    # Member (0, 0) bought the durable item 5 53 days ago: not recommended back.
    assert item_id(0, 5) not in [r["item_id"] for r in _rows(recs, member_id(0, 0))]
    # At most max_per_category (4) items of one category per list.
    for member in {str(m) for m in recs.column("member_id").to_pylist()}:
        cats = [
            str(r["item_id"])[:2] + ("d" if str(r["item_id"])[2] == "5" else "")
            for r in _rows(recs, member)
        ]
        assert max(cats.count(c) for c in set(cats)) <= 4


def test_unknown_members_get_new_arrivals_then_popular_items(model: Recommender) -> None:
    recs = model.recommend(["stranger"], n=8)
    assert recs.num_rows == 8
    assert recs.column("rank").to_pylist() == list(range(1, 9))
    sources = recs.column("source").to_pylist()
    assert sources == ["new"] * 4 + ["popular"] * 4
    assert set(recs.column("reason").to_pylist()[4:]) == {"popular right now"}


def test_early_access_items_are_inserted_for_eligible_members_only(model: Recommender) -> None:
    members = [member_id(2, 0), member_id(2, 1)]
    recs = model.recommend(
        members, n=5, early_access_items=["launch-1"], early_access_members=[member_id(2, 0)]
    )
    vip = _rows(recs, member_id(2, 0))
    other = _rows(recs, member_id(2, 1))
    assert [r["rank"] for r in vip] == [1, 2, 3, 4, 5]
    assert vip[2]["item_id"] == "launch-1"
    assert vip[2]["reason"] == "early access for your tier"
    assert vip[2]["source"] == "early_access"
    assert "launch-1" not in [r["item_id"] for r in other]
    scores = [float(r["score"]) for r in vip]  # type: ignore[arg-type]
    assert scores == sorted(scores, reverse=True)


def test_lists_do_not_depend_on_batches_or_threads(model: Recommender) -> None:
    # Given the fitted model, when every member is scored in one batch on one thread and in
    # batches of 5 on 2 threads (the last one short), then the tables are identical.
    one = dataclasses.replace(model.config, scoring_threads=1, batch_size=20_000)
    two = dataclasses.replace(model.config, scoring_threads=2, batch_size=5)
    expected = _with_config(model, one).recommend(n=6)
    got = _with_config(model, two).recommend(n=6)
    assert got.num_rows == 48 * 6
    assert got.equals(expected)


def test_the_table_of_members_without_early_access_is_the_same_on_both_paths(
    model: Recommender,
) -> None:
    # Given early access for one member (the row-by-row path) and for nobody (the Arrow path),
    # then every other member's rows are identical.
    members = [member_id(g, i) for g in range(4) for i in range(2)]
    vip = member_id(0, 0)
    slow = model.recommend(
        members, n=5, early_access_items=["launch-1"], early_access_members=[vip]
    )
    fast = model.recommend(members, n=5, early_access_items=["launch-1"])
    others = pc.not_equal(slow.column("member_id"), vip)
    assert slow.filter(others).equals(fast.filter(pc.not_equal(fast.column("member_id"), vip)))


def _with_config(model: Recommender, config: RecommenderConfig) -> Recommender:
    """The same fitted model under another config (scoring knobs only)."""
    other = Recommender(config)
    other.ranker = model.ranker
    other._fitted = model._fitted
    return other


def test_similar_items_stay_in_the_group(model: Recommender) -> None:
    sims = model.similar_items(n=3, item_ids=[item_id(3, 1)])
    assert sims.column_names == ["item_id", "rank", "similar_item_id", "score"]
    assert sims.num_rows == 3
    assert {group_of(str(s)) for s in sims.column("similar_item_id").to_pylist()} == {3}


def test_reasons_read_as_sentences(model: Recommender) -> None:
    reasons = set(model.recommend(n=8).column("reason").to_pylist())
    assert "bought every week" in reasons
    assert any(r.startswith("people who bought ") for r in reasons)
    assert all(r and r[0].islower() for r in reasons)


@pytest.mark.parametrize("min_groups", [10, 1000])
def test_save_load_round_trip_gives_identical_recommendations(
    events: pa.Table, tmp_path: Path, min_groups: int
) -> None:
    config = RecommenderConfig(
        als_factors=8,
        als_iterations=5,
        threads=1,
        neighbours_k=5,
        min_train_groups=min_groups,
        label_days=14,
    )
    model = Recommender(config).fit(events, categories=categories())
    assert model.ranker.kind == ("lambdarank" if min_groups == 10 else "fallback")
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert loaded.ranker.kind == model.ranker.kind
    assert loaded.recommend(n=6).equals(model.recommend(n=6))
    assert loaded.similar_items(n=4).equals(model.similar_items(n=4))
    assert loaded.config == model.config


def test_the_own_history_policy_lists_own_staples_first_and_round_trips(
    events: pa.Table, tmp_path: Path
) -> None:
    config = dataclasses.replace(CONFIG, policy="own_history", label_days=14, min_train_groups=10)
    model = Recommender(config).fit(events, categories=categories())
    lists = model.recommend(n=6)
    # Only the policy's sources were fitted; no ranker was trained.
    assert sorted(model.fitted.sources) == ["cooc", "popular", "repeat"]
    assert model.ranker.kind == "fallback" and model.info["policy"] == "own_history"
    # Learned on the split: every grid point finds the staples (Recall@10 1.0); recency,
    # the categories' re-buy rates and popular items between own ones give the best NDCG@10.
    assert len(model.policy_trials) == len(GRID)
    assert {t.recall for t in model.policy_trials} == {1.0}
    assert model.own_policy == OwnHistory(1.0, 1.0, 1.0)
    first = [r for r in lists.to_pylist() if r["rank"] == 1]
    # Every member's weekly staple (item 0 of their group) leads their list.
    assert {(r["member_id"], r["item_id"], r["source"]) for r in first} == {
        (member_id(g, i), item_id(g, 0), "repeat") for g in range(4) for i in range(12)
    }
    model.save(tmp_path / "policy")
    loaded = Recommender.load(tmp_path / "policy")
    assert loaded.own_policy == model.own_policy
    assert loaded.recommend(n=6).equals(lists)
    assert loaded.similar_items(n=4).equals(model.similar_items(n=4))
    with pytest.raises(ValueError, match="unknown policy"):
        Recommender(dataclasses.replace(CONFIG, policy="nope"))


def test_a_fit_reuses_the_sources_of_a_model_fitted_on_its_history(events: pa.Table) -> None:
    from memberwise.recommend.interactions import from_events
    from memberwise.recommend.model import _fitted_on

    config = dataclasses.replace(CONFIG, min_train_groups=5)
    data = from_events(events, categories=categories())
    history, _ = data.split_last(label_days=config.label_days)
    older, _ = history.split_last(label_days=config.label_days)
    earlier = Recommender(config).fit(history)
    reused = Recommender(config).fit(data, history_fit=earlier)
    fresh = Recommender(config).fit(data)

    # Only a model of exactly the split's history (every source) stands in for fitting it.
    assert _fitted_on(earlier, history) is earlier.fitted
    assert _fitted_on(earlier, older) is None and _fitted_on(earlier, data) is None
    assert _fitted_on(Recommender(config).fit(older), history) is None
    assert _fitted_on(None, history) is None
    assert reused.ranker.kind == fresh.ranker.kind == "lambdarank"
    assert reused.recommend(n=4).num_rows == fresh.recommend(n=4).num_rows == 48 * 4
