"""The predictions stage's core on hand-made members: every member scored, the models' own
numbers passed through, members without purchases given sensible values, degenerate data
turned into nulls with a reason (never NaN), and the predicted fields put into the profiles."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from memberwise.predict.clv import customer_lifetime_value
from memberwise.predict.fitting import PERIODS_PER_MONTH
from memberwise.predict.rfm import rfm_summary
from memberwise.predict.scoring import (
    PREDICTIONS_SCHEMA,
    churn_labels,
    predict_members,
    with_predictions,
)
from memberwise.predict.stage import PURCHASES_SCHEMA
from memberwise.profiles.fields import PREDICTED_FIELDS
from memberwise.program.predictions import PredictionSettings

AS_OF = datetime(2024, 6, 30, 16, tzinfo=UTC)  # midnight, 1 July, in Shanghai
TZ = "Asia/Shanghai"
SETTINGS = PredictionSettings(margin=0.25, discount_rate=0.1, churn_horizon_days=60)


def purchases(customers: int = 400, seed: int = 3) -> pa.Table:
    """Customers buying as Poisson processes at different rates over 180 days, some stopping."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, datetime, float]] = []
    start = AS_OF - timedelta(days=180)
    for i in range(customers):
        rate = rng.gamma(0.8, 1 / 20)  # purchases a day
        first = rng.uniform(0, 150)
        stop = first + rng.exponential(120)
        t = first
        value = rng.gamma(4, 25)
        while t < min(stop, 180):
            rows.append(
                (f"c{i:04d}", start + timedelta(days=t), round(value * rng.gamma(8, 1 / 8), 2))
            )
            t += rng.exponential(1 / rate)
    return pa.table(
        {
            "member_id": [r[0] for r in rows],
            "ts": [r[1] for r in rows],
            "amount": [r[2] for r in rows],
        },
        schema=PURCHASES_SCHEMA,
    )


def profiles_of(ids: list[str]) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "member_id": pa.array(ids, pa.string()),
            "peak_hour": pa.array([i % 24 for i in range(n)], pa.int32()),
            "peak_weekday": pa.array([1 + i % 7 for i in range(n)], pa.int32()),
            "recency_days": pa.array([i % 90 for i in range(n)], pa.int64()),
            **{name: pa.nulls(n, pa.float64()) for name in PREDICTED_FIELDS},
        }
    )


@pytest.fixture(scope="module")
def bought() -> pa.Table:
    return purchases()


def test_every_member_is_scored_with_the_models_own_numbers(bought: pa.Table) -> None:
    ids = [*sorted(set(bought["member_id"].to_pylist())), "never"]
    profiles = profiles_of(ids)

    made = predict_members(profiles, bought, None, as_of=AS_OF, timezone=TZ, settings=SETTINGS)

    table = made.table
    assert table.schema == PREDICTIONS_SCHEMA
    assert table["member_id"].to_pylist() == ids
    assert made.bgnbd is not None and made.gammagamma is not None
    summary = rfm_summary(
        bought, customer_col="member_id", datetime_col="ts", value_col="amount",
        calibration_end=date(2024, 7, 1), freq="D", timezone=TZ,
    )  # fmt: skip
    x, t_x, age = (summary[c].to_numpy().astype(float) for c in ("frequency", "recency", "T"))
    m = summary["monetary_value"].to_numpy()
    clv = customer_lifetime_value(
        made.bgnbd, made.gammagamma, x, t_x, age, m, months=12, discount_rate=0.1,
        margin=0.25, periods_per_month=PERIODS_PER_MONTH["D"],
    )  # fmt: skip
    rows = table.slice(0, len(ids) - 1)
    assert rows["clv_12m"].to_numpy() == pytest.approx(clv)
    assert rows["p_alive"].to_numpy() == pytest.approx(made.bgnbd.probability_alive(x, t_x, age))
    assert rows["expected_purchases_90d"].to_numpy() == pytest.approx(
        made.bgnbd.conditional_expected_purchases(90, x, t_x, age)
    )
    assert rows["repeat_purchases"].to_pylist() == x.astype(int).tolist()
    # The member who never bought: no repeat purchases to value, alive by the model's assumption.
    never = table.slice(len(ids) - 1).to_pylist()[0]
    assert (never["clv_12m"], never["p_alive"], never["expected_purchases_90d"]) == (0.0, 1.0, 0.0)
    assert (never["purchase_days"], never["repeat_purchases"]) == (0, 0)
    assert never["next_purchase_date"] is None and never["expected_spend"] is None
    for name in ("clv_12m", "p_alive", "expected_purchases_90d", "expected_spend"):
        values = np.array([v for v in table[name].to_pylist() if v is not None])
        assert np.isfinite(values).all() and (values >= 0).all(), name
    # No snapshot: no churn model, a null risk and the reason.
    assert table["churn_risk"].null_count == len(ids)
    churn = made.diagnostics["churn"]
    assert (churn["status"], churn["code"]) == ("not_fitted", "insufficient_data")
    assert made.diagnostics["bgnbd"]["status"] == "fitted"
    assert made.diagnostics["customers"] == len(ids) - 1


