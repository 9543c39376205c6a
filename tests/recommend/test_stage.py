"""The build's recommendations stage on the checkerboard of tastes (a known answer): its
artifacts, fallback lists, metrics, early access, and the publish gate between builds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from memberwise.events.schemas import LAKE_SCHEMA
from memberwise.jobs.build import run_build
from memberwise.kit.db import transaction
from memberwise.program.service import parse_program
from memberwise.recommend import publishing, repository, stage
from memberwise.recommend.catalog import import_items
from memberwise.runtime import Runtime
from tests.recommend import END, categories, checkerboard, group_of

PROGRAM = parse_program(
    """
name: stage-test
recommendations:
  list_length: 8
"""
)
US = 1_000_000


def _lake_table(events: pa.Table) -> pa.Table:
    columns = {}
    for f in LAKE_SCHEMA:
        if f.name in events.column_names:
            columns[f.name] = events.column(f.name).cast(f.type)
        elif f.name == "ingested_at":
            columns[f.name] = events.column("ts").cast(f.type)
        else:
            columns[f.name] = pa.nulls(events.num_rows, f.type)
    return pa.table(columns, schema=LAKE_SCHEMA)


@pytest.fixture
def board(runtime: Runtime) -> Runtime:
    """The checkerboard in the lake; its items in the catalog, item i17 hidden."""
    events = checkerboard()
    runtime.lake.append(_lake_table(events), prefix="bulk")
    items = pc.unique(events.column("item_id"))
    catalog = pa.table(
        {
            "item_id": items,
            "category_id": [f"c{group_of(i)}" for i in items.to_pylist()],
            "hidden": [i == "i17" for i in items.to_pylist()],
        }
    )
    names = categories().append_column("parent_id", pa.nulls(8, pa.string()))
    with transaction(runtime.engine) as conn:
        import_items(conn, catalog, categories=names)
    return runtime


def test_the_stage_writes_lists_of_the_members_own_tastes_and_publishes_them(
    board: Runtime,
) -> None:
    result = run_build(board, PROGRAM, as_of=END)

    assert "recommendations" in [s.name for s in result.stages]
    lists = pq.read_table(result.directory / publishing.RECOMMENDATIONS).to_pylist()
    members = {r["member_id"] for r in lists}
    assert len(members) == 48
    # The known answer: each member's first items are of their own group, never hidden ones.
    firsts = [r for r in lists if r["rank"] <= 3]
    assert all(group_of(r["item_id"]) == group_of(r["member_id"]) for r in firsts)
    assert "i17" not in {r["item_id"] for r in lists}
    staple = [r for r in lists if r["member_id"] == "m000" and r["item_id"] == "i00"]
    assert staple and staple[0]["source"] == "repeat"
    manifest = json.loads((result.directory / "build.json").read_text())
    section = manifest["recommendations"]
    assert section["model_id"] == result.build_id
    metrics = section["metrics"]
    assert metrics["members"] > 0 and metrics["recall@10"] > 0.3
    # The blend and the baselines it is compared with, as `recommend evaluate` prints them.
    methods = {e["method"] for e in metrics["evaluation"]}
    assert {"baseline: own then popular", "baseline: global popular"} <= methods
    assert (result.directory / "recommender" / "config.json").is_file()
    with transaction(board.engine) as conn:
        model = repository.serving_model(conn)
        listed = repository.member_list(conn, "m000")
    assert model is not None and model["model_id"] == result.build_id
    assert listed is not None and json.loads(listed["entries"])[0][0] in {"i00", "i01", "i02"}


def test_a_worse_model_is_not_published_and_the_old_lists_keep_serving(
    board: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_build(board, PROGRAM, as_of=END)
    real = stage.time_split_metrics

    def worse(*args: Any, **kwargs: Any) -> dict[str, Any]:
        metrics = real(*args, **kwargs)
        return {k: (v * 0.5 if "@" in k and v is not None else v) for k, v in metrics.items()}

    monkeypatch.setattr(stage, "time_split_metrics", worse)
    # The stage run alone (with publish) takes the other stages' outputs from the first build.
    second = run_build(board, PROGRAM, only=["recommendations", "publish"])
    with transaction(board.engine) as conn:
        serving = repository.serving_model(conn)
        rejected = repository.get_model(conn, second.build_id)
        lists = repository.member_list(conn, "m000")

    assert serving is not None and serving["model_id"] == first.build_id
    assert rejected is not None and rejected["status"] == "rejected"
    assert rejected["decision"].startswith("kept the serving model: recall@10 ")
    assert lists is not None and lists["model_id"] == first.build_id
    assert [s.name for s in second.stages] == ["recommendations", "publish"]


def test_fallback_lists_rank_recent_popularity_by_region_and_category() -> None:
    as_of = datetime(2026, 6, 1, tzinfo=UTC)
    rows = [
        ("a", "purchase", "北京", "c1", 1),
        ("a", "view", "上海", "c1", 2),
        ("b", "view", "北京", "c1", 3),
        ("b", "view", "北京", "c1", 3),
        ("c", "cart", "上海", "c2", 4),
        ("d", "purchase", "上海", "c2", 40),  # older than 30 days: not counted
        ("hidden", "purchase", "北京", "c1", 1),
    ]
    events = pa.table(
        {
            "item_id": [r[0] for r in rows],
            "type": [r[1] for r in rows],
            "region": [r[2] for r in rows],
            "category_id": [r[3] for r in rows],
            "ts": pa.array(
                [as_of - timedelta(days=r[4]) for r in rows], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    catalog = pa.table(
        {
            "item_id": ["a", "b", "c", "d", "hidden", "fresh"],
            "category_id": ["c1", "c1", "c2", "c2", "c1", "c2"],
            "parent_category_id": ["top"] * 6,
            "hidden": [False, False, False, False, True, False],
            "in_stock": [True] * 6,
            "launched_at": pa.array(
                [as_of - timedelta(days=400)] * 5 + [as_of - timedelta(days=2)],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )

    table = stage.fallback_lists(
        events, catalog, as_of_us=int(as_of.timestamp() * US), names={"c1": "母婴"}
    )

    lists: dict[str, list[tuple[str, float]]] = {}
    reasons: dict[str, str] = {}
    for r in table.to_pylist():
        lists.setdefault(r["key"], []).append((r["item_id"], r["score"]))
        reasons[r["key"]] = r["reason"]
    assert lists["all"] == [("a", 6.0), ("c", 3.0), ("b", 2.0)]
    assert lists["region:北京|category:c1"] == [("a", 5.0), ("b", 2.0)]
    assert lists["category:top"] == [("a", 6.0), ("c", 3.0), ("b", 2.0)]
    assert lists["region:上海"] == [("c", 3.0), ("a", 1.0)]
    assert lists["new"] == [("fresh", 1.0)]
    assert reasons["region:北京|category:c1"] == "popular in 母婴 near you"
    assert (reasons["category:c2"], reasons["all"], reasons["new"]) == (
        "popular in c2",
        "popular right now",
        "new arrival",
    )


def test_fallback_lists_from_grouped_rows_equal_those_from_every_event() -> None:
    # The Spark path hands over events grouped by item, region, category, type and window
    # (count, first ts): the lists, new arrivals by first-seen time included, are the same.
    as_of = datetime(2026, 6, 1, tzinfo=UTC)
    rows = [
        ("a", "purchase", "北京", "c1", 1),
        ("a", "purchase", "北京", "c1", 2),
        ("a", "view", "上海", "c1", 2),
        ("b", "view", "北京", "c1", 3),
        ("b", "view", "北京", "c1", 50),
        ("c", "cart", "上海", "c2", 4),
        ("c", "favorite", "上海", "c2", 20),
        ("d", "purchase", "上海", "c2", 40),
    ]
    events = pa.table(
        {
            "item_id": [r[0] for r in rows],
            "type": [r[1] for r in rows],
            "region": [r[2] for r in rows],
            "category_id": [r[3] for r in rows],
            "ts": pa.array(
                [as_of - timedelta(days=r[4]) for r in rows], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    grouped = (
        events.append_column(
            "recent", pa.array([r[4] < stage.POPULAR_DAYS for r in rows], pa.bool_())
        )
        .group_by(["item_id", "region", "category_id", "type", "recent"])
        .aggregate([("ts", "count"), ("ts", "min")])
    )
    grouped = grouped.rename_columns({"ts_count": "count", "ts_min": "ts"}).drop_columns(["recent"])
    empty = pa.table(
        {
            "item_id": pa.array([], pa.string()),
            "category_id": pa.array([], pa.string()),
            "parent_category_id": pa.array([], pa.string()),
            "hidden": pa.array([], pa.bool_()),
            "in_stock": pa.array([], pa.bool_()),
            "launched_at": pa.array([], pa.timestamp("us", tz="UTC")),
        }
    )
    as_of_us = int(as_of.timestamp() * US)

    each = stage.fallback_lists(events, empty, as_of_us=as_of_us, names={})
    by_group = stage.fallback_lists(grouped, empty, as_of_us=as_of_us, names={})

    assert grouped.num_rows == 7
    assert by_group.to_pylist() == each.to_pylist()
    assert [(r["item_id"], r["score"]) for r in each.to_pylist() if r["key"] == "all"] == [
        ("a", 11.0),
        ("c", 5.0),
        ("b", 1.0),
    ]


def test_early_access_goes_to_tiers_whose_benefits_grant_it() -> None:
    program = parse_program(
        """
