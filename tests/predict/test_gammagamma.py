"""Gamma-Gamma: the paper's CDNOW figures, lifetimes to 1e-4, refused spend, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memberwise.predict.fitting import (
    InsufficientData,
    InvalidModelFile,
    InvalidSpend,
    UnboundedSpend,
)
from memberwise.predict.gammagamma import GammaGammaModel
from tests.predict import cdnow

PAPER = {"p": 6.25, "q": 3.74, "v": 15.44}  # v is the paper's γ


@pytest.fixture(scope="module")
def model() -> GammaGammaModel:
    s = cdnow.summary()
    return GammaGammaModel().fit(s["frequency"], s["monetary_value"])


def test_cdnow_fit_reproduces_the_papers_parameters_on_the_946_repeat_buyers(
    model: GammaGammaModel,
) -> None:
    assert model.diagnostics["customers"] == 946  # the one-time buyers are left out
    for name, value in PAPER.items():
        assert cdnow.agrees_to_3_significant_figures(model.params[name], value), name
        assert model.params[name] == pytest.approx(value, abs=0.006), name


def test_fit_and_predictions_match_lifetimes(model: GammaGammaModel) -> None:
    lifetimes = pytest.importorskip("lifetimes")
    s = cdnow.summary()
    repeat = s["frequency"] > 0
    x, m = s["frequency"][repeat], s["monetary_value"][repeat]
    theirs = lifetimes.GammaGammaFitter().fit(x, m)
    for name in PAPER:
        assert model.params[name] == pytest.approx(theirs.params_[name], rel=1e-4)
    theirs.params_[:] = [model.params[k] for k in ("p", "q", "v")]
    np.testing.assert_allclose(
        model.conditional_expected_spend(s["frequency"], s["monetary_value"]),
        theirs.conditional_expected_average_profit(s["frequency"], s["monetary_value"]),
        rtol=1e-4,
    )


def test_expected_spend_shrinks_toward_the_population_mean(model: GammaGammaModel) -> None:
    population = model.expected_spend()
    p, q, v = model.params["p"], model.params["q"], model.params["v"]
    assert population == pytest.approx(p * v / (q - 1))
    spend = model.conditional_expected_spend([0, 1, 10, 10], [0, 100.0, 100.0, 5.0])
    assert spend[0] == pytest.approx(population)  # no repeat purchase: the population mean
    assert population < spend[1] < spend[2] < 100  # more purchases, more of one's own mean
    assert 5 < spend[3] < population


@pytest.mark.parametrize("bad", [0.0, -12.5])
def test_zero_or_negative_spend_is_refused(bad: float) -> None:
    with pytest.raises(InvalidSpend) as refused:
        GammaGammaModel().fit([1, 2, 3, 0], [10.0, bad, 30.0, 0.0])
    assert refused.value.code == "invalid_spend"
    assert "1 repeat buyer(s) have a zero or negative average spend" in refused.value.message


@pytest.mark.parametrize(
    ("frequency", "spend", "reason"),
    [
        ([0, 0, 0], [0.0, 0.0, 0.0], "no_repeat_buyers"),
        ([0, 2, 0], [0.0, 10.0, 0.0], "single_customer"),
        ([2, 2, 2], [10.0, 10.0, 10.0], "no_variation"),
    ],
)
def test_too_few_repeat_buyers_are_refused(
    frequency: list[int], spend: list[float], reason: str
) -> None:
    with pytest.raises(InsufficientData) as refused:
        GammaGammaModel().fit(frequency, spend)
    assert refused.value.code == "insufficient_data"
    assert refused.value.reason == reason


def test_a_spend_distribution_without_a_mean_is_refused() -> None:
    # drawn from the model itself with q = 0.8: customers' mean spend v p / (q - 1) is infinite
    rng = np.random.default_rng(0)
    x = rng.integers(1, 6, 5000)
    nu = rng.gamma(0.8, 1 / 15, 5000)
    spend = rng.gamma(6 * x, 1 / (nu * x))
    with pytest.raises(UnboundedSpend) as refused:
        GammaGammaModel().fit(x, spend)
    assert refused.value.code == "unbounded_spend"
    assert "(q = 0.77 <= 1)" in refused.value.message


def test_an_unbounded_fit_kept_on_request_values_every_buyer_with_evidence() -> None:
    """The same draw kept with ``allow_unbounded``: the fit recovers q < 1, the population mean
    is refused, and a customer with x transactions of average m gets p (v + x m) / (p x + q - 1)
    -- eq. (5) rearranged, finite while p x + q > 1 -- and NaN at x = 0 (the model cannot say)."""
    rng = np.random.default_rng(0)
    x = rng.integers(1, 6, 5000)
    nu = rng.gamma(0.8, 1 / 15, 5000)
    spend = rng.gamma(6 * x, 1 / (nu * x))
    model = GammaGammaModel().fit(x, spend, allow_unbounded=True)
    p, q, v = model.params["p"], model.params["q"], model.params["v"]
    assert q == pytest.approx(0.77, abs=0.005) and not model.bounded
    with pytest.raises(UnboundedSpend):
        model.expected_spend()
    got = model.conditional_expected_spend([0, 1, 3], [0.0, 100.0, 40.0])
    assert np.isnan(got[0])
    assert got[1:] == pytest.approx([p * (v + 100) / (p + q - 1), p * (v + 120) / (3 * p + q - 1)])


def test_the_rearranged_expectation_is_eq_5_for_a_bounded_fit(model: GammaGammaModel) -> None:
    p, q, v = model.params["p"], model.params["q"], model.params["v"]
    weight = p * 4 / (p * 4 + q - 1)
    eq5 = (1 - weight) * p * v / (q - 1) + weight * 35.0
    assert model.conditional_expected_spend([4], [35.0])[0] == pytest.approx(eq5, rel=1e-12)
    assert model.bounded


def test_save_and_load_round_trip(model: GammaGammaModel, tmp_path: Path) -> None:
    model.save(tmp_path / "gg.json")
    loaded = GammaGammaModel.load(tmp_path / "gg.json")
    assert loaded.params == model.params
    assert loaded.log_likelihood == model.log_likelihood
    np.testing.assert_array_equal(
        loaded.conditional_expected_spend([0, 3], [0.0, 42.0]),
        model.conditional_expected_spend([0, 3], [0.0, 42.0]),
    )
    with pytest.raises(InvalidModelFile, match="needs parameters"):
        GammaGammaModel.from_dict({**model.to_dict(), "params": {"p": 1.0, "q": 2.0}})
