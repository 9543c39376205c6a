"""Coupon targeting on Spark (:mod:`memberwise.recommend.targeting_spark`): the executors score,
only the candidates the greedy choice can reach come to the driver, and the suggestions are
exactly the embedded path's (:func:`memberwise.recommend.targeting.target`), with nothing
collected.

The campaigns cover every limit: tier and segment (persona) restrictions, a category template,
an uplift floor, a count cap, a budget over coupons of one value, budgets over percent coupons
whose values differ per member (the greedy skips a dear coupon and goes on: more rows are
fetched), an unknown template, and members taken by an earlier campaign. One Spark session
(local[1]) serves the module; runs only where pyspark imports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ibis
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memberwise.kit.storage import Storage
from memberwise.kit.warehouse import spark_backend
from memberwise.program.ledger import CouponTemplate
from memberwise.program.recommendations import CouponCampaign
from memberwise.recommend.targeting import target
from memberwise.recommend.targeting_spark import target_on_spark
from tests.jobs.spark_parity import no_collect

pytest.importorskip("pyspark")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("spark")]

MEMBERS = 3000
TEMPLATES = {
    "vip_percent": CouponTemplate(
        kind="percent_off", percent=10, valid_days=30, tiers=("gold", "platinum")
    ),
    "ten_off": CouponTemplate(kind="amount_off", amount=1000, valid_days=30),
    "comeback": CouponTemplate(
        kind="threshold",
        amount=3000,
        min_spend=30000,
        valid_days=30,
        segments=("persona-2", "at_risk"),
    ),
    "shoes": CouponTemplate(kind="amount_off", amount=500, valid_days=30, categories=("shoes",)),
    "percent_15": CouponTemplate(kind="percent_off", percent=15, valid_days=30),
    "capped": CouponTemplate(
        kind="percent_off", percent=20, max_discount=800, valid_days=30, budget_count=15
    ),
}
CAMPAIGNS = [
    CouponCampaign(name="vip", template="vip_percent", budget=30_000),
    CouponCampaign(name="ten", template="ten_off", max_coupons=40),
    CouponCampaign(name="comeback", template="comeback", max_coupons=25, budget=60_000),
    CouponCampaign(name="ghost", template="nope", max_coupons=5),
    CouponCampaign(name="shoes", template="shoes", max_coupons=30, min_uplift=0.02),
    CouponCampaign(name="nobody", template="ten_off", max_coupons=5, min_uplift=0.99),
    CouponCampaign(name="percent", template="percent_15", budget=20_000),
    CouponCampaign(name="capped", template="capped", max_coupons=50),
]


def demo(
    directory: Path, members: int = MEMBERS
) -> tuple[pa.Table, dict[str, set[str]], dict[str, str]]:
    """A build's profiles, segments and tiers of ``members`` members (nulls and absent
    members included), written to ``directory``; the embedded path's inputs."""
    rng = np.random.default_rng(19)
    ids = [f"m{i:07d}" for i in range(members)]

    def counts(high: int, empty: float) -> pa.Array:
        values = rng.integers(0, high, members)
        return pa.array(values, pa.int64(), mask=rng.random(members) < empty)

    profiles = pa.table(
        {
            "member_id": ids,
            "orders_90d": counts(6, 0.1),
            "views_30d": counts(40, 0.1),
            "favorites_30d": counts(5, 0.2),
            "carts_30d": counts(6, 0.1),
            "purchases_30d": counts(4, 0.1),
            "price_band": pa.array(rng.integers(1, 6, members), mask=rng.random(members) < 0.2),
            "aov_365d": pa.array(
                rng.gamma(2.0, 9000.0, members).round(2), mask=rng.random(members) < 0.01
            ),
            "top_category": pa.array(
                rng.choice(["shoes", "bags", "food"], members), mask=rng.random(members) < 0.1
            ),
            "peak_hour": pa.array(rng.integers(0, 24, members), mask=rng.random(members) < 0.3),
        }
    )
    segmented = ids[: members - 50]  # the last members have no segment row
    segments = pa.table(
        {
            "member_id": segmented,
            "segment": rng.choice(["new", "active", "at_risk"], len(segmented)),
            "persona": pa.array(
                rng.integers(0, 4, len(segmented)), mask=rng.random(len(segmented)) < 0.2
            ),
        }
    )
    tiers = pa.table(
        {
            "member_id": ids,
            "tier": rng.choice(
                ["member", "gold", "platinum"], members, p=[6, 3, 1] / np.float64(10)
            ),
        }
    )
    pq.write_table(profiles, directory / "profiles.parquet")
    pq.write_table(segments, directory / "segments.parquet")
    pq.write_table(tiers, directory / "tiers.parquet")
    groups: dict[str, set[str]] = {}
    for row in segments.to_pylist():
        found = {row["segment"]}
        if row["persona"] is not None:
            found.add(f"persona-{row['persona']}")
        groups[row["member_id"]] = found
    return profiles, groups, dict(zip(ids, tiers.column("tier").to_pylist(), strict=True))


