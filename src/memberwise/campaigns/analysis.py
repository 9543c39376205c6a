"""The analysis of an experiment: is the split sound, what did the treatment change, and how
sure can we be — read any day without inflating false positives.

Pure functions of arrays (one value per member); no store, no engine. Every estimator is
checked against scipy / statsmodels on fixed fixtures and for coverage on simulated
experiments with a known effect (``tests/campaigns/test_analysis.py``).

References
----------
- Sample-ratio mismatch: Fabijan et al., "Diagnosing Sample Ratio Mismatch in Online Controlled
  Experiments", KDD 2019 (chi-square goodness of fit, alarm at p < 0.001).
- Delta method for ratio metrics: Deng, Knoblich, Lu, "Applying the Delta Method in Metric
  Analytics", KDD 2018.
- CUPED: Deng, Xu, Kohavi, Walker, "Improving the Sensitivity of Online Controlled Experiments
  by Utilizing Pre-Experiment Data", WSDM 2013.
- Always-valid inference: Johari, Koomen, Pekelis, Walsh, "Always Valid Inference: Continuous
  Monitoring of A/B Tests", Operations Research 2022 (the normal-mixture confidence sequence).
- Benjamini and Hochberg, "Controlling the False Discovery Rate", JRSS B 1995.
- Qini: Radcliffe, "Using Control Groups to Target on Predicted Lift", 2007.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

#: Fabijan et al.'s alarm threshold: a split this unlikely is a bug, not bad luck.
SRM_ALPHA = 0.001
#: Below this expected count per arm the chi-square approximation is not trusted.
SRM_MIN_EXPECTED = 100


@dataclass(frozen=True)
class SRMCheck:
    """Sample-ratio mismatch: do the arms' counts match the configured ratios?"""

    observed: dict[str, int]
    expected: dict[str, float]
    statistic: float | None
    p_value: float | None
    mismatch: bool
    note: str


@dataclass(frozen=True)
class Estimate:
    """Treatment minus control for one metric, with its interval and p-value."""

    method: str
    n_control: int
    n_treatment: int
    control: float
    treatment: float
    difference: float
    std_error: float
    ci_low: float
    ci_high: float
    p_value: float

    @property
    def relative(self) -> float | None:
        """The lift as a fraction of the control's value (None when the control is zero)."""
        return self.difference / self.control if self.control else None


def srm_check(
    observed: Mapping[str, int],
    ratios: Mapping[str, float],
    *,
    alpha: float = SRM_ALPHA,
    min_expected: float = SRM_MIN_EXPECTED,
) -> SRMCheck:
    """Chi-square goodness of fit of the arms' counts against the configured ratios."""
    arms = sorted(ratios)
    total_weight = sum(ratios[a] for a in arms)
    n = sum(int(observed.get(a, 0)) for a in arms)
    expected = {a: n * ratios[a] / total_weight for a in arms}
    counts = {a: int(observed.get(a, 0)) for a in arms}
    if len(arms) < 2 or min(expected.values()) < min_expected:
        return SRMCheck(
            counts,
            expected,
            None,
            None,
            False,
            f"not checked: fewer than {min_expected:g} members expected in an arm",
        )
    result = stats.chisquare([counts[a] for a in arms], [expected[a] for a in arms])
    p = float(result.pvalue)
    mismatch = p < alpha
    note = (
        f"sample ratio mismatch (p = {p:.2g} < {alpha:g}): the split is broken; "
        "do not trust the results until the cause is found"
        if mismatch
        else f"split as configured (p = {p:.2g})"
    )
    return SRMCheck(counts, expected, float(result.statistic), p, mismatch, note)


def winsorize(
    values: ArrayLike, *, upper: float = 0.99, reference: ArrayLike | None = None
) -> NDArray[np.float64]:
    """``values`` capped at the ``upper`` quantile of ``reference`` (default: the values
    themselves). Pass the pooled arms as ``reference`` so every arm is capped alike."""
    x = np.asarray(values, dtype=np.float64)
    ref = x if reference is None else np.asarray(reference, dtype=np.float64)
    if ref.size == 0:
        return x
    return np.minimum(x, np.quantile(ref, upper))