def test_churn_labels_are_no_purchase_inside_the_horizon() -> None:
    table = pa.table(
        {
            "member_id": ["a", "a", "b", "c"],
            "ts": [AS_OF - timedelta(days=d) for d in (70, 10, 61, 0)],
            "amount": [1.0, 1.0, 1.0, 1.0],
        },
        schema=PURCHASES_SCHEMA,
    )  # fmt: skip

    labels = churn_labels(
        pa.array(["a", "b", "c", "d"]), table, after=AS_OF - timedelta(days=60), until=AS_OF
    )

    assert labels.tolist() == [0, 1, 0, 1]


def test_a_snapshot_gives_a_churn_risk_to_every_member(bought: pa.Table) -> None:
    ids = sorted(set(bought["member_id"].to_pylist()))
    cutoff = AS_OF - timedelta(days=60)
    before = bought.filter(
        pa.compute.less_equal(bought["ts"], pa.scalar(cutoff, bought["ts"].type))
    )
    seen = sorted(set(before["member_id"].to_pylist()))
    last = dict(zip(before["member_id"].to_pylist(), before["ts"].to_pylist(), strict=True))
    snapshot = pa.table(
        {
            "member_id": seen,
            "recency_days": pa.array([(cutoff - last[m]).days for m in seen], pa.int64()),
        }
    )

    made = predict_members(
        profiles_of(ids), bought, snapshot, as_of=AS_OF, timezone=TZ, settings=SETTINGS
    )

    churn = made.diagnostics["churn"]
    assert churn["status"] == "fitted" and churn["members"] == len(seen)
    assert churn["horizon_days"] == 60 and churn["calibration_method"] == "platt"
    risk = made.table["churn_risk"].to_numpy()
    assert risk.shape == (len(ids),) and np.isfinite(risk).all()
    assert ((risk >= 0) & (risk <= 1)).all()
    assert 0.5 < churn["auc"] <= 1.0


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ([], "empty"),
        ([("a", 1), ("b", 2), ("c", 3)], "no_repeat_buyers"),  # one-time buyers only
    ],
)
def test_degenerate_data_gives_nulls_and_a_reason_never_nan(
    rows: list[tuple[str, int]], reason: str
) -> None:
    table = pa.table(
        {
            "member_id": [m for m, _ in rows],
            "ts": [AS_OF - timedelta(days=d) for _, d in rows],
            "amount": [10.0 for _ in rows],
        },
        schema=PURCHASES_SCHEMA,
    )

    made = predict_members(
        profiles_of(["a", "b", "c", "z"]), table, None, as_of=AS_OF, timezone=TZ, settings=SETTINGS
    )

    bgnbd = made.diagnostics["bgnbd"]
    assert (bgnbd["status"], bgnbd["code"], bgnbd["details"]) == (
        "not_fitted",
        "insufficient_data",
        {"reason": reason},
    )
    for name in ("clv_12m", "p_alive", "expected_purchases_90d"):
        assert made.table[name].null_count == 4, name
    assert made.table["best_hour"].to_pylist() == [0, 1, 2, 3]
    assert not any(
        isinstance(v, float) and math.isnan(v)
        for row in made.table.to_pylist()
        for v in row.values()
    )


