"""What the CLV models share: their errors, input checks, collapsing of identical customers,
the optimizer call and JSON serialization.

The models themselves live in :mod:`~memberwise.predict.bgnbd`,
:mod:`~memberwise.predict.paretonbd` and :mod:`~memberwise.predict.gammagamma`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize

from memberwise.kit.errors import InvalidRequest

FloatArray = NDArray[np.float64]

#: Model periods in one month, for :func:`~memberwise.predict.clv.customer_lifetime_value`:
#: a summary made with ``freq="D"`` counts days, with ``freq="W"`` weeks (365.25 / 12 days).
PERIODS_PER_MONTH: dict[str, float] = {"D": 365.25 / 12, "W": 365.25 / 12 / 7}

#: Serialization format of a saved model; bumped when the file's layout changes.
FORMAT_VERSION = 1

# A maximum whose log-parameters move this far from the start (e^18 = 6.6e7 times; the
# starts are unit-free: time rescaled to max T = 1, spend to its mean) is a boundary solution
# (a parameter running off to 0 or infinity): the likelihood has no interior maximum.
_LOG_PARAM_LIMIT = 18.0


# --- errors ---------------------------------------------------------------------------------


class InsufficientData(InvalidRequest):
    """The data cannot identify the model (no customers, one customer, no repeat purchases,
    an empty calibration window). ``details["reason"]`` names which."""

    code = "insufficient_data"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, details={"reason": reason})
        self.reason = reason


class InvalidSummary(InvalidRequest):
    """The frequency/recency/T (or spend) arrays are malformed: NaN, negative, recency > T."""

    code = "invalid_summary"


class InvalidSpend(InvalidRequest):
    """Gamma-Gamma was given a zero or negative average spend for a repeat buyer."""

    code = "invalid_spend"


class UnboundedSpend(InvalidRequest):
    """The fitted Gamma-Gamma has no finite mean spend (q <= 1)."""

    code = "unbounded_spend"


class FitNotConverged(InvalidRequest):
    """The optimizer stopped without reaching an interior maximum of the likelihood."""

    code = "fit_not_converged"


class ModelNotFitted(InvalidRequest):
    """A prediction was asked of a model that was never fitted (or loaded)."""

    code = "model_not_fitted"


class InvalidModelFile(InvalidRequest):
    """A saved model is not a model of this kind, or is damaged."""

    code = "invalid_model_file"


# --- input checks ---------------------------------------------------------------------------


def as_float_array(name: str, values: ArrayLike) -> FloatArray:
    """``values`` as a 1-D float64 array (a scalar becomes one element); NaN and inf refused."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise InvalidSummary(f"{name} must be one-dimensional, got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise InvalidSummary(f"{name} contains NaN or infinite values.")
    return array


