"""Churn propensity: the split, the calibration table, the fit on data with a known signal,
deterministic training, save/load without pickle, and refusals on data too thin to learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from memberwise.predict.churn import (
    FEATURES,
    Calibrator,
    ChurnModel,
    ChurnModelFileError,
    calibration_table,
    feature_matrix,
    fit_calibrator,
    fit_churn,
    split_parts,
)
from memberwise.predict.fitting import InsufficientData
from memberwise.profiles.fields import PREDICTED_FIELDS

#: Fewer boosting rounds than the build's: the tests check behaviour, not the last point of AUC.
ROUNDS = 80


def snapshot(n: int, seed: int = 1) -> tuple[pa.Table, np.ndarray]:
    """``n`` members whose churn depends on recency and activity (plus noise)."""
    rng = np.random.default_rng(seed)
    recency = rng.integers(0, 120, n)
    active = rng.integers(0, 30, n)
    noise = rng.normal(0, 1, n)
    labels = ((recency / 30 - active / 10 + noise) > 0.5).astype(np.int64)
    table = pa.table(
        {
            "member_id": [f"m{i:05d}" for i in range(n)],
            "recency_days": pa.array(recency, pa.int64()),
            "active_days_30d": pa.array(active, pa.int64()),
            "events_30d": pa.array(rng.integers(0, 100, n), pa.int64()),
        }
    )
    return table, labels


def test_the_features_are_the_number_fields_but_the_predictions() -> None:
    assert "recency_days" in FEATURES and "credit_stars" in FEATURES
    assert not set(PREDICTED_FIELDS) & set(FEATURES)
    assert "region" not in FEATURES and "first_seen" not in FEATURES


def test_split_gives_each_part_its_exact_share_and_depends_only_on_the_seed() -> None:
    parts = split_parts(10, seed=0)
    assert sorted(np.bincount(parts).tolist()) == [2, 2, 6]
    assert np.bincount(split_parts(1_001, seed=3)).tolist() == [601, 200, 200]
    assert (split_parts(500, seed=5) == split_parts(500, seed=5)).all()
    assert not (split_parts(500, seed=5) == split_parts(500, seed=6)).all()


def test_calibration_table_bins_by_predicted_probability() -> None:
    table = calibration_table(np.array([0.05, 0.15, 0.12, 0.95, 1.0]), np.array([0, 1, 0, 1, 1]))

    assert table == [
        {"low": 0.0, "high": 0.1, "members": 1, "mean_predicted": 0.05, "observed_rate": 0.0},
        {"low": 0.1, "high": 0.2, "members": 2, "mean_predicted": 0.135, "observed_rate": 0.5},
        {"low": 0.9, "high": 1.0, "members": 2, "mean_predicted": 0.975, "observed_rate": 1.0},
    ]


def test_platt_below_a_thousand_rows_isotonic_from_there() -> None:
    rng = np.random.default_rng(0)
    raw = rng.random(2_000)
    labels = (rng.random(2_000) < raw).astype(np.int64)

    small, large = fit_calibrator(raw[:999], labels[:999]), fit_calibrator(raw, labels)

    assert (small.method, large.method) == ("platt", "isotonic")
    # Both keep the order of the scores (monotone maps) and stay probabilities.
    grid = np.linspace(0, 1, 101)
    for calibrator in (small, large):
        mapped = calibrator(grid)
        assert (np.diff(mapped) >= -1e-12).all() and mapped.min() >= 0 and mapped.max() <= 1
    # Labels drawn with probability = raw: calibration is close to the identity.
    assert abs(float(large(np.array([0.5]))[0]) - 0.5) < 0.1
    assert Calibrator.from_dict(large.to_dict()) == large


def test_missing_columns_and_nulls_become_missing_values() -> None:
    table = pa.table({"member_id": ["a", "b"], "recency_days": pa.array([3, None], pa.int64())})

    matrix = feature_matrix(table, ("recency_days", "events_30d"))

    assert matrix.shape == (2, 2)
    assert matrix[0, 0] == 3 and np.isnan(matrix[1, 0]) and np.isnan(matrix[:, 1]).all()


def test_a_fit_finds_the_signal_reports_its_figures_and_explains_itself() -> None:
    table, labels = snapshot(1_500)

    model = fit_churn(table, labels, horizon_days=90, seed=0, rounds=ROUNDS)

    m = model.metrics
    assert m["members"] == 1_500 and m["parts"] == {"train": 900, "calibrate": 300, "test": 300}
    assert m["churn_rate"] == pytest.approx(labels.mean())
    assert m["calibration_method"] == "platt"
    assert m["auc"] > 0.8 and m["auc_uncalibrated"] > 0.8
    assert m["brier"] < m["brier_baseline"]
    assert sum(b["members"] for b in m["calibration"]) == 300
    importance = [f["field"] for f in m["importance"]]
    assert importance[:2] == ["recency_days", "active_days_30d"] or importance[:2] == [
        "active_days_30d",
        "recency_days",
    ]
    assert sum(f["share"] for f in m["importance"]) == pytest.approx(1.0)
    scores = model.predict(table)
    assert scores.shape == (1_500,) and np.isfinite(scores).all()
    assert scores.min() >= 0 and scores.max() <= 1
    # Higher recency, higher risk.
    assert scores[labels == 1].mean() > scores[labels == 0].mean() + 0.2


def test_training_is_deterministic_and_independent_of_row_order() -> None:
    table, labels = snapshot(800)
    order = np.random.default_rng(9).permutation(800)

    first = fit_churn(table, labels, horizon_days=90, seed=0, rounds=ROUNDS)
    again = fit_churn(table, labels, horizon_days=90, seed=0, rounds=ROUNDS)
    shuffled = fit_churn(table.take(order), labels[order], horizon_days=90, seed=0, rounds=ROUNDS)

    assert first.booster.model_to_string() == again.booster.model_to_string()
    assert np.array_equal(first.predict(table), shuffled.predict(table))
    assert first.metrics["auc"] == shuffled.metrics["auc"]


def test_save_and_load_round_trip_without_pickle(tmp_path: Path) -> None:
    table, labels = snapshot(800)
    model = fit_churn(table, labels, horizon_days=60, seed=0, rounds=ROUNDS)

    model.save(tmp_path / "churn.txt", tmp_path / "churn.json")
    loaded = ChurnModel.load(tmp_path / "churn.txt", tmp_path / "churn.json")

    assert (tmp_path / "churn.txt").read_text().startswith("tree")
    assert loaded.horizon_days == 60 and loaded.features == model.features
    assert np.array_equal(loaded.predict(table), model.predict(table))
    assert loaded.metrics["auc"] == model.metrics["auc"]


def test_a_damaged_model_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "churn.txt").write_text("not a model")
    (tmp_path / "churn.json").write_text('{"model": "churn", "format_version": 1}')

    with pytest.raises(ChurnModelFileError, match="cannot read the churn model"):
        ChurnModel.load(tmp_path / "churn.txt", tmp_path / "churn.json")


def test_too_few_members_or_a_single_class_are_refused_with_a_reason() -> None:
    table, labels = snapshot(99)
    with pytest.raises(InsufficientData, match="at least 100 members") as few:
        fit_churn(table, labels, horizon_days=90)
    table, _ = snapshot(500)
    with pytest.raises(InsufficientData, match="each needs at least 5") as one:
        fit_churn(table, np.zeros(500, dtype=np.int64), horizon_days=90)

    assert (few.value.code, few.value.details) == (
        "insufficient_data",
        {"reason": "too_few_members"},
    )
    assert one.value.details == {"reason": "one_class"}
