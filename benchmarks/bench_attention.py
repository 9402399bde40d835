"""Speed of the general-attention circle drift (printed, never asserted; `make bench`).

1. One SA right-hand side of fv2 with B = diag(3, 1), V = diag(1, 2), beta = 100 at
   M = 1024, 4096, 8192: our drift (kernel matrices built once, three BLAS matrix-vector
   products per right-hand side) against a plain dense numpy quadrature of the same velocity
   (the kernel e^{beta <x, B y>} evaluated for every pair at every call, log-sum-exp
   shifted, midpoint rule), with the one-off build time and the matrices' memory.
2. One fv2 step at zero temperature (the fixed field of seed 004 eq. 3) against one step of
   the convolution solver (FFT), M = 1024 and 8192.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
from timing import best_time  # benchmarks/timing.py (script folder on sys.path)

from meanfield import initial
from solvers.circle import FiniteVolume
from solvers.drifts.attention import GeneralAttention
from solvers.stepping import StepStats, advance

B, V, BETA = np.diag([3.0, 1.0]), np.diag([1.0, 2.0]), 100.0


def dense_velocity(theta: np.ndarray, p: np.ndarray) -> np.ndarray:
    """What a notebook does: the whole kernel at every call (faces, midpoint rule)."""
    faces = theta + 0.5 * (theta[1] - theta[0])
    x = np.stack([np.cos(faces), np.sin(faces)], axis=1)
    tau = np.stack([-np.sin(faces), np.cos(faces)], axis=1)
    y = np.stack([np.cos(theta), np.sin(theta)])
    s = BETA * (x @ (B @ y))
    s -= s.max(axis=1, keepdims=True)
    w = np.exp(s) * p[None, :]
    return np.einsum("ij,ij->i", w, tau @ (V @ y)) / w.sum(axis=1)


def rhs_table(sizes) -> None:
    print(f"{'M':>6} {'build [s]':>9} {'matrices [MB]':>13} {'rhs ours [ms]':>13} "
          f"{'rhs dense [ms]':>14} {'dense/ours':>10}")
    for m in sizes:
        start = time.perf_counter()
        s = FiniteVolume(m, drift=GeneralAttention(BETA, "sa", B, V))
        build = time.perf_counter() - start
        d = s.drift
        mb = sum(a.nbytes for a in (d._num_f, d._num_c, d._z_c, d._z_abs)) / 2**20
        q = s.split(initial.mode(m, 1, 0.5 / (2 * math.pi), -1.0))
        p = s.join(q)
        ours = best_time(lambda s=s, q=q: s.rhs(q))
        dense = best_time(lambda s=s, p=p: dense_velocity(s.theta, p), repeat=3)
        print(f"{m:6d} {build:9.2f} {mb:13.0f} {ours * 1e3:13.2f} {dense * 1e3:14.2f} "
              f"{dense / ours:10.1f}")
        del s, d


def step_table(sizes) -> None:
    print(f"{'M':>6} {'beta = inf step [us]':>20} {'convolution step [us]':>21} {'ratio':>6}")
    for m in sizes:
        p = initial.mode(m, 1, 0.5 / (2 * math.pi), -1.0)
        zt = FiniteVolume(m, drift=GeneralAttention(math.inf, "sa", B, V), dt=1e-4)
        conv = FiniteVolume(m, 5.0, "sa", dt=1e-4)

        def steps(s, q0):
            advance(s, q0, 0.0, 1.0, stats=StepStats(), max_steps=20)

        a = best_time(lambda zt=zt, p=p: steps(zt, zt.split(p))) / 20
        b = best_time(lambda conv=conv, p=p: steps(conv, conv.split(p))) / 20
        print(f"{m:6d} {a * 1e6:20.0f} {b * 1e6:21.0f} {a / b:6.2f}")


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    rhs_table((1024, 2048) if quick else (1024, 4096, 8192))
    step_table((1024,) if quick else (1024, 8192))