name: early
benefits:
  free_ship: {kind: free_shipping}
  first_look: {kind: early_access, hours_ahead: 48}
tiers:
  - {name: silver, benefits: [free_ship]}
  - {name: gold, qualify: [{spend: 100000, window_days: 365}], benefits: [free_ship, first_look]}
"""
    )

    assert stage.early_access_tiers(program) == {"gold": 48}
    assert stage.early_access_tiers(PROGRAM) == {}


def test_time_split_metrics_are_none_without_held_out_buyers(tmp_path: Path) -> None:
    events = checkerboard(groups=2, members=3, weeks=2)
    only_views = events.filter(pc.equal(events.column("type"), "view"))

    metrics = stage.time_split_metrics(
        only_views, as_of=END, items=None, config=stage.RecommenderConfig(), label_days=7.0
    )

    assert metrics["members"] == 0 and metrics["recall@10"] is None


def _staples_shop(members: int = 80, days: int = 42) -> pa.Table:
    """A shop where every member re-buys their own three staples every 3 days and views
    other members' staples: the member's own history is the whole answer."""
    rows: list[dict[str, Any]] = []
    for m in range(members):
        own = [f"s{m:03d}-{j}" for j in range(3)]
        for d in range(m % 3, days, 3):
            ts = END - timedelta(days=days - d, hours=2)
            for item in own:
                rows.append({"member_id": f"m{m:03d}", "type": "purchase", "ts": ts,
                             "item_id": item, "order_id": f"o{m}-{d}"})  # fmt: skip
            other = f"s{(m + d) % members:03d}-0"
            rows.append({"member_id": f"m{m:03d}", "type": "view", "ts": ts,
                         "item_id": other, "order_id": None})  # fmt: skip
    table = pa.Table.from_pylist(rows)
    return table.set_column(
        table.schema.get_field_index("ts"), "ts", table.column("ts").cast(pa.timestamp("us", "UTC"))
    )


def test_a_ranker_that_cannot_beat_the_members_own_history_is_not_published() -> None:
    metrics = stage.time_split_metrics(
        _staples_shop(), as_of=END, items=None, config=stage.RecommenderConfig(), label_days=7.0
    )
    at10 = {e["method"]: e for e in metrics["evaluation"] if e["k"] == 10}

    # Own most frequent finds every staple: nothing can beat it, so the own history serves.
    assert at10["baseline: own most frequent"]["recall"] == 1.0
    assert metrics["method"] == "own_history"
    assert metrics["published_method"].startswith("policy: ")
    assert metrics["recall@10"] == 1.0
    assert metrics["decision"].startswith("the ranker (recall@10 ")
    assert (
        "did not beat the best own-history baseline (own most frequent recall@10 1.0000"
        in (metrics["decision"])
    )
    config = stage.serving_config(stage.RecommenderConfig(), metrics)
    assert (config.policy, config.learn_policy) == ("own_history", True)


def test_the_build_publishes_the_own_history_lists_and_says_why(runtime: Runtime) -> None:
    events = _staples_shop()
    events = events.append_column("event_id", pa.array([f"e{i}" for i in range(len(events))]))
    runtime.lake.append(_lake_table(events), prefix="bulk")

    result = run_build(runtime, PROGRAM, as_of=END)

    section = json.loads((result.directory / "build.json").read_text())["recommendations"]
    assert section["method"] == "own_history"
    assert section["config"]["model"]["policy"] == "own_history"
    assert section["info"]["ranker"] == "fallback"  # no ranker trained for the policy
    assert publishing.build_note(result.directory) == f"recommendations: {section['decision']}"
    lists = pq.read_table(result.directory / publishing.RECOMMENDATIONS).to_pylist()
    firsts = {(r["member_id"], r["item_id"]) for r in lists if r["rank"] <= 3}
    # Every member's first three items are their own three staples, with the repeat reason.
    assert firsts == {(f"m{m:03d}", f"s{m:03d}-{j}") for m in range(80) for j in range(3)}
    assert {r["source"] for r in lists if r["rank"] <= 3} == {"repeat"}
    with transaction(runtime.engine) as conn:
        models = publishing.list_models(conn)
    assert models.serving == result.build_id
    assert models.models[0].method == "own_history"
    assert models.models[0].metrics["recall@10"] == 1.0