def _normal_estimate(
    method: str,
    n_c: int,
    n_t: int,
    mean_c: float,
    mean_t: float,
    se: float,
    alpha: float,
) -> Estimate:
    diff = mean_t - mean_c
    z = stats.norm.ppf(1 - alpha / 2)
    p = float(2 * stats.norm.sf(abs(diff) / se)) if se > 0 else (0.0 if diff else 1.0)
    return Estimate(method, n_c, n_t, mean_c, mean_t, diff, se, diff - z * se, diff + z * se, p)


def difference_in_means(
    control: ArrayLike, treatment: ArrayLike, *, alpha: float = 0.05
) -> Estimate:
    """Welch's unequal-variance t interval for the difference in means (per-member metrics:
    spend per member, conversion as 0/1, retention, points redeemed)."""
    c = np.asarray(control, dtype=np.float64)
    t = np.asarray(treatment, dtype=np.float64)
    vc, vt = c.var(ddof=1) / c.size, t.var(ddof=1) / t.size
    se = math.sqrt(vc + vt)
    diff = float(t.mean() - c.mean())
    if se == 0:
        return _normal_estimate("welch", c.size, t.size, float(c.mean()), float(t.mean()), 0, alpha)
    df = (vc + vt) ** 2 / (vc**2 / (c.size - 1) + vt**2 / (t.size - 1))
    q = stats.t.ppf(1 - alpha / 2, df)
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    return Estimate(
        "welch",
        c.size,
        t.size,
        float(c.mean()),
        float(t.mean()),
        diff,
        se,
        diff - q * se,
        diff + q * se,
        p,
    )


def cuped(
    control: ArrayLike,
    control_pre: ArrayLike,
    treatment: ArrayLike,
    treatment_pre: ArrayLike,
    *,
    alpha: float = 0.05,
) -> Estimate:
    """Difference in means after CUPED: each value minus theta x (its pre-period value minus
    the pooled pre-period mean), theta = cov(y, x) / var(x) on the pooled arms. The estimate
    stays unbiased (the pre-period is independent of assignment); the variance shrinks by the
    squared correlation of the metric with its pre-period value."""
    yc, xc = np.asarray(control, np.float64), np.asarray(control_pre, np.float64)
    yt, xt = np.asarray(treatment, np.float64), np.asarray(treatment_pre, np.float64)
    y, x = np.concatenate([yc, yt]), np.concatenate([xc, xt])
    var_x = x.var(ddof=1)
    theta = float(np.cov(y, x, ddof=1)[0, 1] / var_x) if var_x > 0 else 0.0
    mx = x.mean()
    est = difference_in_means(yc - theta * (xc - mx), yt - theta * (xt - mx), alpha=alpha)
    return replace(est, method="cuped")


def _ratio_and_variance(num: NDArray[np.float64], den: NDArray[np.float64]) -> tuple[float, float]:
    """mean(num) / mean(den) and its delta-method variance (Deng et al. 2018, eq. 3)."""
    n = num.size
    mu_n, mu_d = num.mean(), den.mean()
    var_n, var_d = num.var(ddof=1), den.var(ddof=1)
    cov = np.cov(num, den, ddof=1)[0, 1]
    ratio = mu_n / mu_d
    var = (var_n / mu_d**2 - 2 * mu_n * cov / mu_d**3 + mu_n**2 * var_d / mu_d**4) / n
    # Exactly proportional num and den (every order the same amount) make the variance 0 in
    # exact arithmetic and a hair below 0 in floating point.
    return float(ratio), max(float(var), 0.0)


