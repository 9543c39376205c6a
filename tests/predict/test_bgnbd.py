"""BG/NBD: the paper's CDNOW figures, lifetimes to 1e-4, degenerate data, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memberwise.kit.errors import InvalidRequest
from memberwise.predict.bgnbd import BetaGeoModel, simulate
from memberwise.predict.fitting import (
    FitNotConverged,
    InsufficientData,
    InvalidModelFile,
    InvalidSummary,
    ModelNotFitted,
)
from tests.predict import cdnow

PAPER = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}


@pytest.fixture(scope="module")
def model() -> BetaGeoModel:
    s = cdnow.summary()
    return BetaGeoModel().fit(s["frequency"], s["recency"], s["T"])


def test_cdnow_fit_reproduces_the_papers_parameters_and_log_likelihood(
    model: BetaGeoModel,
) -> None:
    for name, value in PAPER.items():
        assert cdnow.agrees_to_3_significant_figures(model.params[name], value), name
        assert model.params[name] == pytest.approx(value, abs=6e-4), name
    assert cdnow.agrees_to_3_significant_figures(model.log_likelihood, -9582.4)
    assert model.log_likelihood == pytest.approx(-9582.4, abs=0.05)
    assert model.diagnostics["customers"] == 2357


def test_cdnow_holdout_forecast_is_the_known_1653_against_1882_actual(
    model: BetaGeoModel,
) -> None:
    s = cdnow.summary()
    predicted = model.conditional_expected_purchases(
        s["duration_holdout"], s["frequency"], s["recency"], s["T"]
    )
    assert int(s["frequency_holdout"].sum()) == 1882
    assert predicted.sum() == pytest.approx(1653, abs=1)


def test_fit_and_predictions_match_lifetimes(model: BetaGeoModel) -> None:
    lifetimes = pytest.importorskip("lifetimes")
    s = cdnow.summary()
    x, t_x, T = s["frequency"], s["recency"], s["T"]
    theirs = lifetimes.BetaGeoFitter().fit(x, t_x, T)
    for name in PAPER:
        assert model.params[name] == pytest.approx(theirs.params_[name], rel=1e-4)
    # the same functions at the same parameters
    theirs.params_[:] = [model.params[k] for k in ("r", "alpha", "a", "b")]
    for t in (1.0, 39.0, 52.0):
        np.testing.assert_allclose(
            model.conditional_expected_purchases(t, x, t_x, T),
            theirs.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T),
            rtol=1e-4,
        )
        assert model.expected_purchases(t) == pytest.approx(
            theirs.expected_number_of_purchases_up_to_time(t), rel=1e-4
        )
    np.testing.assert_allclose(
        model.probability_alive(x, t_x, T),
        theirs.conditional_probability_alive(x, t_x, T),
        rtol=1e-4,
    )


def test_the_penalty_is_lifetimes_penalty() -> None:
    lifetimes = pytest.importorskip("lifetimes")
    s = cdnow.summary()
    x, t_x, T = s["frequency"], s["recency"], s["T"]
    ours = BetaGeoModel(penalizer=0.1).fit(x, t_x, T)
    theirs = lifetimes.BetaGeoFitter(penalizer_coef=0.1).fit(x, t_x, T)
    for name in PAPER:
        assert ours.params[name] == pytest.approx(theirs.params_[name], rel=1e-4)
    # the penalty shrinks the parameters; the reported likelihood is the unpenalized one
    plain = BetaGeoModel().fit(x, t_x, T)
    assert ours.params["b"] < plain.params["b"]
    assert ours.log_likelihood < plain.log_likelihood


def test_weights_give_the_same_fit_as_repeated_rows() -> None:
    x = np.array([0, 1, 2, 0, 5, 3, 1, 0])
    t_x = np.array([0, 4.0, 10.0, 0, 20.0, 15.0, 2.0, 0])
    T = np.array([30, 30, 25, 28, 30, 26, 29, 20.0])
    w = np.array([3, 1, 2, 1, 1, 2, 4, 1])
    weighted = BetaGeoModel(penalizer=0.01).fit(x, t_x, T, weights=w)
    repeated = BetaGeoModel(penalizer=0.01).fit(np.repeat(x, w), np.repeat(t_x, w), np.repeat(T, w))
    for name in PAPER:
        assert weighted.params[name] == pytest.approx(repeated.params[name], rel=1e-6)
    assert weighted.log_likelihood == pytest.approx(repeated.log_likelihood, rel=1e-9)
    assert weighted.diagnostics["distinct_rows"] == 8
    assert repeated.diagnostics["distinct_rows"] == 8


def test_simulated_customers_give_back_the_parameters() -> None:
    rng = np.random.default_rng(7)
    x, t_x, T = simulate(PAPER, rng.uniform(27, 39, 50_000), seed=rng)
    fitted = BetaGeoModel().fit(x, t_x, T)
    for name, value in PAPER.items():
        assert fitted.params[name] == pytest.approx(value, rel=0.1), name


def test_probability_alive_is_one_without_repeat_purchases_and_falls_with_silence(
    model: BetaGeoModel,
) -> None:
    p = model.probability_alive([0, 3, 3, 3], [0, 30, 20, 5], [39, 39, 39, 39])
    assert p[0] == 1.0
    assert 1 > p[1] > p[2] > p[3] > 0


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "reason"),
    [
        ([0, 0, 0, 0], [0, 0, 0, 0], [10, 20, 5, 39], "no_repeat_buyers"),
        ([3], [10], [20], "single_customer"),
        ([1, 2], [0, 0], [0, 0], "empty_calibration_window"),
        ([], [], [], "empty"),
    ],
)
def test_degenerate_data_is_refused_with_a_code_and_a_sentence(
    frequency: list[float], recency: list[float], T: list[float], reason: str
) -> None:
    with pytest.raises(InsufficientData) as refused:
        BetaGeoModel().fit(frequency, recency, T)
    assert isinstance(refused.value, InvalidRequest)
    assert refused.value.code == "insufficient_data"
    assert refused.value.to_dict()["details"] == {"reason": reason}
    assert refused.value.message.endswith(".")


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "says"),
    [
        ([1, 2], [5, 30], [20, 20], "recency must not exceed T"),
        ([1, np.nan], [5, 3], [20, 20], "NaN"),
        ([1.5, 2], [5, 3], [20, 20], "whole number"),
        ([0, 2], [5, 3], [20, 20], "recency must be 0"),
        ([1, 2], [5, 3], [20, 20, 4], "same length"),
    ],
)
def test_malformed_summaries_are_refused(
    frequency: list[float], recency: list[float], T: list[float], says: str
) -> None:
    with pytest.raises(InvalidSummary, match=says):
        BetaGeoModel().fit(frequency, recency, T)


def test_predictions_are_finite_at_the_extremes(model: BetaGeoModel) -> None:
    x = np.array([0, 1, 5000, 5000, 300, 1])
    t_x = np.array([0, 0.0, 1e5, 1.0, 39.0, 1e-9])
    T = np.array([0, 1e6, 1e5, 1e5, 39.0, 1e6])
    for t in (0.0, 1e-9, 52.0, 1e6):
        values = model.conditional_expected_purchases(t, x, t_x, T)
        assert np.isfinite(values).all() and (values >= 0).all()
    assert np.isfinite(model.probability_alive(x, t_x, T)).all()
    assert model.conditional_expected_purchases(0.0, x, t_x, T).tolist() == [0.0] * 6
    # a = 1 exactly is a removable singularity of the expectation
    near = BetaGeoModel.from_dict({**model.to_dict(), "params": {**model.params, "a": 1.0}})
    assert np.isfinite(near.conditional_expected_purchases(39, x, t_x, T)).all()
    assert near.expected_purchases(39) == pytest.approx(
        BetaGeoModel.from_dict(
            {**model.to_dict(), "params": {**model.params, "a": 1.0001}}
        ).expected_purchases(39),
        rel=1e-3,
    )


def test_save_and_load_round_trip(model: BetaGeoModel, tmp_path: Path) -> None:
    path = tmp_path / "bgnbd.json"
    model.save(path)
    loaded = BetaGeoModel.load(path)
    assert loaded.params == model.params
    assert loaded.log_likelihood == model.log_likelihood
    assert loaded.penalizer == model.penalizer
    s = cdnow.summary()
    np.testing.assert_array_equal(
        loaded.conditional_expected_purchases(10, s["frequency"], s["recency"], s["T"]),
        model.conditional_expected_purchases(10, s["frequency"], s["recency"], s["T"]),
    )
    assert path.read_text().startswith("{")  # JSON, never pickle


def test_loading_something_else_is_refused(model: BetaGeoModel, tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFile, match="Expected a saved bgnbd model"):
        BetaGeoModel.from_dict({**model.to_dict(), "model": "paretonbd"})
    with pytest.raises(InvalidModelFile, match="positive number"):
        BetaGeoModel.from_dict({**model.to_dict(), "params": {**model.params, "r": -1}})
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(InvalidModelFile) as refused:
        BetaGeoModel.load(bad)
    assert refused.value.code == "invalid_model_file"
    with pytest.raises(InvalidModelFile, match="cannot be read"):
        BetaGeoModel.load(tmp_path / "missing.json")


def test_an_unfitted_model_says_so() -> None:
    with pytest.raises(ModelNotFitted) as refused:
        BetaGeoModel().probability_alive([1], [1], [2])
    assert refused.value.code == "model_not_fitted"


def test_large_inputs_scored_once_per_distinct_row_give_the_same_answers(
    model: BetaGeoModel,
) -> None:
    # above 50,000 rows predictions are computed per distinct (x, t_x, T) and spread back
    rng = np.random.default_rng(3)
    x, t_x, T = simulate(PAPER, rng.integers(27 * 7, 39 * 7 + 1, 60_000) / 7, seed=rng)
    t_x = np.floor(t_x * 7) / 7
    whole = model.conditional_expected_purchases(39.0, x, t_x, T)
    parts = np.concatenate(
        [
            model.conditional_expected_purchases(
                39.0, x[i : i + 20_000], t_x[i : i + 20_000], T[i : i + 20_000]
            )
            for i in range(0, 60_000, 20_000)
        ]
    )
    np.testing.assert_array_equal(whole, parts)


def test_large_fits_warm_started_on_a_subsample_reach_the_same_optimum() -> None:
    from memberwise.predict.bgnbd import _objective
    from memberwise.predict.fitting import compact_summary, maximize

    rng = np.random.default_rng(11)
    x, t_x, T = simulate(PAPER, rng.uniform(27, 39, 250_000), seed=rng)  # continuous time
    fitted = BetaGeoModel().fit(x, t_x, T)
    assert fitted.diagnostics["warm_start_evaluations"] > 0
    # the same objective minimized from the usual start without the warm start
    (cx, ct, cT), w = compact_summary(x, t_x, T, np.ones(len(x)))
    scale = 1 / cT.max()
    objective = _objective(cx, ct * scale, cT * scale, w, 0.0)
    theta, _ = maximize(objective, np.zeros(4), model="t", names=tuple(PAPER))
    plain = np.exp(theta) / np.array([1, scale, 1, 1])
    for value, name in zip(plain, PAPER, strict=True):
        assert fitted.params[name] == pytest.approx(value, rel=1e-5), name


@pytest.mark.parametrize("penalizer", [0.0, 0.01])
def test_a_fit_without_an_interior_maximum_says_so(penalizer: float) -> None:
    # everyone bought on the last day of the window: nobody looks lapsed, so p runs to 0
    x = np.array([1, 2, 3, 4, 5, 1, 2, 3] * 50)
    T = np.full(len(x), 30.0)
    with pytest.raises(FitNotConverged) as refused:
        BetaGeoModel(penalizer).fit(x, T, T)
    assert refused.value.code == "fit_not_converged"
    assert "no interior maximum on these data (a → 0" in refused.value.message
    assert isinstance(refused.value, InvalidRequest)
