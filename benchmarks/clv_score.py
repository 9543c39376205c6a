"""Scoring 10 M members with fitted CLV models: P(alive), expected purchases, spend, CLV.

    python benchmarks/clv_score.py [--members 10000000]

Members are drawn from the BG/NBD process with the CDNOW parameters (as in clv_fit.py, on a
day grid) and their average repeat spend from the Gamma-Gamma process with the paper's
p = 6.25, q = 3.74, γ = 15.44. The models are fitted on the first million members (not
timed); then every member is scored. Prints each step's wall time and the total.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from memberwise.predict.bgnbd import BetaGeoModel, simulate
from memberwise.predict.clv import customer_lifetime_value
from memberwise.predict.fitting import PERIODS_PER_MONTH
from memberwise.predict.gammagamma import GammaGammaModel

CDNOW = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
SPEND = {"p": 6.25, "q": 3.74, "v": 15.44}


def members(n: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    T = rng.integers(27 * 7, 39 * 7 + 1, n) / 7
    x, t_x, T = simulate(CDNOW, T, seed=rng)
    t_x = np.floor(t_x * 7) / 7
    # mean of x transaction values Gamma(p, ν), ν ~ Gamma(q, γ): Gamma(p x, rate ν x)
    nu = rng.gamma(SPEND["q"], 1 / SPEND["v"], n)
    m = np.zeros(n)
    repeat = x > 0
    m[repeat] = rng.gamma(SPEND["p"] * x[repeat], 1 / (nu[repeat] * x[repeat]))
    return x, t_x, T, np.round(m, 2)  # cents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    started = time.perf_counter()
    x, t_x, T, m = members(args.members, args.seed)
    print(f"simulated {args.members:,} members in {time.perf_counter() - started:.1f} s")
    fit = slice(0, 1_000_000)
    bg = BetaGeoModel().fit(x[fit], t_x[fit], T[fit])
    gg = GammaGammaModel().fit(x[fit], m[fit])
    print(f"fitted on 1 M: {bg!r} {gg!r}")

    steps: list[tuple[str, float]] = []

    def step(name: str, run):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        values = run()
        seconds = time.perf_counter() - started
        assert np.isfinite(values).all(), name
        steps.append((name, seconds))
        print(f"{name:<44} {seconds:7.2f} s   mean {values.mean():.4f}")
        return values

    step("probability_alive", lambda: bg.probability_alive(x, t_x, T))
    step(
        "conditional_expected_purchases (52 weeks)",
        lambda: bg.conditional_expected_purchases(52.0, x, t_x, T),
    )
    step("conditional_expected_spend", lambda: gg.conditional_expected_spend(x, m))
    step(
        "customer_lifetime_value (12 months)",
        lambda: customer_lifetime_value(
            bg, gg, x, t_x, T, m, months=12, periods_per_month=PERIODS_PER_MONTH["W"]
        ),
    )
    total = sum(s for _, s in steps)
    print(f"{'total':<44} {total:7.2f} s for {args.members:,} members")


if __name__ == "__main__":
    main()