@pytest.fixture(scope="module")
def spark() -> ibis.BaseBackend:
    return spark_backend(
        master="local[1]",
        conf={"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "1g"},
    )


def test_the_suggestions_are_the_embedded_ones_with_only_candidates_on_the_driver(
    spark: ibis.BaseBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profiles, groups, tiers = demo(tmp_path)
    expected, expected_problems = target(
        profiles, CAMPAIGNS, TEMPLATES, segments=groups, tiers=tiers
    )
    read: list[int] = []
    read_table = Storage.read_table

    def counted(self: Storage, uri: Any, columns: Any = None) -> pa.Table:
        table = read_table(self, uri, columns)
        read.append(table.num_rows)
        return table

    monkeypatch.setattr(Storage, "read_table", counted)
    with no_collect():
        got, problems = target_on_spark(spark, tmp_path, tmp_path / "scratch", CAMPAIGNS, TEMPLATES)

    assert problems == expected_problems == ["campaign ghost: no coupon template 'nope'"]
    assert got.schema == expected.schema
    assert got.to_pylist() == expected.to_pylist()
    # Every limit was reached by someone, and nobody got two coupons.
    chosen = expected.column("campaign").to_pylist()
    assert {c: chosen.count(c) for c in dict.fromkeys(chosen)} == {
        "vip": chosen.count("vip"),
        "ten": 40,
        "comeback": 20,  # the budget (60,000 / 3,000) before the count (25)
        "shoes": 30,
        "percent": chosen.count("percent"),
        "capped": 15,  # the template's budget_count
    }
    assert chosen.count("vip") >= 5 and chosen.count("percent") >= 5
    assert len(set(expected.column("member_id").to_pylist())) == expected.num_rows
    # The driver read the per-campaign counts, the candidates (each campaign's best, then
    # more for a budget over coupons of different values) and the peak hours' counts: far
    # fewer rows than the members, let alone the members x campaigns the executors scored.
    assert len(read) >= 4  # at least one further fetch
    assert sum(read) < MEMBERS / 2


def test_campaigns_nobody_qualifies_for_and_a_build_without_tiers(
    spark: ibis.BaseBackend, tmp_path: Path
) -> None:
    profiles, groups, _ = demo(tmp_path)
    (tmp_path / "tiers.parquet").unlink()
    campaigns = [CAMPAIGNS[0], CAMPAIGNS[5]]
    expected = target(profiles, campaigns, TEMPLATES, segments=groups, tiers=None)
    with no_collect():
        got = target_on_spark(spark, tmp_path, tmp_path / "scratch", campaigns, TEMPLATES)

    assert got[1] == expected[1] and len(got[1]) == 1  # vip needs tiers
    assert got[0].num_rows == expected[0].num_rows == 0
    assert got[0].schema == expected[0].schema
