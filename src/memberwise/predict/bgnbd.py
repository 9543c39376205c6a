"""The BG/NBD model of repeat purchases (beta-geometric / negative binomial distribution)."""

from __future__ import annotations

from typing import Self

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import digamma, expit, gammaln, hyp2f1

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
    per_distinct_row,
    require_identifiable,
    subsample,
)

# Within this distance of a = 1, the expected-purchases formula is 0/0 (a removable
# singularity); a is moved this far away, which changes the result by about this much.
_A_NEAR_ONE = 1e-6


class BetaGeoModel(FittedModel):
    """BG/NBD: how many purchases a customer will make, and whether they are still "alive".

    While alive a customer buys as a Poisson process with rate λ; after each repeat purchase
    they drop out for good with probability p. Across customers λ ~ Gamma(r, α) (α a rate, in
    the time unit of the summary) and p ~ Beta(a, b).

    Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005), "'Counting Your Customers' the Easy
    Way: An Alternative to the Pareto/NBD Model", *Marketing Science* 24(2), 275-284; the
    log-likelihood and the conditional expectation as in Hardie's note "Implementing the BG/NBD
    Model for Customer Base Analysis in Excel" (brucehardie.com/notes/004).

    Parameters
    ----------
    penalizer : float
        Optional L2 penalty, the `lifetimes` convention: the fit minimizes the mean negative
        log-likelihood per customer plus ``penalizer * (r² + α'² + a² + b²)``, where α' is α
        with time rescaled so that the longest T is 1 (the penalty then does not depend on the
        time unit). 0 (the default) is plain maximum likelihood; 0.001-0.1 keeps fits on small
        or odd samples away from the boundary. :attr:`log_likelihood` is always unpenalized.

    Notes
    -----
    On the CDNOW sample (2,357 customers, weeks, 39-week calibration) the fit reproduces the
    paper's r = 0.243, α = 4.414, a = 0.793, b = 2.426, log-likelihood -9582.4, and the
    summed conditional expectation for weeks 40-78 is 1,653 against 1,882 actual repeat
    purchases (see tests/predict/test_bgnbd.py).
    """

    kind = "bgnbd"
    param_names = ("r", "alpha", "a", "b")

    def fit(
        self,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        *,
        weights: ArrayLike | None = None,
    ) -> Self:
        """Fit by maximum likelihood on an RFM summary (see :func:`~.rfm.rfm_summary`).

        Parameters
        ----------
        frequency, recency, T : array_like
            Repeat purchases x, time of the last purchase t_x and time since the first
            purchase T, one value per customer (or per group of identical customers).
        weights : array_like, optional
            How many customers each row stands for (default 1). Rows with identical
            (x, t_x, T) are collapsed into one weighted row before fitting in any case
            (see :func:`~.fitting.compact_summary`).

        Raises
        ------
        InsufficientData
            No customers, a single customer, no repeat purchases, or an empty window.
        InvalidSummary
            Malformed arrays (NaN, recency > T, fractional frequency, ...).
        FitNotConverged
            The optimizer found no interior maximum.
        """
        x, t_x, age = check_summary(frequency, recency, T)
        w = check_weights(weights, len(x))
        require_identifiable(x, age, w)
        (x, t_x, age), w = compact_summary(x, t_x, age, w)
        scale = 1.0 / float(age.max())
        objective = _objective(x, t_x * scale, age * scale, w, self.penalizer)
        sample = subsample(x, w)
        warm = None
        if sample is not None:
            rows, weights_ = sample
            warm = _objective(
                x[rows], t_x[rows] * scale, age[rows] * scale, weights_, self.penalizer
            )
        theta, diagnostics = maximize(
            objective, np.zeros(4), model="BG/NBD", names=self.param_names, warm_start=warm
        )
        r, alpha_scaled, a, b = np.exp(theta)
        self._set_params(np.array([r, alpha_scaled / scale, a, b]))
        self.log_likelihood = dot(w, _log_likelihood(self._values(), x, t_x, age))
        self.diagnostics = {
            "customers": float(w.sum()),
            "distinct_rows": len(x),
            **diagnostics,
        }
        return self

    def _values(self) -> tuple[float, float, float, float]:
        p = self.params
        return p["r"], p["alpha"], p["a"], p["b"]

    def individual_log_likelihood(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """Log-likelihood of each customer's (x, t_x, T) under the fitted parameters."""
        x, t_x, age = check_summary(frequency, recency, T)
        return _log_likelihood(self._values(), x, t_x, age)

    def probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """P(still alive at T | x, t_x, T): 1 for customers without repeat purchases (in this
        model one cannot drop out before a repeat purchase)."""
        x, t_x, age = check_summary(frequency, recency, T)
        r, alpha, a, b = self._values()
        return np.asarray(expit(-_log_odds_dead(r, alpha, a, b, x, t_x, age)), dtype=np.float64)

    def conditional_expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """Expected repeat purchases in (T, T + t] of a customer with history (x, t_x, T),
        eq. (10) of the paper; ``t`` is a scalar or one horizon per customer."""
        x, t_x, age = check_summary(frequency, recency, T)
        horizon = _check_horizon(t, len(x))
        r, alpha, a, b = self._values()

        def expected(x: FloatArray, t_x: FloatArray, age: FloatArray, h: FloatArray) -> FloatArray:
            alive = expit(-_log_odds_dead(r, alpha, a, b, x, t_x, age))
            return np.asarray(
                _expected_if_alive(r, alpha, a, b, x, age, h) * alive, dtype=np.float64
            )

        return per_distinct_row(expected, x, t_x, age, horizon)

    def expected_purchases(self, t: ArrayLike) -> FloatArray | float:
        """Expected repeat purchases in (0, t] of a new customer (first purchase at 0), eq. (9)
        of the paper; a float for a scalar ``t``."""
        horizon = as_float_array("t", t)
        if (horizon < 0).any():
            raise _negative_horizon()
        r, alpha, a, b = self._values()
        zero = np.zeros_like(horizon)
        values = _expected_if_alive(r, alpha, a, b, zero, zero, horizon)
        return float(values[0]) if np.ndim(t) == 0 else values


def _negative_horizon() -> Exception:
    return InvalidSummary("The prediction horizon t must not be negative.")


def _check_horizon(t: ArrayLike, n: int) -> FloatArray:
    horizon = as_float_array("t", t)
    if (horizon < 0).any():
        raise _negative_horizon()
    if len(horizon) == 1:
        return np.full(n, horizon[0])
    if len(horizon) != n:
        raise InvalidSummary(f"t has {len(horizon)} values for {n} customers.")
    return horizon


def _log_odds_dead(
    r: float, alpha: float, a: float, b: float, x: FloatArray, t_x: FloatArray, T: FloatArray
) -> FloatArray:
    """log P(dead) / P(alive) given the history; -inf for x = 0 (alive for sure)."""
    repeat = x > 0
    out = np.full(len(x), -np.inf)
    xr = x[repeat]
    out[repeat] = (
        np.log(a)
        - np.log(b + xr - 1)
        + (r + xr) * (np.log(alpha + T[repeat]) - np.log(alpha + t_x[repeat]))
    )
    return out


def _expected_if_alive(
    r: float, alpha: float, a: float, b: float, x: FloatArray, T: FloatArray, t: FloatArray
) -> FloatArray:
    """Expected purchases in (T, T + t] of a customer alive at T: eq. (9) with the posterior
    parameters (r + x, α + T, a, b + x). The Gaussian hypergeometric function can overflow
    for very frequent buyers; Euler's transformation then gives its logarithm directly."""
    if abs(a - 1) < _A_NEAR_ONE:
        a = 1 + _A_NEAR_ONE if a >= 1 else 1 - _A_NEAR_ONE
    p1, p2, p3 = r + x, b + x, a + b + x - 1
    z = t / (alpha + T + t)
    with np.errstate(all="ignore"):
        log_h = np.log(hyp2f1(p1, p2, p3, z))
        bad = ~np.isfinite(log_h)
        if bad.any():
            zb = z[bad]
            log_h[bad] = (p3 - p1 - p2)[bad] * np.log1p(-zb) + np.log(
                hyp2f1((p3 - p1)[bad], (p3 - p2)[bad], p3[bad], zb)
            )
        decay = -expm1_safe(log_h + p1 * (np.log(alpha + T) - np.log(alpha + T + t)))
        values = (p3 / (a - 1)) * decay
    bad = ~np.isfinite(values)
    if bad.any():
        # Last resort, never reached on real data: the purchase rate's posterior mean times t,
        # which bounds the expectation from above.
        values[bad] = (p1 / (alpha + T) * t)[bad]
    return np.maximum(values, 0.0)


def expm1_safe(v: FloatArray) -> FloatArray:
    """expm1 that keeps -1 for -inf and inf for inf (no warnings)."""
    with np.errstate(all="ignore"):
        return np.expm1(v)


def _log_likelihood(
    params: tuple[float, float, float, float], x: FloatArray, t_x: FloatArray, T: FloatArray
) -> FloatArray:
    """Per-row log-likelihood (section 7 of the paper), in log space."""
    r, alpha, a, b = params
    base = (
        gammaln(r + x)
        - gammaln(r)
        + r * np.log(alpha)
        + gammaln(a + b)
        + gammaln(b + x)
        - gammaln(b)
        - gammaln(a + b + x)
    )
    a3 = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    a4 = np.full(len(x), -np.inf)
    a4[repeat] = (
        np.log(a) - np.log(b + x[repeat] - 1) - (r + x[repeat]) * np.log(alpha + t_x[repeat])
    )
    return np.asarray(base + np.logaddexp(a3, a4), dtype=np.float64)


def _objective(x: FloatArray, t_x: FloatArray, T: FloatArray, w: FloatArray, penalizer: float):  # type: ignore[no-untyped-def]
    """Penalized mean negative log-likelihood over log-parameters, with its analytic gradient.

    Terms that depend on x alone are summed over the distinct values of x, terms of the
    customers without repeat purchases over their distinct T (``compact_summary`` grouped
    them); only the mixture term of the repeat buyers is evaluated row by row.
    """
    total = float(w.sum())
    # x takes few values: sum the weights of each (x is a whole number, checked)
    by_x = np.bincount(x.astype(np.int64), weights=w)
    xs = np.flatnonzero(by_x).astype(np.float64)
    wx: FloatArray = by_x[by_x > 0].astype(np.float64)
    none = x == 0
    # the one-time buyers come as one row per distinct T (compact_summary)
    T0, w0 = T[none], w[none]
    rep = ~none
    xp, tp, Tp, wp = x[rep], t_x[rep], T[rep], w[rep]

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        r, alpha, a, b = np.exp(theta)
        # -- terms in x alone
        ab = a + b
        ll = dot(
            wx,
            gammaln(r + xs)
            - gammaln(r)
            + r * np.log(alpha)
            + gammaln(ab)
            + gammaln(b + xs)
            - gammaln(b)
            - gammaln(ab + xs),
        )
        g_r = dot(wx, digamma(r + xs) - digamma(r) + np.log(alpha))
        g_alpha = total * r / alpha
        g_a = dot(wx, digamma(ab) - digamma(ab + xs))
        g_b = dot(wx, digamma(ab) + digamma(b + xs) - digamma(b) - digamma(ab + xs))
        # -- customers without repeat purchases: (α / (α + T))^r, the α^r already counted
        log_T0 = np.log(alpha + T0)
        ll -= r * dot(w0, log_T0)
        g_r -= dot(w0, log_T0)
        g_alpha -= r * dot(w0, 1.0 / (alpha + T0))
        # -- repeat buyers: log(e^A3 + e^A4) = A3 + softplus(A4 - A3)
        rx = r + xp
        log_T = np.log(alpha + Tp)
        log_t = np.log(alpha + tp)
        a3 = -rx * log_T
        d = np.log(a) - np.log(b + xp - 1) - rx * (log_t - log_T)
        e = np.exp(-np.abs(d))
        ll += dot(wp, a3 + np.maximum(d, 0.0) + np.log1p(e))
        q = np.where(d >= 0, 1.0, e) / (1.0 + e)  # the share of "dropped out after t_x"
        wq = wp * q
        w1q = wp - wq
        g_r -= dot(w1q, log_T) + dot(wq, log_t)
        g_alpha -= dot(w1q * rx, 1.0 / (alpha + Tp)) + dot(wq * rx, 1.0 / (alpha + tp))
        g_a += float(wq.sum()) / a
        g_b -= dot(wq, 1.0 / (b + xp - 1))
        params = np.array([r, alpha, a, b])
        value = -ll / total + penalizer * float(np.sum(params * params))
        grad = -np.array([g_r, g_alpha, g_a, g_b]) / total + 2 * penalizer * params
        return value, grad * params  # d/dlog(θ) = θ d/dθ

    return objective


def simulate(
    params: dict[str, float],
    T: ArrayLike,
    *,
    seed: int | np.random.Generator | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Draw (frequency, recency, T) from the BG/NBD process, one customer per value of T.

    Each customer gets λ ~ Gamma(r, α), p ~ Beta(a, b); the number of repeat purchases
    before dropping out is geometric (after each repeat purchase they leave with
    probability p) and the purchases they make are the arrivals of a Poisson process on
    (0, T]. The x-th of N uniform arrival times is drawn as T times a Beta(x, N - x + 1).
    Vectorized: 10 M customers take a few seconds.

    Returns
    -------
    frequency, recency, T : numpy.ndarray
    """
    rng = np.random.default_rng(seed)
    age = as_float_array("T", T)
    n = len(age)
    rate = rng.gamma(params["r"], 1.0 / params["alpha"], n)
    p = rng.beta(params["a"], params["b"], n)
    allowed = rng.geometric(np.clip(p, 1e-12, 1.0))  # repeat purchases until dropout: 1, 2, ...
    arrivals = rng.poisson(rate * age)
    x = np.minimum(allowed, arrivals)
    recency = np.zeros(n)
    repeat = x > 0
    xr = x[repeat]
    recency[repeat] = age[repeat] * rng.beta(xr, arrivals[repeat] - xr + 1)
    return x.astype(np.float64), recency, age
