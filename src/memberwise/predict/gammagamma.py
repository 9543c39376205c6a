"""The Gamma-Gamma model of spend per transaction."""

from __future__ import annotations

from typing import Self

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import digamma, gammaln

from memberwise.predict.fitting import (
    FittedModel,
    FloatArray,
    InsufficientData,
    InvalidSpend,
    InvalidSummary,
    UnboundedSpend,
    as_float_array,
    check_weights,
    collapse,
    dot,
    maximize,
)


class GammaGammaModel(FittedModel):
    """Gamma-Gamma: a customer's average spend per repeat transaction, shrunk toward the
    population's.

    Each transaction's value is Gamma(p, ν) with a customer's own ν; across customers
    ν ~ Gamma(q, v). The model assumes spend per transaction is independent of how often a
    customer buys (check that the correlation of ``frequency`` and ``monetary_value`` among
    repeat buyers is small before using it).

    Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005), "RFM and CLV: Using Iso-Value Curves
    for Customer Base Analysis", *Journal of Marketing Research* 42(4), 415-430; the
    likelihood and conditional expectation as in Fader and Hardie's note "The Gamma-Gamma
    Model of Monetary Value" (2013, brucehardie.com/notes/025), eqs. (1a) and (5).

    The parameters are ``p``, ``q`` and ``v``; **v is the papers' γ** (the scale of the
    population's distribution of ν), named as in `lifetimes`.

    Parameters
    ----------
    penalizer : float
        Optional L2 penalty, the `lifetimes` convention: the fit minimizes the mean negative
        log-likelihood per customer plus ``penalizer * (p² + q² + v²)``. Spend is not
        rescaled, so ``v`` grows with the currency unit; keep the penalizer at 0 unless a
        fit fails.

    Notes
    -----
    On the 946 repeat buyers of the CDNOW sample (average spend of their repeat purchases in
    the 39-week calibration) the fit reproduces the paper's p = 6.25, q = 3.74, γ = 15.44
    (tests/predict/test_gammagamma.py).
    """

    kind = "gammagamma"
    param_names = ("p", "q", "v")

    def fit(
        self,
        frequency: ArrayLike,
        monetary_value: ArrayLike,
        *,
        weights: ArrayLike | None = None,
        allow_unbounded: bool = False,
    ) -> Self:
        """Fit by maximum likelihood on the repeat buyers.

        Parameters
        ----------
        frequency : array_like
            Repeat purchases x per customer. Customers with x = 0 carry no spend information
            and are left out, so a whole RFM summary may be passed.
        monetary_value : array_like
            Average value of each customer's repeat purchases (must be > 0 where x > 0).
        weights : array_like, optional
            How many customers each row stands for (default 1).
        allow_unbounded : bool
            Keep a fit with q <= 1 instead of refusing it. The population's mean spend is then
            infinite (:meth:`expected_spend` refuses), but the conditional expectation of a
            customer with x transactions stays finite while p x + q > 1: the posterior of
            their ν is Gamma(p x + q, v + x m_x) (see :meth:`conditional_expected_spend`).

        Raises
        ------
        InvalidSpend
            A repeat buyer's average spend is zero or negative (returns netted against
            purchases, or a missing value column).
        InsufficientData
            Fewer than two repeat buyers.
        UnboundedSpend
            The fitted q <= 1: the population's mean spend would be infinite.
        FitNotConverged
            The optimizer found no interior maximum.
        """
        x, m = _check(frequency, monetary_value)
        w = check_weights(weights, len(x))
        buyers = (x > 0) & (w > 0)
        if ((m <= 0) & buyers).any():
            count = int(((m <= 0) & buyers).sum())
            raise InvalidSpend(
                f"{count:,} repeat buyer(s) have a zero or negative average spend; Gamma-Gamma "
                "needs positive spend (drop returns-only customers or fix the value column).",
                details={"customers": count},
            )
        x, m, w = x[buyers], m[buyers], w[buyers]
        if w.sum() < 2:
            raise InsufficientData(
                "Gamma-Gamma needs at least two repeat buyers "
                f"(found {w.sum():g}); customers without repeat purchases carry no spend "
                "information.",
                reason="no_repeat_buyers" if w.sum() == 0 else "single_customer",
            )
        (x, m), w = collapse((x, m), w)
        if len(x) == 1:
            raise InsufficientData(
                "Every repeat buyer has the same frequency and spend: there is no spread to fit.",
                reason="no_variation",
            )
        theta, diagnostics = maximize(
            _objective(x, m, w, self.penalizer),
            _start(x, m, w),
            model="Gamma-Gamma",
            names=self.param_names,
        )
        p, q, v = np.exp(theta)
        if q <= 1 and not allow_unbounded:
            raise UnboundedSpend(
                f"The fitted spend distribution has no finite mean (q = {q:.3g} <= 1): spend "
                "is too heavy-tailed for Gamma-Gamma; cap outliers (e.g. at the 99.9th "
                "percentile).",
                details={"p": p, "q": q, "v": v},
            )
        self._set_params(np.array([p, q, v]))
        self.log_likelihood = dot(w, _log_likelihood((p, q, v), x, m))
        self.diagnostics = {"customers": float(w.sum()), "distinct_rows": len(x), **diagnostics}
        return self

    def conditional_expected_spend(
        self, frequency: ArrayLike, monetary_value: ArrayLike
    ) -> FloatArray:
        """Expected spend per future transaction given x repeat purchases of average value
        m_x, eq. (5): a weighted mean of the population mean p v / (q - 1) and m_x with
        weight p x / (p x + q - 1) on m_x. Customers with x = 0 get the population mean.

        Computed as p (v + x m_x) / (p x + q - 1), the same number, which stays finite for a
        fit with q <= 1 (``allow_unbounded``) wherever p x + q > 1; where it does not (x = 0
        under such a fit) the answer is NaN: the model cannot say.
        """
        x, m = _check(frequency, monetary_value)
        params = self.params
        p, q, v = params["p"], params["q"], params["v"]
        denominator = p * x + q - 1
        spend = p * (v + x * np.where(x > 0, m, 0.0)) / np.where(denominator > 0, denominator, 1)
        return np.where(denominator > 0, spend, np.nan)

    @property
    def bounded(self) -> bool:
        """Whether the population's mean spend is finite (q > 1)."""
        return bool(self.params["q"] > 1)

    def expected_spend(self) -> float:
        """The population's mean spend per transaction, p v / (q - 1).

        Raises UnboundedSpend for a fit with q <= 1 (``allow_unbounded``).
        """
        params = self.params
        if params["q"] <= 1:
            raise UnboundedSpend(
                f"the fitted spend distribution has no finite mean (q = {params['q']:.3g} <= 1)",
                details=dict(params),
            )
        return params["p"] * params["v"] / (params["q"] - 1)

    def individual_log_likelihood(
        self, frequency: ArrayLike, monetary_value: ArrayLike
    ) -> FloatArray:
        """Log-density of each repeat buyer's average spend under the fitted parameters."""
        x, m = _check(frequency, monetary_value)
        params = self.params
        return _log_likelihood((params["p"], params["q"], params["v"]), x, m)


