"""customer_lifetime_value: lifetimes' method to 1e-4, the yearly discounting and the margin."""

from __future__ import annotations

import numpy as np
import pytest

from memberwise.kit.errors import InvalidRequest
from memberwise.predict.bgnbd import BetaGeoModel
from memberwise.predict.clv import customer_lifetime_value
from memberwise.predict.fitting import PERIODS_PER_MONTH
from memberwise.predict.gammagamma import GammaGammaModel
from memberwise.predict.paretonbd import ParetoNBDModel
from tests.predict import cdnow


@pytest.fixture(scope="module")
def models() -> tuple[BetaGeoModel, GammaGammaModel]:
    s = cdnow.summary()
    return (
        BetaGeoModel().fit(s["frequency"], s["recency"], s["T"]),
        GammaGammaModel().fit(s["frequency"], s["monetary_value"]),
    )


def _rfm() -> tuple[np.ndarray, ...]:
    s = cdnow.summary()
    return s["frequency"], s["recency"], s["T"], s["monetary_value"]


def test_clv_matches_lifetimes(models: tuple[BetaGeoModel, GammaGammaModel]) -> None:
    lifetimes = pytest.importorskip("lifetimes")
    pd = pytest.importorskip("pandas")
    bg, gg = models
    x, t_x, T, m = _rfm()
    # fitted (lifetimes sets up its predict method in fit), then given our parameters
    theirs_bg = lifetimes.BetaGeoFitter().fit(x, t_x, T)
    theirs_bg.params_ = pd.Series(bg.params)
    theirs_gg = lifetimes.GammaGammaFitter().fit(x[x > 0], m[x > 0])
    theirs_gg.params_ = pd.Series(gg.params)
    # lifetimes takes a monthly rate and 4.345 weeks a month; margin is ours (1 = revenue)
    theirs = theirs_gg.customer_lifetime_value(
        theirs_bg, *(pd.Series(v) for v in (x, t_x, T, m)), time=12, discount_rate=0.01, freq="W"
    )
    ours = customer_lifetime_value(
        bg,
        gg,
        x,
        t_x,
        T,
        m,
        months=12,
        discount_rate=1.01**12 - 1,
        margin=1.0,
        periods_per_month=4.345,
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)


def test_without_discounting_clv_is_margin_times_spend_times_purchases(
    models: tuple[BetaGeoModel, GammaGammaModel],
) -> None:
    bg, gg = models
    x, t_x, T, m = _rfm()
    weeks = PERIODS_PER_MONTH["W"]
    clv = customer_lifetime_value(
        bg, gg, x, t_x, T, m, months=6, discount_rate=0.0, margin=0.25, periods_per_month=weeks
    )
    expected = (
        0.25
        * gg.conditional_expected_spend(x, m)
        * bg.conditional_expected_purchases(6 * weeks, x, t_x, T)
    )
    np.testing.assert_allclose(clv, expected, rtol=1e-12)


def test_a_higher_discount_rate_or_a_shorter_horizon_lowers_clv(
    models: tuple[BetaGeoModel, GammaGammaModel],
) -> None:
    bg, gg = models
    x, t_x, T, m = _rfm()
    weeks = PERIODS_PER_MONTH["W"]
    base = customer_lifetime_value(bg, gg, x, t_x, T, m, periods_per_month=weeks)
    dearer = customer_lifetime_value(
        bg, gg, x, t_x, T, m, discount_rate=0.3, periods_per_month=weeks
    )
    shorter = customer_lifetime_value(bg, gg, x, t_x, T, m, months=3, periods_per_month=weeks)
    assert np.isfinite(base).all() and (base > 0).all()
    assert (dearer < base).all() and (shorter < base).all()
    # a yearly 10 % is a monthly 0.797 %: the 12th month is worth 1/1.1 of the undiscounted one
    undiscounted = customer_lifetime_value(
        bg, gg, x, t_x, T, m, discount_rate=0.0, periods_per_month=weeks
    )
    assert 1 / 1.1 < (base / undiscounted).min() < (base / undiscounted).max() < 1


def test_pareto_nbd_works_as_the_transactions_model(
    models: tuple[BetaGeoModel, GammaGammaModel],
) -> None:
    _, gg = models
    x, t_x, T, m = _rfm()
    pareto = ParetoNBDModel().fit(x, t_x, T)
    clv = customer_lifetime_value(pareto, gg, x, t_x, T, m, periods_per_month=4.348)
    assert np.isfinite(clv).all() and (clv > 0).all()


@pytest.mark.parametrize(
    "kwargs",
    [{"months": 0}, {"discount_rate": -0.1}, {"margin": 1.5}, {"periods_per_month": 0.0}],
)
def test_bad_settings_are_refused(
    models: tuple[BetaGeoModel, GammaGammaModel], kwargs: dict[str, float]
) -> None:
    bg, gg = models
    with pytest.raises(InvalidRequest):
        customer_lifetime_value(bg, gg, [1], [1.0], [2.0], [10.0], **kwargs)  # type: ignore[arg-type]