def ratio_difference(
    control_num: ArrayLike,
    control_den: ArrayLike,
    treatment_num: ArrayLike,
    treatment_den: ArrayLike,
    *,
    alpha: float = 0.05,
) -> Estimate:
    """Difference of two ratio metrics whose unit of analysis is not the unit of assignment
    (e.g. spend per order, with members assigned): the delta method, not the naive per-order
    variance, which ignores that one member's orders are correlated."""
    rc, vc = _ratio_and_variance(
        np.asarray(control_num, np.float64), np.asarray(control_den, np.float64)
    )
    rt, vt = _ratio_and_variance(
        np.asarray(treatment_num, np.float64), np.asarray(treatment_den, np.float64)
    )
    n_c, n_t = len(np.asarray(control_num)), len(np.asarray(treatment_num))
    return _normal_estimate("delta", n_c, n_t, rc, rt, math.sqrt(vc + vt), alpha)


def confidence_sequence(
    estimate: Estimate, *, mixing_variance: float, alpha: float = 0.05
) -> tuple[float, float, float]:
    """(low, high, always-valid p-value) for ``estimate`` that hold at every look at once.

    The normal-mixture confidence sequence of Johari et al.: with V the estimate's variance and
    tau^2 the ``mixing_variance`` (the squared effect size the test is tuned to detect; fix it
    before the experiment starts), the half-width is
    sqrt(V (V + tau^2) / tau^2 * log((V + tau^2) / (alpha^2 V))). Reading it daily and stopping
    when it excludes zero keeps the false-positive rate at alpha, which a fixed-horizon interval
    read daily does not."""
    v = estimate.std_error**2
    tau2 = mixing_variance
    if v <= 0 or tau2 <= 0:
        return estimate.difference, estimate.difference, 0.0 if estimate.difference else 1.0
    half = math.sqrt(v * (v + tau2) / tau2 * math.log((v + tau2) / (alpha**2 * v)))
    d = estimate.difference
    log_lr = 0.5 * math.log(v / (v + tau2)) + d * d * tau2 / (2 * v * (v + tau2))
    p = min(1.0, math.exp(-log_lr))
    return d - half, d + half, p


def benjamini_hochberg(
    p_values: Sequence[float], *, q: float = 0.05
) -> tuple[list[float], list[bool]]:
    """(adjusted p-values, rejected at false discovery rate ``q``) across an experiment's
    metrics, Benjamini-Hochberg step-up (statsmodels' ``fdr_bh``)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return [], []
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    adjusted_sorted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted.tolist(), (adjusted <= q).tolist()


def qini_curve(
    uplift: ArrayLike, treated: ArrayLike, outcome: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(fraction targeted, incremental outcome) when targeting members by descending predicted
    ``uplift``: at each cut-off, treated outcomes minus control outcomes scaled to the treated
    count (Radcliffe's Qini curve), starting at (0, 0)."""
    score = np.asarray(uplift, np.float64)
    w = np.asarray(treated, bool)
    y = np.asarray(outcome, np.float64)
    order = np.argsort(-score, kind="stable")
    w, y = w[order], y[order]
    n_t, n_c = np.cumsum(w), np.cumsum(~w)
    y_t, y_c = np.cumsum(y * w), np.cumsum(y * ~w)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = y_t - np.where(n_c > 0, y_c * n_t / n_c, 0.0)
    x = np.arange(1, score.size + 1) / score.size
    return np.concatenate([[0.0], x]), np.concatenate([[0.0], gain])


def qini_coefficient(uplift: ArrayLike, treated: ArrayLike, outcome: ArrayLike) -> float:
    """Area between the Qini curve and the line of random targeting (trapezoids), per member:
    positive when the uplift model orders members better than chance."""
    x, gain = qini_curve(uplift, treated, outcome)
    random_line = gain[-1] * x
    area = np.trapezoid(gain - random_line, x)
    return float(area) / (x.size - 1)


def auuc(uplift: ArrayLike, treated: ArrayLike, outcome: ArrayLike) -> float:
    """Area under the Qini curve per member: the incremental outcome averaged over every
    targeting depth, divided by the number of members (comparable across data sets)."""
    x, gain = qini_curve(uplift, treated, outcome)
    return float(np.trapezoid(gain, x)) / (x.size - 1)
