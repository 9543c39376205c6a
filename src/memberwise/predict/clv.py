"""Customer lifetime value: a purchase-count model times a spend model, discounted monthly."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

from memberwise.kit.errors import InvalidRequest
from memberwise.predict.fitting import (
    PERIODS_PER_MONTH,
    FloatArray,
    check_summary,
    unique_rows,
)
from memberwise.predict.gammagamma import GammaGammaModel


class TransactionsModel(Protocol):
    """What CLV needs of a purchase-count model (BG/NBD and Pareto/NBD both qualify)."""

    def conditional_expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray: ...


def customer_lifetime_value(
    transactions_model: TransactionsModel,
    spend_model: GammaGammaModel,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary_value: ArrayLike,
    *,
    months: int = 12,
    discount_rate: float = 0.1,
    margin: float = 0.3,
    periods_per_month: float = PERIODS_PER_MONTH["D"],
    spend: ArrayLike | None = None,
) -> FloatArray:
    """Discounted profit each customer is expected to bring in the next ``months`` months.

    The method of `lifetimes`' ``customer_lifetime_value``: for each month m = 1 .. months the
    expected purchases in that month (the difference of the cumulative conditional
    expectations at m and m - 1 months) times the expected spend per purchase, discounted
    by ``(1 + monthly rate)^m`` (payments counted at the end of their month), summed and
    multiplied by the margin::

        CLV = margin * E[spend | x, m_x] * Σ_m (E[X(m)] - E[X(m - 1)]) / (1 + d_month)^m
        d_month = (1 + discount_rate)^(1 / 12) - 1

    Parameters
    ----------
    transactions_model : BetaGeoModel or ParetoNBDModel
        A fitted purchase-count model.
    spend_model : GammaGammaModel
        A fitted spend model.
    frequency, recency, T, monetary_value : array_like
        The RFM summary the models were fitted on (same time unit).
    months : int
        Horizon in months (12 for ``clv_12m``).
    discount_rate : float
        **Yearly** discount rate (the program's ``prediction.discount_rate``); `lifetimes`
        takes a monthly rate instead — yearly 0.1 is monthly 0.797 %.
    margin : float
        Share of spend that is profit (the program's ``prediction.margin``).
    periods_per_month : float
        Time units of the summary in one month: ``PERIODS_PER_MONTH["D"]`` (30.44, the
        default) for a summary in days, ``PERIODS_PER_MONTH["W"]`` (4.35) in weeks.
        (`lifetimes` uses 30 and 4.345.)
    spend : array_like, optional
        Each customer's expected spend per purchase, when the caller has it already (e.g. a
        one-time buyer valued on their one purchase under a spend model without a finite
        population mean); default: ``spend_model.conditional_expected_spend(frequency,
        monetary_value)``.

    Returns
    -------
    numpy.ndarray
        CLV per customer in the unit of ``monetary_value``; NaN only where the expected spend
        is (a customer the spend model cannot value).
    """
    if not (isinstance(months, int | np.integer) and months >= 1):
        raise InvalidRequest("months must be a whole number of months, 1 or more.")
    if not (0 <= discount_rate < 10):
        raise InvalidRequest("discount_rate must be a yearly rate between 0 and 10.")
    if not (0 <= margin <= 1):
        raise InvalidRequest("margin must be between 0 and 1.")
    if not (periods_per_month > 0):
        raise InvalidRequest("periods_per_month must be positive.")
    x, t_x, age = check_summary(frequency, recency, T)
    spend = (
        spend_model.conditional_expected_spend(x, monetary_value)
        if spend is None
        else np.asarray(spend, dtype=np.float64)
    )
    # Customers with the same (x, t_x, T) expect the same purchases: score each row once.
    (ux, ut, uT), inverse = unique_rows(x, t_x, age)
    monthly = (1 + discount_rate) ** (1 / 12) - 1
    discounted = np.zeros(len(ux))
    previous = np.zeros(len(ux))
    for month in range(1, months + 1):
        cumulative = transactions_model.conditional_expected_purchases(
            month * periods_per_month, ux, ut, uT
        )
        discounted += (cumulative - previous) / (1 + monthly) ** month
        previous = cumulative
    return margin * spend * discounted[inverse]