def _check(frequency: ArrayLike, monetary_value: ArrayLike) -> tuple[FloatArray, FloatArray]:
    x = as_float_array("frequency", frequency)
    m = as_float_array("monetary_value", monetary_value)
    if len(x) != len(m):
        raise InvalidSummary("frequency and monetary_value must have the same length.")
    if (x < 0).any() or (x != np.floor(x)).any():
        raise InvalidSummary("frequency must be a whole number of repeat purchases (0 or more).")
    return x, m


def _start(x: FloatArray, m: FloatArray, w: FloatArray) -> FloatArray:
    """Start from p = 1 and q = 2 with the population mean matched (p v / (q - 1) = mean m):
    the fit is then independent of the currency unit."""
    mean = dot(w, m) / float(w.sum())
    return np.log(np.array([1.0, 2.0, mean], dtype=np.float64))


def _log_likelihood(params: tuple[float, float, float], x: FloatArray, m: FloatArray) -> FloatArray:
    """Log-density of the average spend m of x transactions, eq. (1a)."""
    p, q, v = params
    px = p * x
    ll: FloatArray = (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(v)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(x * m + v)
    )
    return ll


def _objective(x: FloatArray, m: FloatArray, w: FloatArray, penalizer: float):  # type: ignore[no-untyped-def]
    """Penalized mean negative log-likelihood over log-parameters, with its analytic gradient."""
    total = float(w.sum())
    log_m, log_x = np.log(m), np.log(x)
    xm = x * m

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        p, q, v = np.exp(theta)
        px = p * x
        log_xm_v = np.log(xm + v)
        psi = digamma(px + q)
        ll = dot(w, _log_likelihood((p, q, v), x, m))
        g_p = dot(w, (x * (psi - digamma(px) + log_m + log_x - log_xm_v)))
        g_q = dot(w, (psi - digamma(q) + np.log(v) - log_xm_v))
        g_v = dot(w, (q / v - (px + q) / (xm + v)))
        params = np.array([p, q, v])
        value = -ll / total + penalizer * float(np.sum(params * params))
        grad = -np.array([g_p, g_q, g_v]) / total + 2 * penalizer * params
        return value, grad * params

    return objective
