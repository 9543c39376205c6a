"""Recommendations leave out the items of kept-away merchants (the hook merchants installs in
the recommender), the moment a penalty puts a merchant under an action (both stores)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from memberwise.kit.db import transaction
from memberwise.kit.time import utcnow
from memberwise.merchants import repository
from memberwise.merchants import service as merchants_service
from memberwise.privacy.schemas import Role
from memberwise.recommend import catalog as recommend_catalog
from memberwise.runtime import Runtime
from tests.merchants.test_service import _scorecard
from tests.recommend.build_factory import catalog_table, publish, write_build

Auth = Callable[[Role], dict[str, str]]


def test_a_penalised_merchants_items_leave_the_members_list(
    runtime: Runtime, client: TestClient, auth: Auth, tmp_path: Path
) -> None:
    # Given a member's published list and a merchant selling one of its items
    with transaction(runtime.engine) as conn:
        recommend_catalog.import_items(conn, catalog_table())
        lists = {"m1": [("diaper-1", 9.0, "r", "repeat"), ("milk-1", 6.0, "r", "repeat"),
                        ("toy-1", 3.0, "r", "cooc")]}  # fmt: skip
        fallbacks = {"all": [("snack-1", 5.0, "popular now")]}
        publish(conn, write_build(tmp_path / "b1", lists=lists, fallbacks=fallbacks))
        repository.replace_items(conn, [{"merchant_id": "s-bad", "item_id": "milk-1"}])
    merchants_service.clear_exclusion_cache()
    url = "/v1/members/m1/recommendations?n=3"
    before = client.get(url, headers=auth(Role.platform)).json()["items"]
    assert [i["item_id"] for i in before] == ["diaper-1", "milk-1", "toy-1"]
    # When the merchant gets a marketing ban (12 points of fake orders)
    banned = client.post(
        "/v1/merchants/s-bad/penalties",
        json={"violation": "fake_orders", "reason": "刷单"},
        headers={**auth(Role.operator), "Idempotency-Key": "case-7"},
    )
    assert [a["kind"] for a in banned.json()["actions"]] == ["marketing_ban"]
    # Then its item is gone and the list is filled from the fallbacks
    after = client.get(url, headers=auth(Role.platform)).json()["items"]
    assert [i["item_id"] for i in after] == ["diaper-1", "toy-1", "snack-1"]
    merchants_service.clear_exclusion_cache()


def test_badge_holders_items_move_up_the_list(
    runtime: Runtime, client: TestClient, auth: Auth, tmp_path: Path
) -> None:
    # Given a program boosting badge holders' items 1.5x, and toy-1's merchant at the top
    program = tmp_path / "program.yaml"
    program.write_text("name: t\nmerchants:\n  support: {recommendation_boost: 1.5}\n")
    runtime.settings.program_file = program
    with transaction(runtime.engine) as conn:
        recommend_catalog.import_items(conn, catalog_table())
        lists = {"m1": [("diaper-1", 9.0, "r", "repeat"), ("milk-1", 6.0, "r", "repeat"),
                        ("toy-1", 5.0, "r", "cooc"), ("snack-1", 1.0, "r", "popular")]}  # fmt: skip
        publish(conn, write_build(tmp_path / "b1", lists=lists))
        repository.replace_items(conn, [{"merchant_id": "s-good", "item_id": "toy-1"}])
        repository.replace_scorecards(conn, [_scorecard("s-good", 95.0)])
        settings = runtime.program().merchants
        granted = merchants_service.grant_badges(conn, settings, utcnow(), "Asia/Shanghai")
    assert [a.merchant_id for a in granted] == ["s-good"]
    merchants_service.clear_exclusion_cache()
    # Then toy-1 (0.55 x 1.5 = 0.825) comes before milk-1 (0.6625); scores shown are unboosted
    items = client.get("/v1/members/m1/recommendations?n=3", headers=auth(Role.platform))
    assert [(i["item_id"], i["score"]) for i in items.json()["items"]] == [
        ("diaper-1", 1.0),
        ("toy-1", 0.55),
        ("milk-1", 0.6625),
    ]
    merchants_service.clear_exclusion_cache()
