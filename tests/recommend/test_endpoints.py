"""The recommendation API on the real stores: published lists served, re-ranked by the last
minutes' events, filtered by the live catalog, filled by the fallback chain; similar items,
coupon suggestions, the catalog routes, the publish gate and the export."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from memberwise.cli import app
from memberwise.kit.db import transaction
from memberwise.privacy.schemas import Role
from memberwise.recommend import catalog, export, repository
from memberwise.recommend.schemas import ItemIn
from memberwise.runtime import Runtime
from tests.recommend.build_factory import catalog_table, publish, write_build

Auth = Callable[[Role], dict[str, str]]

LISTS = {
    "m1": [
        ("diaper-1", 9.0, "bought every 18 days", "repeat"),
        ("milk-1", 6.0, "bought every 25 days", "repeat"),
        ("toy-1", 3.0, "people who bought 纸尿裤 L also bought it", "cooc"),
        ("snack-1", 1.5, "popular in 食品 near you", "popular"),
    ],
}
SIMILAR = {
    "phone-1": [("charger-1", 0.9), ("case-1", 0.8), ("earphone-1", 0.45), ("phone-2", 0.3)],
    "diaper-1": [("diaper-2", 0.7)],
}
FALLBACKS = {
    "all": [("snack-1", 50.0, "popular now"), ("phone-1", 40.0, "popular now")],
    "new": [("new-1", 5.0, "new arrival")],
    "region:浙江|category:c0102": [("diaper-2", 8.0, "popular in 纸尿裤 near you")],
    "category:c02": [("phone-2", 9.0, "popular in 数码"), ("earphone-1", 4.0, "popular in 数码")],
}
PROFILES = [{"member_id": "m1", "region": "浙江", "top_category": "c0102", "peak_hour": 21}]
COUPONS = [
    {
        "member_id": "m1",
        "campaign": "winback",
        "template": "welcome_10",
        "value": 1000,
        "uplift": 0.12,
        "p_purchase": 0.2,
        "best_hour": 21,
        "reason": "interested lately (80%), unlikely to buy unprompted (80%)",
    }
]


@pytest.fixture
def published(runtime: Runtime, tmp_path: Path) -> Runtime:
    with transaction(runtime.engine) as conn:
        catalog.import_items(conn, catalog_table())
        publish(
            conn,
            write_build(
                tmp_path / "b1",
                lists=LISTS,
                similar=SIMILAR,
                fallbacks=FALLBACKS,
                profiles=PROFILES,
                coupons=COUPONS,
            ),
        )
    return runtime


def _items(response: Any) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.text
    return [(i["item_id"], i["source"]) for i in response.json()["items"]]


def _event(member: str, item: str, kind: str = "view", *, ago: float = 5.0) -> dict[str, Any]:
    ts = datetime.now(UTC) - timedelta(seconds=ago)
    return {
        "event_id": f"{member}-{item}-{kind}-{ago}",
        "member_id": member,
        "type": kind,
        "ts": ts.isoformat(),
        "item_id": item,
    }


def test_a_member_gets_their_published_list_with_reasons(
    client: TestClient, auth: Auth, published: Runtime
) -> None:
    response = client.get("/v1/members/m1/recommendations?n=3", headers=auth(Role.platform))

    body = response.json()
    assert response.status_code == 200
    assert (body["model_id"], body["context"], body["personalized"]) == ("b1", "home", True)
    assert [(i["rank"], i["item_id"], i["score"], i["reason"]) for i in body["items"]] == [
        (1, "diaper-1", 1.0, "bought every 18 days"),
        # Scores scaled to 0.1..1 by the member's own list (9 -> 1, 1.5 -> 0.1).
        (2, "milk-1", 0.64, "bought every 25 days"),
        (3, "toy-1", 0.28, "people who bought 纸尿裤 L also bought it"),
    ]
    assert body["items"][0]["title"] == "纸尿裤 L"


def test_a_longer_list_is_filled_from_the_members_fallbacks_after_their_own(
    client: TestClient, auth: Auth, published: Runtime
) -> None:
    items = _items(client.get("/v1/members/m1/recommendations?n=7", headers=auth(Role.operator)))

    # Own list, then popular in the member's region and category, then new, then all.
    assert items == [
        ("diaper-1", "repeat"),
        ("milk-1", "repeat"),
        ("toy-1", "cooc"),
        ("snack-1", "popular"),
        ("diaper-2", "fallback"),
        ("new-1", "fallback"),
        ("phone-1", "fallback"),
    ]


def test_an_unknown_member_gets_a_non_empty_fallback_list(
    client: TestClient, auth: Auth, published: Runtime
) -> None:
    response = client.get("/v1/members/nobody/recommendations?n=5", headers=auth(Role.platform))

    body = response.json()
    assert (body["personalized"], body["model_id"]) == (False, "b1")
    assert [i["item_id"] for i in body["items"]] == ["new-1", "snack-1", "phone-1"]
    assert {i["source"] for i in body["items"]} == {"fallback"}


def test_a_view_just_now_lifts_the_viewed_items_neighbours_to_the_top(
    client: TestClient, auth: Auth, published: Runtime
) -> None:
    before = _items(client.get("/v1/members/m1/recommendations?n=4", headers=auth(Role.platform)))
    sent = client.post(
        "/v1/events", json={"events": [_event("m1", "phone-1")]}, headers=auth(Role.platform)
    )
    after = client.get("/v1/members/m1/recommendations?n=4", headers=auth(Role.platform))

    assert sent.json()["accepted"] == 1
    assert "charger-1" not in [i for i, _ in before]
    top = after.json()["items"]
    # Lifts 1.5 x similarity / 0.9, decayed 5 s: charger 1.49, case 1.33 pass the member's
    # best own item (1.0); earphone (0.75) passes milk (0.67).
    assert [(i["item_id"], i["source"]) for i in top] == [
        ("charger-1", "session"),
        ("case-1", "session"),
        ("diaper-1", "repeat"),
        ("earphone-1", "session"),
    ]
    assert top[0]["reason"] == "related to 手机 Pro you just looked at"
    assert top[0]["score"] == pytest.approx(1.5 * 0.5 ** (5 / 600), abs=1e-3)


def test_an_item_page_context_lifts_its_neighbours_and_hides_the_item_itself(
    client: TestClient, auth: Auth, published: Runtime
) -> None:
    items = _items(
        client.get(
            "/v1/members/m1/recommendations?n=3&context=item:phone-1", headers=auth(Role.platform)
        )
    )

    assert items == [("charger-1", "session"), ("case-1", "session"), ("earphone-1", "session")]


def test_category_filter_keeps_items_of_the_category_or_below(
    client: TestClient, auth: Auth, published: Runtime
) -> None:
    items = _items(
        client.get("/v1/members/m1/recommendations?n=3&category=c02", headers=auth(Role.platform))
    )

    # m1's own list has no 数码 item: the category's popular list answers.
    assert items == [("phone-2", "fallback"), ("earphone-1", "fallback"), ("phone-1", "fallback")]
    # (category:c02 gives phone-2 and earphone-1; new-1 and snack-1 are not in it.)


def test_an_item_out_of_stock_or_hidden_disappears_at_once(
    client: TestClient, auth: Auth, published: Runtime
) -> None:
    put = client.put(
        "/v1/items/diaper-1",
        json={"title": "纸尿裤 L", "category_id": "c0102", "in_stock": False, "consumable": True},
        headers=auth(Role.platform),
    )
    hide = client.put(
        "/v1/items/milk-1", json={"category_id": "c0101", "hidden": True}, headers=auth(Role.admin)
    )
    items = _items(client.get("/v1/members/m1/recommendations?n=2", headers=auth(Role.platform)))

    assert put.status_code == 200 and put.json()["in_stock"] is False
    assert hide.json()["hidden"] is True
    assert items == [("toy-1", "cooc"), ("snack-1", "popular")]


def test_bad_parameters_are_refused_with_a_code(
    client: TestClient, auth: Auth, published: Runtime
) -> None:
    headers = auth(Role.platform)
    bad_context = client.get("/v1/members/m1/recommendations?context=checkout", headers=headers)
    bad_n = client.get("/v1/members/m1/recommendations?n=0", headers=headers)
    too_many = client.get("/v1/members/m1/recommendations?n=101", headers=headers)
    bad_item = client.put("/v1/items/x", json={"price": -1}, headers=headers)

    assert (bad_context.status_code, bad_context.json()["code"]) == (422, "invalid_context")
    assert "home, cart or item:" in bad_context.json()["message"]
    assert (bad_n.status_code, bad_n.json()["code"]) == (422, "invalid_request")
    assert too_many.status_code == 422
    assert (bad_item.status_code, bad_item.json()["code"]) == (422, "invalid_request")


def test_similar_items_are_served_in_order_and_skip_unavailable_ones(
    client: TestClient, auth: Auth, published: Runtime
) -> None:
    client.put(
        "/v1/items/case-1", json={"category_id": "c0207", "hidden": True}, headers=auth(Role.admin)
    )
    similar = client.get("/v1/items/phone-1/similar?n=2", headers=auth(Role.service))
    unknown = client.get("/v1/items/nope/similar", headers=auth(Role.service))
    no_neighbours = client.get("/v1/items/earphone-1/similar?n=2", headers=auth(Role.service))

    assert [(i["rank"], i["item_id"], i["score"]) for i in similar.json()["items"]] == [
        (1, "charger-1", 0.9),
        (2, "earphone-1", 0.45),
    ]
    assert similar.json()["fallback"] is False
    assert (unknown.status_code, unknown.json()["code"]) == (404, "item_not_found")
    # No learned neighbours: the popular items of its category.
    assert no_neighbours.json()["fallback"] is True
    assert [i["item_id"] for i in no_neighbours.json()["items"]] == ["snack-1", "phone-1"]


def test_coupon_suggestions_carry_the_best_hour(
    client: TestClient, auth: Auth, published: Runtime
) -> None:
    mine = client.get("/v1/members/m1/coupons/suggested", headers=auth(Role.operator)).json()
    none = client.get("/v1/members/m2/coupons/suggested", headers=auth(Role.operator)).json()

    assert (mine["best_hour"], mine["build_id"]) == (21, "b1")
    assert [(s["campaign"], s["template"], s["value"]) for s in mine["suggestions"]] == [
        ("winback", "welcome_10", 1000)
    ]
    assert none == {
        "member_id": "m2",
        "build_id": None,
        "best_hour": None,
        "suggestions": [],
        "channels": [],  # no marketing consent (see tests/privacy/test_consent.py)
    }


def test_items_are_created_replaced_and_replayed_without_change(
    client: TestClient, auth: Auth, runtime: Runtime
) -> None:
    body = {"title": "新品", "category_id": "c01", "price": 1990, "rebuy_days": 14}
    first = client.put("/v1/items/i1", json=body, headers=auth(Role.platform))
    again = client.put("/v1/items/i1", json=body, headers=auth(Role.platform))
    read = client.get("/v1/items/i1", headers=auth(Role.analyst))
    missing = client.get("/v1/items/i2", headers=auth(Role.analyst))

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() == read.json()
    assert (read.json()["price"], read.json()["in_stock"], read.json()["hidden"]) == (
        1990,
        True,
        False,
    )
    assert (missing.status_code, missing.json()["code"]) == (404, "item_not_found")


def test_a_model_worse_than_the_serving_one_is_rejected_and_the_old_lists_keep_serving(
    runtime: Runtime, tmp_path: Path, client: TestClient, auth: Auth, published: Runtime
) -> None:
    worse = write_build(
        tmp_path / "b2",
        build_id="b2",
        lists={"m1": [("snack-2", 1.0, "worse", "popular")]},
        metrics={"recall@10": 0.19, "ndcg@10": 0.3},
    )
    better = write_build(
        tmp_path / "b3",
        build_id="b3",
        lists={"m1": [("snack-2", 1.0, "better", "popular")]},
        metrics={"recall@10": 0.2, "ndcg@10": 0.1},
    )
    with transaction(runtime.engine) as conn:
        rejected = publish(conn, worse)
    served = _items(client.get("/v1/members/m1/recommendations?n=1", headers=auth(Role.platform)))
    with transaction(runtime.engine) as conn:
        accepted = publish(conn, better)
        models = {
            m: repository.get_model(conn, m)["status"]  # type: ignore[index]
            for m in ("b1", "b2", "b3")
        }
    now = _items(client.get("/v1/members/m1/recommendations?n=1", headers=auth(Role.platform)))

    assert (rejected.published, rejected.members) == (False, 0)
    assert rejected.decision == "kept the serving model: recall@10 0.1900 < serving 0.2000"
    assert served == [("diaper-1", "repeat")]
    assert accepted.published and accepted.members == 1
    assert models == {"b1": "retired", "b2": "rejected", "b3": "serving"}
    assert now == [("snack-2", "popular")]


def test_models_say_whether_the_ranker_or_the_members_own_history_orders_the_lists(
    runtime: Runtime, tmp_path: Path, client: TestClient, auth: Auth, published: Runtime
) -> None:
    decision = (
        "the ranker (recall@10 0.1800, ndcg@10 0.1000) did not beat the best own-history "
        "baseline (own most frequent recall@10 0.2100, ndcg@10 0.1200); published the learned "
        "own-history blend (recall@10 0.2200, ndcg@10 0.1300)"
    )
    own = write_build(
        tmp_path / "b2",
        build_id="b2",
        lists={"m1": [("milk-1", 1.0, "bought 3 times", "repeat")]},
        metrics={
            "recall@10": 0.22,
            "ndcg@10": 0.13,
            "method": "own_history",
            "published_method": "policy: own-history blend",
            "decision": decision,
            "evaluation": [
                {"method": "blend (lambdarank)", "k": 10, "recall": 0.18, "ndcg": 0.1},
                {"method": "baseline: own most frequent", "k": 10, "recall": 0.21, "ndcg": 0.12},
            ],
        },
    )
    with transaction(runtime.engine) as conn:
        publish(conn, own)
    response = client.get("/v1/recommendations/models?limit=5", headers=auth(Role.analyst))
    refused = client.get("/v1/recommendations/models", headers=auth(Role.platform))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["serving"] == "b2"
    assert [(m["model_id"], m["status"], m["method"]) for m in body["models"]] == [
        ("b2", "serving", "own_history"),
        ("b1", "retired", "ranker"),
    ]
    latest = body["models"][0]
    assert latest["published_method"] == "policy: own-history blend"
    assert latest["method_decision"] == decision
    assert latest["metrics"] == {"recall@10": 0.22, "ndcg@10": 0.13}
    assert latest["baselines"] == {"own most frequent": {"recall@10": 0.21, "ndcg@10": 0.12}}
    assert refused.status_code == 403


def test_export_writes_every_members_list_without_unavailable_items(
    runtime: Runtime, tmp_path: Path, published: Runtime
) -> None:
    out = tmp_path / "recs.parquet"
    with transaction(runtime.engine) as conn:
        catalog.put_item(
            conn, "milk-1", ItemIn(category_id="c0101", consumable=True, in_stock=False)
        )
        counts = export.export_lists(conn, out, n=2)

    rows = pq.read_table(out).to_pylist()
    assert counts == (1, 2)
    assert [(r["member_id"], r["rank"], r["item_id"], r["reason"]) for r in rows] == [
        ("m1", 1, "diaper-1", "bought every 18 days"),
        ("m1", 2, "toy-1", "people who bought 纸尿裤 L also bought it"),
    ]
    assert pq.read_schema(out).names == ["member_id", "rank", "item_id", "score", "reason"]


def test_items_import_command_loads_a_csv_and_refuses_a_bad_file(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = runtime.settings
    monkeypatch.setenv("MEMBERWISE_HOME", str(settings.home))
    monkeypatch.setenv("MEMBERWISE_DATABASE_URL", settings.db_url)
    good = tmp_path / "items.csv"
    good.write_text(
        "item_id,title,category_id,price,rebuy_days\na,纸尿裤,c0102,12000,18\nb,手机,c0201,350000,\n"
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,title\na,x\na,y\n")

    first = CliRunner().invoke(app, ["items", "import", str(good)])
    again = CliRunner().invoke(app, ["items", "import", str(good)])
    refused = CliRunner().invoke(app, ["items", "import", str(bad)])

    assert first.exit_code == 0 and "2 created, 0 updated, 0 unchanged" in first.output
    assert "0 created, 0 updated, 2 unchanged" in again.output
    assert refused.exit_code == 1 and "invalid_items" in refused.output
    with transaction(runtime.engine) as conn:
        a = catalog.get_item(conn, "a")
        b = catalog.get_item(conn, "b")
    assert (a.consumable, a.rebuy_days, a.price, a.in_stock) == (True, 18, 12000, True)
    assert (b.consumable, b.rebuy_days) == (False, None)