def test_profiles_get_the_predicted_fields_by_member() -> None:
    profiles = profiles_of(["a", "b", "c"])
    predictions = pa.table(
        {
            "member_id": ["c", "a"],
            "clv_12m": [30.5, 10.0],
            "p_alive": [0.5, 1.0],
            "churn_risk": [0.9, None],
        }
    )

    filled = with_predictions(profiles, predictions)

    assert filled.column_names == profiles.column_names
    assert filled.select(["member_id", *PREDICTED_FIELDS]).to_pylist() == [
        {"member_id": "a", "clv_12m": 10.0, "p_alive": 1.0, "churn_risk": None},
        {"member_id": "b", "clv_12m": None, "p_alive": None, "churn_risk": None},
        {"member_id": "c", "clv_12m": 30.5, "p_alive": 0.5, "churn_risk": 0.9},
    ]


def test_spend_too_spread_for_a_finite_mean_still_values_every_buyer() -> None:
    """The demo platform's case: spend across members spreads so widely that no winsorizing
    gives Gamma-Gamma a finite mean (drawn from the model itself with q = 0.7); the fit is kept
    with q <= 1 and every buyer -- one-time buyers on their one purchase day -- gets a CLV."""
    rng = np.random.default_rng(5)
    rows: list[tuple[str, datetime, float]] = []
    start = AS_OF - timedelta(days=120)
    for i in range(3000):
        nu = rng.gamma(0.7, 1 / 15)
        for day in rng.choice(119, size=1 + rng.poisson(1.2), replace=False):
            when = start + timedelta(days=float(day) + 0.3)
            rows.append((f"h{i:04d}", when, round(max(rng.gamma(6, 1 / nu), 0.01), 2)))
    bought = pa.table(
        {
            "member_id": [r[0] for r in rows],
            "ts": [r[1] for r in rows],
            "amount": [r[2] for r in rows],
        },
        schema=PURCHASES_SCHEMA,
    )
    ids = sorted(set(bought["member_id"].to_pylist()))

    made = predict_members(
        profiles_of(ids), bought, None, as_of=AS_OF, timezone=TZ, settings=SETTINGS
    )

    gg = made.gammagamma
    assert gg is not None and not gg.bounded
    assert made.diagnostics["gammagamma"]["winsorized_at"] is None
    table = made.table
    assert table["clv_12m"].null_count == 0 and table["expected_spend"].null_count == 0
    clv = table["clv_12m"].to_numpy()
    assert np.isfinite(clv).all() and (clv > 0).all()
    # A one-time buyer: the model's expectation given their one purchase day.
    summary = rfm_summary(
        bought, customer_col="member_id", datetime_col="ts", value_col="amount",
        calibration_end=date(2024, 7, 1), freq="D", timezone=TZ,
    )  # fmt: skip
    once = [
        m
        for m, x in zip(
            summary["member_id"].to_pylist(), summary["frequency"].to_pylist(), strict=True
        )
        if x == 0
    ]
    member = once[0]
    spent = sum(r[2] for r in rows if r[0] == member)
    p, q, v = gg.params["p"], gg.params["q"], gg.params["v"]
    got = table.filter(pa.compute.equal(table["member_id"], member))["expected_spend"][0].as_py()
    assert got == pytest.approx(p * (v + spent) / (p + q - 1))
