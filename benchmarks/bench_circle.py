"""Speed of the circle schemes (printed, never asserted; `make bench`).

For fv2, rusanov and lf at M = 2^10 .. 2^16: steps per second (SSP-RK3 for fv2/rusanov,
Euler for lf) on a clustering state at beta = 5, and the cost of one right-hand side divided
by the cost of one planned rfft + irfft pair of the same size, measured in the same run.
Then the speed-up of our FFT Lax-Friedrichs step over a direct O(M^2) circular convolution
(what the published notebook does) at M = 9999.
"""

from __future__ import annotations

import sys

import numpy as np
from timing import best_time  # benchmarks/timing.py (script folder on sys.path)

from meanfield import initial
from solvers.circle import make_scheme
from solvers.circle_grid import circle_multipliers
from solvers.fft import RealFFT


def clustered_state(m: int) -> np.ndarray:
    return initial.von_mises_bumps(m, [0.3, 2.4, 4.5], kappa=30.0)


def scheme_table() -> None:
    print(f"{'scheme':>8} {'M':>7} {'steps/s':>10} {'rhs [us]':>10} {'fft pair [us]':>13} "
          f"{'rhs/pair':>9}")
    for scheme in ("fv2", "rusanov", "lf"):
        for e in range(10, 17):
            m = 2**e
            s = make_scheme(scheme, m, 5.0, fft_planner=PLANNER)
            q = s.split(clustered_state(m))
            fft = RealFFT(m, planner=PLANNER)
            mult = circle_multipliers(s.drift.kernel, m)
            t_pair = best_time(lambda fft=fft, q=q, mult=mult: fft.convolve(q, mult))
            t_rhs = best_time(lambda s=s, q=q: s.rhs(q))
            nsteps = 20
            from solvers.stepping import StepStats, advance

            def steps(s=s, q=q, nsteps=nsteps):
                advance(s, q, 0.0, 1.0, integrator=s.integrator, stats=StepStats(),
                        max_steps=nsteps)
            t_steps = best_time(steps, repeat=3) / nsteps
            print(f"{scheme:>8} {m:7d} {1 / t_steps:10.0f} {t_rhs * 1e6:10.1f} "
                  f"{t_pair * 1e6:13.1f} {t_rhs / t_pair:9.2f}")


def direct_lf_step(u: np.ndarray, hprime: np.ndarray, dx: float, dt: float) -> np.ndarray:
    """The notebook's Lax-Friedrichs step: v by a direct O(M^2) circular convolution."""
    m = u.size
    ext = np.concatenate([u, u])
    v = np.convolve(ext, hprime, mode="valid")[1 : m + 1] * dx  # v_i = sum_j h'(x_i - x_j) u_j
    f = u * v
    return 0.5 * (np.roll(u, 1) + np.roll(u, -1)) - dt / (2 * dx) * (np.roll(f, -1) - np.roll(f, 1))


def speedup_vs_direct(m: int = 9999, beta: float = 5.0) -> None:
    dx = 2 * np.pi / m
    x = np.arange(m) * dx
    hprime = -np.exp(beta * np.cos(x)) * np.sin(x)  # d/dtheta e^{beta cos theta}/beta
    u = clustered_state(m)
    dt = 0.02 * dx
    # check the direct step against ours before timing it
    s = make_scheme("lf", m, beta, dt=dt, fft_planner=PLANNER)
    q = s.split(u)
    ours = s.join(s.euler_update(q, dt, s.rhs(q)))
    ref = direct_lf_step(u, hprime, dx, dt)
    err = np.max(np.abs(ours - ref)) / np.max(np.abs(ref))
    t_direct = best_time(lambda: direct_lf_step(u, hprime, dx, dt), repeat=3, min_time=0.2)
    t_ours = best_time(lambda: s.euler_update(q, dt, s.rhs(q)))
    print(f"\nLax-Friedrichs step at M = {m}: direct O(M^2) convolution {t_direct * 1e3:.2f} ms, "
          f"FFT {t_ours * 1e3:.3f} ms, speed-up {t_direct / t_ours:.0f}x "
          f"(max relative difference {err:.1e})")


PLANNER = "measure"


def main() -> int:
    global PLANNER
    for planner in ("measure", "estimate"):
        PLANNER = planner
        print(f"\nFFTW planner: {planner}")
        scheme_table()
        speedup_vs_direct()
    return 0


if __name__ == "__main__":
    sys.exit(main())