def check_summary(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validate an RFM summary and return it as float arrays of one length.

    Raises :class:`InvalidSummary` when a frequency is negative or not a whole number, a
    recency is negative or larger than T, a frequency of 0 comes with a non-zero recency,
    or the arrays differ in length.
    """
    x = as_float_array("frequency", frequency)
    t_x = as_float_array("recency", recency)
    age = as_float_array("T", T)
    if not len(x) == len(t_x) == len(age):
        # one value may stand for all (e.g. a common T); otherwise the lengths must agree
        n = max(len(x), len(t_x), len(age))
        if any(len(a) not in (1, n) for a in (x, t_x, age)):
            raise InvalidSummary("frequency, recency and T must have the same length.")
        x, t_x, age = (np.broadcast_to(a, n) for a in (x, t_x, age))
    if (x < 0).any() or (x != np.floor(x)).any():
        raise InvalidSummary("frequency must be a whole number of repeat purchases (0 or more).")
    if (t_x < 0).any():
        raise InvalidSummary("recency must not be negative.")
    # A small relative slack: recency and T are often computed in floating point.
    if (t_x > age * (1 + 1e-9) + 1e-12).any():
        raise InvalidSummary("recency must not exceed T (the last purchase is inside the window).")
    if ((x == 0) & (t_x != 0)).any():
        raise InvalidSummary("recency must be 0 for customers without repeat purchases.")
    return x, np.minimum(t_x, age), age


def check_weights(weights: ArrayLike | None, n: int) -> FloatArray:
    """Per-row customer counts (default 1 each); negative or non-finite counts refused."""
    if weights is None:
        return np.ones(n)
    w = as_float_array("weights", weights)
    if len(w) != n:
        raise InvalidSummary(f"weights has {len(w)} values for {n} customers.")
    if (w < 0).any():
        raise InvalidSummary("weights must not be negative.")
    return w


def require_identifiable(x: FloatArray, T: FloatArray, w: FloatArray) -> None:
    """Refuse data on which a purchase-count model cannot be fitted (see InsufficientData)."""
    customers = float(w.sum())
    if customers == 0:
        raise InsufficientData("There are no customers to fit the model on.", reason="empty")
    if float(T[w > 0].max()) <= 0:
        raise InsufficientData(
            "The calibration window is empty: every customer's observation time T is 0.",
            reason="empty_calibration_window",
        )
    if customers < 2:
        raise InsufficientData(
            "A single customer cannot identify a population model; fit on many customers.",
            reason="single_customer",
        )
    if not (x[w > 0] > 0).any():
        raise InsufficientData(
            "Every customer bought only once (no repeat purchases): the model cannot tell a "
            "low purchase rate from early dropout.",
            reason="no_repeat_buyers",
        )


# --- collapsing identical customers ---------------------------------------------------------


def _codes(values: FloatArray) -> tuple[NDArray[np.int64], FloatArray]:
    """Hash-based factorization (pyarrow's dictionary encoding: no sort)."""
    encoded = pc.dictionary_encode(pa.array(values))
    return (
        encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False),
        encoded.dictionary.to_numpy(zero_copy_only=False),
    )


def unique_rows(*columns: FloatArray) -> tuple[list[FloatArray], NDArray[np.int64]]:
    """The distinct rows of equal-length columns and, per input row, the index of its row.

    Customers with identical (x, t_x, T) have identical likelihoods and predictions, so the
    models fit and score each distinct row once (daily data has few distinct rows).
    """
    key: NDArray[np.int64] | None = None
    size = 1  # the number of possible key values so far
    for column in columns:
        codes, dictionary = _codes(column)
        if key is None:
            key, size = codes, len(dictionary)
            continue
        if size * len(dictionary) >= 2**62:  # would overflow: number the distinct keys first
            key, seen = _codes(key)  # type: ignore[arg-type]
            size = len(seen)
        key = key * len(dictionary) + codes
        size *= len(dictionary)
    assert key is not None
    inverse, distinct_keys = _codes(key)  # type: ignore[arg-type]
    # any row of a group stands for it: the rows of a group are identical
    representative = np.empty(len(distinct_keys), dtype=np.int64)
    representative[inverse] = np.arange(len(inverse))
    return [column[representative] for column in columns], inverse


def per_distinct_row(
    function: Callable[..., FloatArray], *columns: FloatArray, threshold: int = 50_000
) -> FloatArray:
    """``function(*columns)``, evaluated once per distinct row when there are many rows.

    Scoring is dominated by the hypergeometric function; daily data have far fewer distinct
    (x, t_x, T) than members (10 M simulated members: about 200 k), so this is several times
    faster on large inputs and costs one hash pass when rows are all distinct.
    """
    if len(columns[0]) < threshold:
        return function(*columns)
    distinct, inverse = unique_rows(*columns)
    return function(*distinct)[inverse]


def collapse(
    columns: tuple[FloatArray, ...], weights: FloatArray
) -> tuple[list[FloatArray], FloatArray]:
    """Distinct rows of ``columns`` with the summed weights of the rows they stand for."""
    keep = weights > 0
    if not keep.all():
        columns = tuple(c[keep] for c in columns)
        weights = weights[keep]
    distinct, inverse = unique_rows(*columns)
    counts = np.bincount(inverse, weights=weights, minlength=len(distinct[0]))
    return distinct, counts.astype(np.float64, copy=False)


def compact_summary(
    x: FloatArray, t_x: FloatArray, T: FloatArray, weights: FloatArray
) -> tuple[tuple[FloatArray, FloatArray, FloatArray], FloatArray]:
    """The same customers in fewer weighted rows: one row per distinct T for the one-time
    buyers (x = 0, t_x = 0), and one per distinct (x, t_x, T) for the repeat buyers, unless a
    sample shows their rows are nearly all distinct (continuous time), when hashing them
    would cost more than it saves. One-time buyers come first."""
    keep = weights > 0
    if not keep.all():
        x, t_x, T, weights = x[keep], t_x[keep], T[keep], weights[keep]
    none = x == 0
    codes, T0 = _codes(T[none])
    w0 = np.bincount(codes, weights=weights[none], minlength=len(T0)).astype(np.float64)
    rep = ~none
    columns = [x[rep], t_x[rep], T[rep]]
    w = weights[rep]
    if len(w) <= _SAMPLE_ABOVE or _has_repeats(columns):
        columns, w = collapse(tuple(columns), w)
    zeros = np.zeros(len(T0))
    return (
        (
            np.concatenate([zeros, columns[0]]),
            np.concatenate([zeros, columns[1]]),
            np.concatenate([T0, columns[2]]),
        ),
        np.concatenate([w0, w]),
    )


_SAMPLE_ABOVE = 100_000
_SAMPLE = 20_000


def subsample(
    x: FloatArray, w: FloatArray, size: int = _SAMPLE, seed: int = 0
) -> tuple[NDArray[np.int64], FloatArray] | None:
    """Rows and weights of a subsample for :func:`maximize`'s warm start, or None when the
    data are small enough to fit directly: every one-time-buyer row (few: one per distinct
    T after :func:`compact_summary`) and ``size`` random repeat-buyer rows, their weights
    scaled so the subsample stands for as many customers. Seeded: fits are reproducible."""
    repeat = np.flatnonzero(x > 0)
    if len(repeat) <= 4 * size:
        return None
    rng = np.random.default_rng(seed)
    picked = rng.choice(repeat, size, replace=False)
    rows = np.concatenate([np.flatnonzero(x == 0), picked])
    weights = w[rows].copy()
    weights[-size:] *= float(w[repeat].sum()) / float(w[picked].sum())
    return rows, weights


def _has_repeats(columns: list[FloatArray]) -> bool:
    """Whether a random sample of the rows has at least 10 % duplicates (seeded: a fit is
    reproducible)."""
    sample = np.random.default_rng(0).integers(0, len(columns[0]), _SAMPLE)
    distinct, _ = unique_rows(*(c[sample] for c in columns))
    return len(distinct[0]) < 0.9 * _SAMPLE


def dot(a: FloatArray, b: FloatArray) -> float:
    """Σ a·b without BLAS: ``a @ b`` goes through a threaded BLAS call that is 100x slower
    on a busy two-core machine (measured: 8 ms against 0.05 ms for 100 k values)."""
    return float(np.einsum("i,i->", a, b))


# --- the optimizer --------------------------------------------------------------------------

Objective = Callable[[FloatArray], tuple[float, FloatArray]]


def numerical_gradient(value: Callable[[FloatArray], float], step: float = 1e-6) -> Objective:
    """Value and central-difference gradient of ``value`` (for likelihoods with hyp2f1 terms,
    whose derivatives in the parameters have no convenient closed form)."""

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        f = value(theta)
        grad = np.empty_like(theta)
        for i in range(len(theta)):
            e = np.zeros_like(theta)
            e[i] = step
            grad[i] = (value(theta + e) - value(theta - e)) / (2 * step)
        return f, grad

    return objective


def _guarded(objective: Objective, start: FloatArray) -> Objective:
    def guarded(theta: FloatArray) -> tuple[float, FloatArray]:
        # Far outside the box the likelihood is numerically meaningless; steer BFGS back.
        if np.abs(theta - start).max() > 2 * _LOG_PARAM_LIMIT:
            return math.inf, np.sign(theta - start)
        f, g = objective(theta)
        if not math.isfinite(f) or not np.isfinite(g).all():
            return math.inf, np.zeros_like(theta)
        return f, g

    return guarded


def maximize(
    objective: Objective,
    x0: FloatArray,
    *,
    model: str,
    names: tuple[str, ...],
    gtol: float = 1e-8,
    warm_start: Objective | None = None,
) -> tuple[FloatArray, dict[str, Any]]:
    """Minimize a penalized mean negative log-likelihood over log-parameters with BFGS.

    ``warm_start``, the same objective on a subsample (see :func:`subsample`), is minimized
    first; the full fit then starts from its optimum *and* its inverse-Hessian estimate
    (the objectives are means per customer, so their curvatures agree), which cuts the full
    evaluations about five-fold (1 M members: 5 instead of 28).

    Returns the optimum and diagnostics. BFGS often stops with "precision loss" at a true
    optimum (the line search cannot improve the last digits); that is accepted when the
    gradient is tiny. Raises :class:`FitNotConverged` otherwise, or when a parameter runs off
    to 0 or infinity.
    """
    started = time.perf_counter()
    start = x0
    options: dict[str, Any] = {"gtol": gtol, "maxiter": 1000}
    warm_evaluations = 0
    with np.errstate(all="ignore"):
        if warm_start is not None:
            first = minimize(
                _guarded(warm_start, start), x0, jac=True, method="BFGS", options=options
            )
            if np.isfinite(first.fun) and np.abs(first.x - start).max() < _LOG_PARAM_LIMIT:
                x0 = first.x
                inverse = np.asarray(getattr(first, "hess_inv", None))
                if inverse.shape == (len(x0), len(x0)):
                    inverse = (inverse + inverse.T) / 2  # BFGS's estimate, made exactly symmetric
                    if np.isfinite(inverse).all() and np.linalg.eigvalsh(inverse).min() > 0:
                        options["hess_inv0"] = inverse
            warm_evaluations = int(first.nfev)
        result = minimize(_guarded(objective, start), x0, jac=True, method="BFGS", options=options)
    gradient = float(np.abs(result.jac).max()) if result.jac is not None else math.inf
    diagnostics = {
        "iterations": int(result.nit),
        "evaluations": int(result.nfev),
        "warm_start_evaluations": warm_evaluations,
        "gradient_norm": gradient,
        "optimizer_message": str(result.message),
        "seconds": time.perf_counter() - started,
    }
    if not math.isfinite(result.fun) or not (result.success or gradient < 1e-5):
        raise FitNotConverged(
            f"The {model} fit did not converge ({result.message}; gradient {gradient:.2g} after "
            f"{result.nit} iterations). Try a small penalizer (e.g. 0.001) or more data.",
            details=diagnostics,
        )
    drift = result.x - start
    if np.abs(drift).max() > _LOG_PARAM_LIMIT:
        runaway = ", ".join(
            f"{name} → {'infinity' if d > 0 else '0'}"
            for name, d in zip(names, drift, strict=True)
            if abs(d) > _LOG_PARAM_LIMIT
        )
        raise FitNotConverged(
            f"The {model} fit has no interior maximum on these data ({runaway}): the data do "
            "not identify the model. Try a small penalizer (e.g. 0.001) or more data.",
            details={
                **diagnostics,
                "params": dict(zip(names, np.exp(result.x).tolist(), strict=True)),
            },
        )
    return np.asarray(result.x, dtype=np.float64), diagnostics


# --- the models' common shell ---------------------------------------------------------------


class FittedModel:
    """Parameters, fit diagnostics, and JSON save/load for a maximum-likelihood model."""

    kind: ClassVar[str]
    param_names: ClassVar[tuple[str, ...]]

    def __init__(self, penalizer: float = 0.0) -> None:
        if not (math.isfinite(penalizer) and penalizer >= 0):
            raise InvalidRequest("penalizer must be a finite number >= 0.")
        self.penalizer = float(penalizer)
        self._params: dict[str, float] | None = None
        self.log_likelihood: float = math.nan
        #: How the fit went: customers, distinct rows, iterations, gradient, seconds.
        self.diagnostics: dict[str, Any] = {}

    @property
    def params(self) -> dict[str, float]:
        """The fitted parameters by name (raises :class:`ModelNotFitted` before a fit)."""
        if self._params is None:
            raise ModelNotFitted(f"The {self.kind} model has not been fitted or loaded.")
        return dict(self._params)

    @property
    def is_fitted(self) -> bool:
        return self._params is not None

    def _set_params(self, values: FloatArray) -> None:
        self._params = {n: float(v) for n, v in zip(self.param_names, values, strict=True)}

    def __repr__(self) -> str:
        if self._params is None:
            return f"<{type(self).__name__} (not fitted)>"
        shown = ", ".join(f"{k}={v:.4g}" for k, v in self._params.items())
        return f"<{type(self).__name__} {shown}, log-likelihood {self.log_likelihood:.1f}>"

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to predict again, as JSON-ready values."""
        return {
            "model": self.kind,
            "format_version": FORMAT_VERSION,
            "params": self.params,
            "penalizer": self.penalizer,
            "log_likelihood": self.log_likelihood,
            "diagnostics": self.diagnostics,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """A model from :meth:`to_dict`'s output; raises :class:`InvalidModelFile` if it is not
        one of this kind."""
        if not isinstance(data, Mapping) or data.get("model") != cls.kind:
            found = data.get("model") if isinstance(data, Mapping) else type(data).__name__
            raise InvalidModelFile(f"Expected a saved {cls.kind} model, found {found!r}.")
        if data.get("format_version") != FORMAT_VERSION:
            raise InvalidModelFile(
                f"Unsupported {cls.kind} model format {data.get('format_version')!r}."
            )
        params = data.get("params")
        if not isinstance(params, Mapping) or set(params) != set(cls.param_names):
            raise InvalidModelFile(f"A {cls.kind} model needs parameters {cls.param_names}.")
        values = []
        for name in cls.param_names:
            value = params[name]
            if not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
                raise InvalidModelFile(f"Parameter {name} must be a positive number.")
            values.append(float(value))
        try:
            model = cls(penalizer=float(data.get("penalizer", 0.0)))
            model.log_likelihood = float(data.get("log_likelihood", math.nan))
        except (TypeError, ValueError, InvalidRequest) as exc:
            raise InvalidModelFile(f"A damaged {cls.kind} model: {exc}") from exc
        model._set_params(np.array(values))
        model.diagnostics = dict(data.get("diagnostics") or {})
        return model

    def save(self, path: str | Path) -> None:
        """Write the model as JSON (no pickle: a model file is data, never code)."""
        Path(path).write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a model written by :meth:`save`."""
        try:
            data = orjson.loads(Path(path).read_bytes())
        except OSError as exc:
            raise InvalidModelFile(f"{path} cannot be read: {exc.strerror}.") from exc
        except orjson.JSONDecodeError as exc:
            raise InvalidModelFile(f"{path} is not a JSON model file: {exc}") from exc
        return cls.from_dict(data)
