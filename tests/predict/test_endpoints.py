"""Published predictions over HTTP: a hand-made build's predictions published and read back
(fen, nulls, versions), and the whole path on a small demo platform: build -> every member
predicted, nothing NaN -> the endpoints answer."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from memberwise.demo.generator import generate_platform
from memberwise.events.bulk import ingest_paths
from memberwise.jobs.build import run_build
from memberwise.kit.db import transaction
from memberwise.predict import service
from memberwise.predict.scoring import PREDICTIONS_SCHEMA
from memberwise.predict.tables import member_predictions, prediction_models
from memberwise.privacy.schemas import Role
from memberwise.program.service import load_program, parse_program
from memberwise.runtime import Runtime

Auth = Callable[[Role], dict[str, str]]
AS_OF = datetime(2026, 11, 20, 16, tzinfo=UTC)
DEMO_PROGRAM = Path(__file__).resolve().parents[2] / "programs" / "demo.yaml"


def _row(member_id: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(PREDICTIONS_SCHEMA.names)
    row.update(
        member_id=member_id, repeat_purchases=0, purchase_days=0, best_hour=20, best_weekday=6
    )
    row.update(values)
    return row


def write_predictions(root: Path, version: str, rows: list[dict[str, Any]]) -> Path:
    """A build directory holding only what the predictions publisher reads."""
    directory = root / version
    directory.mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(rows, schema=PREDICTIONS_SCHEMA), directory / "predictions.parquet"
    )
    summary = {
        "model_version": version,
        "as_of": AS_OF.isoformat(),
        "fitted_at": AS_OF.isoformat(),
        "members": len(rows),
        "customers": 2,
        "repeat_buyers": 1,
        "unit": "days",
        "currency": "CNY",
        "clv": {"months": 12, "discount_rate": 0.1, "margin": 0.3},
        "bgnbd": {"status": "fitted", "params": {"r": 0.24, "alpha": 4.4, "a": 0.79, "b": 2.4},
                  "log_likelihood": -9582.4, "penalizer": 0.0, "diagnostics": {"iterations": 12}},
        "gammagamma": {"status": "not_fitted", "code": "unbounded_spend", "message": "q <= 1"},
        "churn": {"status": "fitted", "horizon_days": 90, "features_as_of": "2026-08-22",
                  "labels": "no purchase in (...]", "auc": 0.81, "brier": 0.18,
                  "calibration": [{"low": 0.0, "high": 0.1, "members": 3, "mean_predicted": 0.05,
                                   "observed_rate": 0.0}],
                  "importance": [{"field": "active_days_30d", "gain": 10.0, "share": 1.0}]},
    }  # fmt: skip
    (directory / "predictions.json").write_text(json.dumps(summary))
    return directory


ROWS = [
    _row(
        "m1",
        clv_12m=123.456,
        p_alive=0.9,
        churn_risk=0.2,
        expected_purchases_90d=1.5,
        expected_spend=88.8,
        repeat_purchases=3,
        purchase_days=4,
        purchase_interval_days=12.5,
        next_purchase_date=date(2026, 11, 28),
        best_hour=21,
        best_weekday=7,
    ),
    _row("m2", clv_12m=0.0, p_alive=1.0, churn_risk=0.7, expected_purchases_90d=0.0),
    _row("m3"),  # every model failed for this build: nulls, not NaN
]


@pytest.fixture
def published(runtime: Runtime) -> None:
    with transaction(runtime.engine) as conn:
        service.publish_build(conn, write_predictions(runtime.settings.home, "b1", ROWS))


@pytest.mark.usefixtures("published")
def test_a_members_predictions_over_http(client: TestClient, auth: Auth) -> None:
    response = client.get("/v1/members/m1/predictions", headers=auth(Role.service))

    assert response.status_code == 200
    body = response.json()
    assert body.pop("published_at")
    assert body == {
        "member_id": "m1",
        "model_version": "b1",
        "as_of": "2026-11-20T16:00:00Z",
        "clv_12m_fen": 12346,
        "p_alive": 0.9,
        "churn_risk": 0.2,
        "expected_purchases_90d": 1.5,
        "expected_spend_fen": 8880,
        "repeat_purchases": 3,
        "purchase_days": 4,
        "purchase_interval_days": 12.5,
        "next_purchase_date": "2026-11-28",
        "best_hour": 21,
        "best_weekday": 7,
    }
    empty = client.get("/v1/members/m3/predictions", headers=auth(Role.platform)).json()
    assert (empty["clv_12m_fen"], empty["p_alive"], empty["churn_risk"]) == (None, None, None)
    missing = client.get("/v1/members/nobody/predictions", headers=auth(Role.operator))
    assert missing.status_code == 404
    assert missing.json()["code"] == "predictions_not_found"
    assert "no published predictions for member 'nobody'" in missing.json()["message"]


@pytest.mark.usefixtures("published")
def test_the_models_diagnostics_over_http(client: TestClient, auth: Auth) -> None:
    body = client.get("/v1/predictions/models", headers=auth(Role.analyst)).json()

    assert body["model_version"] == "b1" and body["members"] == 3
    assert body["bgnbd"]["params"] == {"r": 0.24, "alpha": 4.4, "a": 0.79, "b": 2.4}
    assert body["bgnbd"]["log_likelihood"] == -9582.4
    assert (body["gammagamma"]["status"], body["gammagamma"]["code"]) == (
        "not_fitted",
        "unbounded_spend",
    )
    assert body["churn"]["auc"] == 0.81 and body["churn"]["horizon_days"] == 90
    assert body["churn"]["importance"] == [{"field": "active_days_30d", "gain": 10.0, "share": 1.0}]


def test_before_any_publish_the_models_are_null(client: TestClient, auth: Auth) -> None:
    body = client.get("/v1/predictions/models", headers=auth(Role.operator)).json()
    assert body["model_version"] is None and body["churn"] is None


def test_a_new_version_replaces_the_old_and_republishing_changes_nothing(runtime: Runtime) -> None:
    home = runtime.settings.home
    first = write_predictions(home, "b1", ROWS)
    second = write_predictions(home, "b2", [_row("m2", clv_12m=5.0), _row("m9", clv_12m=1.0)])
    with transaction(runtime.engine) as conn:
        assert service.publish_build(conn, first) == 3
        assert service.publish_build(conn, first) == 3
        assert service.publish_build(conn, second) == 2
        rows = conn.execute(
            select(member_predictions.c.member_id, member_predictions.c.model_version,
                   member_predictions.c.clv_12m_fen).order_by(member_predictions.c.member_id)
        ).all()  # fmt: skip
        statuses = dict(
            conn.execute(
                select(prediction_models.c.model_version, prediction_models.c.status)
            ).all()
        )
    assert [tuple(r) for r in rows] == [("m2", "b2", 500), ("m9", "b2", 100)]
    assert statuses == {"b1": "superseded", "b2": "published"}


def test_a_build_without_predictions_is_refused_and_writes_nothing(runtime: Runtime) -> None:
    empty = runtime.settings.home / "empty"
    empty.mkdir(parents=True)
    with transaction(runtime.engine) as conn:
        with pytest.raises(service.InvalidPredictions, match=r"missing predictions\.json"):
            service.publish_build(conn, empty)
        assert conn.execute(select(func.count()).select_from(prediction_models)).scalar() == 0


# --- the whole path on a small demo platform ------------------------------------------------


@pytest.fixture
def demo(runtime: Runtime, tmp_path: Path) -> Runtime:
    """400 members over 150 days: enough history for the 90-day churn time split."""
    generate_platform(
        tmp_path / "demo", members=400, days=150, end=date(2026, 11, 21),
        events_per_member=60.0, workers=1,
    )  # fmt: skip
    ingest_paths([tmp_path / "demo" / "events"], runtime.lake, deadletter_dir=tmp_path / "dead")
    return runtime


def test_the_demo_build_predicts_every_member_and_the_api_serves_them(
    demo: Runtime, client: TestClient, auth: Auth
) -> None:
    program = load_program(DEMO_PROGRAM)

    result = run_build(demo, program, as_of=AS_OF)

    directory = result.directory
    predictions = pq.read_table(directory / "predictions.parquet")
    profiles = pq.read_table(directory / "profiles.parquet")
    assert predictions.num_rows == profiles.num_rows == result.members > 300
    for name in ("clv_12m", "p_alive", "churn_risk", "expected_purchases_90d"):
        values = predictions[name].to_pylist()
        assert None not in values and all(math.isfinite(v) and v >= 0 for v in values), name
    # The profiles the rules after the stage read carry the same values.
    by_member = {r["member_id"]: r for r in predictions.to_pylist()}
    for row in profiles.select(["member_id", "clv_12m", "p_alive", "churn_risk"]).to_pylist():
        expected = by_member[row["member_id"]]
        assert row == {k: expected[k] for k in row}
    manifest = json.loads((directory / "build.json").read_text())
    section = manifest["predictions"]
    assert section["model_version"] == result.build_id
    assert section["bgnbd"]["status"] == "fitted" and section["churn"]["status"] == "fitted"
    assert 0.5 < section["churn"]["auc"] <= 1
    assert sorted(p.name for p in (directory / "models").iterdir()) == [
        "bgnbd.json",
        "churn.json",
        "churn.txt",
        "gammagamma.json",
    ]
    win_back = next(t for t in manifest["tags"] if t["name"] == "win_back")
    assert "churn_risk" in win_back["rule"] and "clv_12m" in win_back["rule"]

    member = predictions["member_id"][0].as_py()
    answer = client.get(f"/v1/members/{member}/predictions", headers=auth(Role.operator))
    assert answer.status_code == 200
    body = answer.json()
    assert body["model_version"] == result.build_id and body["as_of"] == "2026-11-20T16:00:00Z"
    assert body["clv_12m_fen"] == round(by_member[member]["clv_12m"] * 100)
    profile = client.get(f"/v1/members/{member}/profile", headers=auth(Role.operator)).json()
    assert profile["fields"]["churn_risk"] == pytest.approx(body["churn_risk"])
    models = client.get("/v1/predictions/models", headers=auth(Role.admin)).json()
    assert models["churn"]["auc"] == section["churn"]["auc"]
    assert models["churn"]["importance"]

    # Run alone, the stage refits on the latest profiles and their clock, and leaves the earlier
    # build's (hard-linked) profiles file as it was.
    before = pq.read_table(directory / "profiles.parquet")
    again = run_build(demo, program, only=["predictions"])
    assert again.as_of == AS_OF
    assert pq.read_table(directory / "profiles.parquet").equals(before)
    assert pq.read_table(again.directory / "predictions.parquet").equals(predictions)
    assert pq.read_table(again.directory / "profiles.parquet").equals(before)


def test_a_rule_may_use_the_predicted_fields() -> None:
    program = parse_program(
        "name: t\ntags:\n  valuable_at_risk: clv_12m >= 100 and churn_risk >= 0.6 and p_alive < 1\n"
    )
    assert program.tag_rules() == {
        "valuable_at_risk": "clv_12m >= 100 and churn_risk >= 0.6 and p_alive < 1"
    }
