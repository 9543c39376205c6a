"""BG/NBD fit on 1 M simulated members: ours against lifetimes and PyMC-Marketing.

    python benchmarks/clv_fit.py [--members 1000000] [--penalizer 0] [--runs 3] [--continuous]

Members are drawn from the BG/NBD process with the CDNOW parameters (r = 0.243,
α = 4.414, a = 0.793, b = 2.426, weeks) and a CDNOW-like window: first purchases spread over
12 weeks, calibration ending at week 39, recency and T on a day grid as ``rfm_summary`` makes
them from daily data. Seeded, so every run fits the same data. Prints our median of
``--runs`` fits, one lifetimes ``BetaGeoFitter`` fit with the same penalizer on the same rows
(and, for reference, on our collapsed rows with weights), PyMC-Marketing's MAP fit when it is
installed (``pip install -e '.[bench]'``; it is not a dependency), and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from memberwise.predict.bgnbd import BetaGeoModel, simulate
from memberwise.predict.fitting import collapse

CDNOW = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}


def members(
    n: int, seed: int, *, continuous: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    T = rng.integers(27 * 7, 39 * 7 + 1, n) / 7  # weeks, whole days
    x, t_x, T = simulate(CDNOW, T, seed=rng)
    if continuous:  # every repeat buyer distinct: the worst case for collapsing
        return x, t_x, T
    return x, np.floor(t_x * 7) / 7, T  # the last purchase on a whole day


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--penalizer", type=float, default=0.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-lifetimes", action="store_true")
    parser.add_argument("--skip-pymc", action="store_true")
    parser.add_argument(
        "--continuous", action="store_true", help="recency in continuous time, not whole days"
    )
    args = parser.parse_args()

    seconds, (x, t_x, T) = timed(
        lambda: members(args.members, args.seed, continuous=args.continuous)
    )
    print(
        f"simulated {args.members:,} members in {seconds:.2f} s "
        f"({int((x > 0).sum()):,} repeat buyers)"
    )

    BetaGeoModel().fit(x[:10_000], t_x[:10_000], T[:10_000])  # warm-up (imports), untimed
    times = []
    for _ in range(args.runs):
        seconds, ours = timed(lambda: BetaGeoModel(args.penalizer).fit(x, t_x, T))
        times.append(seconds)
    ours_time = statistics.median(times)
    shown = ", ".join(f"{k}={v:.4f}" for k, v in ours.params.items())
    print(
        f"memberwise BetaGeoModel: {ours_time:.3f} s (median of {args.runs}: "
        f"{', '.join(f'{t:.3f}' for t in times)}); {shown}; LL {ours.log_likelihood:,.1f}; "
        f"{ours.diagnostics['distinct_rows']:,} distinct rows, "
        f"{ours.diagnostics['iterations']} iterations"
    )

    if not args.skip_lifetimes:
        try:
            from lifetimes import BetaGeoFitter
        except ImportError as exc:
            print(f"lifetimes: not installed ({exc})")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                seconds, theirs = timed(
                    lambda: BetaGeoFitter(penalizer_coef=args.penalizer).fit(x, t_x, T)
                )
                p = theirs.params_
                gap = max(abs(p[k] / ours.params[k] - 1) for k in CDNOW)
                print(
                    f"lifetimes BetaGeoFitter: {seconds:.3f} s; largest relative parameter "
                    f"difference {gap:.1e}; ratio {seconds / ours_time:.1f}x"
                )
                (ux, ut, uT), w = collapse((x, t_x, T), np.ones(len(x)))
                weighted, _ = timed(
                    lambda: BetaGeoFitter(penalizer_coef=args.penalizer).fit(ux, ut, uT, weights=w)
                )
                print(
                    f"  (lifetimes on our {len(ux):,} collapsed rows with weights: "
                    f"{weighted:.3f} s, ratio {weighted / ours_time:.1f}x)"
                )

    if not args.skip_pymc:
        pymc_fit(x, t_x, T, ours_time)


def pymc_fit(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, ours_time: float) -> None:
    """PyMC-Marketing's MAP fit with its default priors (so its estimates differ a little
    from maximum likelihood). Its graph is compiled on a small sample first, untimed."""
    try:
        import pandas as pd
        from pymc_marketing import __version__
        from pymc_marketing.clv import BetaGeoModel as PyMCBetaGeo
    except ImportError as exc:
        print(f"PyMC-Marketing: not installed ({exc}); pip install -e '.[bench]'")
        return

    def frame(n: int) -> Any:
        return pd.DataFrame(
            {"customer_id": np.arange(n), "frequency": x[:n], "recency": t_x[:n], "T": T[:n]}
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        PyMCBetaGeo(data=frame(1000)).fit(method="map", progressbar=False)
        model = PyMCBetaGeo(data=frame(len(x)))
        seconds, _ = timed(lambda: model.fit(method="map", progressbar=False))
    summary = model.fit_summary()
    shown = ", ".join(f"{k}={summary[k]:.4f}" for k in CDNOW)
    print(
        f"PyMC-Marketing {__version__} BetaGeoModel MAP: {seconds:.3f} s; {shown}; "
        f"ratio {seconds / ours_time:.1f}x"
    )


if __name__ == "__main__":
    main()
