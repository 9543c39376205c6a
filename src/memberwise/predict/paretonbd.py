"""The Pareto/NBD model of repeat purchases."""

from __future__ import annotations

from typing import Self

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit, gammaln, hyp2f1

from memberwise.predict.fitting import (
    FittedModel,
    FloatArray,
    InvalidSummary,
    as_float_array,
    check_summary,
    check_weights,
    compact_summary,
    dot,
    maximize,
    numerical_gradient,
    per_distinct_row,
    require_identifiable,
)

Params = tuple[float, float, float, float]


class ParetoNBDModel(FittedModel):
    """Pareto/NBD: repeat purchases of customers who may drop out at any time, unobserved.

    While alive a customer buys as a Poisson process with rate λ; their lifetime is
    exponential with rate μ. Across customers λ ~ Gamma(r, α) and μ ~ Gamma(s, β) (α and β
    are rates in the time unit of the summary).

    Schmittlein, D. C., Morrison, D. G. and Colombo, R. (1987), "Counting Your Customers: Who
    Are They and What Will They Do Next?", *Management Science* 33(1), 1-24; the likelihood in
    the numerically convenient form of Fader and Hardie's note "A Note on Deriving the
    Pareto/NBD Model and Related Expressions" (2005, brucehardie.com/notes/009), eqs. (18)-(20)
    for the likelihood, (27) for the expected purchases of a new customer and (41) for the
    conditional expectation.

    Parameters
    ----------
    penalizer : float
        Optional L2 penalty as in :class:`~memberwise.predict.bgnbd.BetaGeoModel`:
        ``penalizer * (r² + α'² + s² + β'²)`` added to the mean negative log-likelihood per
        customer, α' and β' with time rescaled so that the longest T is 1. (`lifetimes`
        divides this model's likelihood by the mean weight rather than the total, so its
        penalty is about n times weaker than ours for the same coefficient; we use the
        per-customer mean for every model.)

    Notes
    -----
    On the CDNOW sample the fit reproduces the published r = 0.553, α = 10.578, s = 0.606,
    β = 11.669, log-likelihood -9595.0 (tests/predict/test_paretonbd.py). The gradient is
    taken by central differences: the derivatives of the hypergeometric terms in their
    parameters have no convenient closed form. The fit is therefore slower than BG/NBD's.
    """

    kind = "paretonbd"
    param_names = ("r", "alpha", "s", "beta")

    def fit(
        self,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        *,
        weights: ArrayLike | None = None,
    ) -> Self:
        """Fit by maximum likelihood; arguments, collapsing and errors as
        :meth:`BetaGeoModel.fit <memberwise.predict.bgnbd.BetaGeoModel.fit>`."""
        x, t_x, age = check_summary(frequency, recency, T)
        w = check_weights(weights, len(x))
        require_identifiable(x, age, w)
        (x, t_x, age), w = compact_summary(x, t_x, age, w)
        scale = 1.0 / float(age.max())
        t_s, T_s = t_x * scale, age * scale
        total = float(w.sum())
        penalizer = self.penalizer

        def value(theta: FloatArray) -> float:
            params = np.exp(theta)
            r, alpha, s, beta = (float(v) for v in params)
            ll = dot(w, _log_likelihood((r, alpha, s, beta), x, t_s, T_s))
            return -ll / total + penalizer * float(np.sum(params * params))

        theta, diagnostics = maximize(
            numerical_gradient(value),
            np.zeros(4),
            model="Pareto/NBD",
            names=self.param_names,
            gtol=1e-7,
        )
        r, alpha_s, s, beta_s = np.exp(theta)
        self._set_params(np.array([r, alpha_s / scale, s, beta_s / scale]))
        self.log_likelihood = dot(w, _log_likelihood(self._values(), x, t_x, age))
        self.diagnostics = {"customers": total, "distinct_rows": len(x), **diagnostics}
        return self

    def _values(self) -> Params:
        p = self.params
        return p["r"], p["alpha"], p["s"], p["beta"]

    def individual_log_likelihood(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """Log-likelihood of each customer's (x, t_x, T) under the fitted parameters."""
        x, t_x, age = check_summary(frequency, recency, T)
        return _log_likelihood(self._values(), x, t_x, age)

    def probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """P(still alive at T | x, t_x, T)."""
        x, t_x, age = check_summary(frequency, recency, T)
        params = self._values()

        def alive(x: FloatArray, t_x: FloatArray, age: FloatArray) -> FloatArray:
            return np.asarray(expit(-_log_odds_dead(params, x, t_x, age)), dtype=np.float64)

        return per_distinct_row(alive, x, t_x, age)

    def conditional_expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """Expected repeat purchases in (T, T + t] of a customer with history (x, t_x, T);
        ``t`` is a scalar or one horizon per customer."""
        x, t_x, age = check_summary(frequency, recency, T)
        horizon = as_float_array("t", t)
        if (horizon < 0).any():
            raise InvalidSummary("The prediction horizon t must not be negative.")
        if len(horizon) not in (1, len(x)):
            raise InvalidSummary(f"t has {len(horizon)} values for {len(x)} customers.")
        params = self._values()
        horizon = np.broadcast_to(horizon, len(x))

        def expected(x: FloatArray, t_x: FloatArray, age: FloatArray, h: FloatArray) -> FloatArray:
            alive = expit(-_log_odds_dead(params, x, t_x, age))
            return np.asarray(alive * _expected_if_alive(params, x, age, h), dtype=np.float64)

        return per_distinct_row(expected, x, t_x, age, horizon)

    def expected_purchases(self, t: ArrayLike) -> FloatArray | float:
        """Expected repeat purchases in (0, t] of a new customer; a float for a scalar t."""
        horizon = as_float_array("t", t)
        if (horizon < 0).any():
            raise InvalidSummary("The prediction horizon t must not be negative.")
        zero = np.zeros_like(horizon)
        values = _expected_if_alive(self._values(), zero, zero, horizon)
        return float(values[0]) if np.ndim(t) == 0 else values


def _expected_if_alive(params: Params, x: FloatArray, T: FloatArray, t: FloatArray) -> FloatArray:
    """E[purchases in (T, T + t] | alive at T]: (r + x)(β + T) / ((α + T)(s - 1)) times
    1 - ((β + T) / (β + T + t))^(s - 1), whose s → 1 limit is a logarithm."""
    r, alpha, s, beta = params
    log_u = np.log(beta + T) - np.log(beta + T + t)
    # the s -> 1 limit of (1 - u^(s - 1)) / (s - 1) is -log u
    survival = -log_u if abs(s - 1) < 1e-10 else -np.expm1((s - 1) * log_u) / (s - 1)
    return np.maximum((r + x) * (beta + T) / (alpha + T) * survival, 0.0)


def _log1mexp(v: FloatArray) -> FloatArray:
    """log(1 - e^v) for v <= 0, accurate near both ends; -inf at v = 0."""
    v = np.minimum(v, 0.0)
    with np.errstate(divide="ignore"):
        return np.where(v > -0.6931, np.log(-np.expm1(v)), np.log1p(-np.exp(v)))


def _log_hyp2f1(a: FloatArray, b: FloatArray, c: FloatArray, z: FloatArray) -> FloatArray:
    """log 2F1(a, b; c; z) for positive a, b, c and 0 <= z < 1, through Euler's transformation
    where the series overflows (very frequent buyers)."""
    with np.errstate(all="ignore"):
        out = np.log(hyp2f1(a, b, c, z))
        bad = ~np.isfinite(out)
        if bad.any():
            a, b, c, z = (np.broadcast_to(v, out.shape)[bad] for v in (a, b, c, z))
            out[bad] = (c - a - b) * np.log1p(-z) + np.log(hyp2f1(c - a, c - b, c, z))
    return np.asarray(out, dtype=np.float64)


def _log_a0(params: Params, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
    """log A0 of eqs. (19)/(20): the integral over the possible death times in (t_x, T]."""
    r, alpha, s, beta = params
    rsx = r + s + x
    if alpha >= beta:
        top, second = alpha, np.full(len(x), s + 1.0)
    else:
        top, second = beta, r + x
    gap = abs(alpha - beta)
    u1 = _log_hyp2f1(rsx, second, rsx + 1, gap / (top + t_x)) - rsx * np.log(top + t_x)
    u2 = _log_hyp2f1(rsx, second, rsx + 1, gap / (top + T)) - rsx * np.log(top + T)
    return u1 + _log1mexp(u2 - u1)


def _log_likelihood(params: Params, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
    """Per-row log-likelihood, eq. (18) of Fader & Hardie's note, in log space."""
    r, alpha, s, beta = params
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    died = np.log(s) - np.log(r + s + x) + _log_a0(params, x, t_x, T)
    return np.asarray(a1 + np.logaddexp(alive, died), dtype=np.float64)


def _log_odds_dead(params: Params, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
    """log P(dead) / P(alive) given the history: the second term of the likelihood over
    the first."""
    r, alpha, s, beta = params
    log_odds: FloatArray = (
        np.log(s)
        - np.log(r + s + x)
        + (r + x) * np.log(alpha + T)
        + s * np.log(beta + T)
        + _log_a0(params, x, t_x, T)
    )
    return log_odds
