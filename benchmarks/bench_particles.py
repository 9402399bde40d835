"""Speed of the token velocity evaluations (printed, never asserted).

1. Circle fast path (Fourier-Bessel power sums, O(N K)) at N = 10^6, beta = 5, USA and SA.
2. Fast path vs the direct O(N^2) tiled sum at N = 20000, beta = 5: speed-up and agreement.
3. General d: blocked O(N^2) evaluation (tiles of block x block, online log-sum-exp) at
   N = 20000, d = 16 with random Gaussian Q, K, V: time and peak traced memory (tracemalloc
   sees numpy buffers), against the 3.2 GB a dense N x N float64 matrix would take.
"""

from __future__ import annotations

import sys
import time
import tracemalloc

import numpy as np
from timing import best_time  # benchmarks/timing.py (script folder on sys.path)

from solvers.particles import ParticleSystem


def fast_path_large(n: int = 10**6, beta: float = 5.0) -> None:
    for model in ("usa", "sa"):
        s = ParticleSystem(n, 2, beta, model, summation="fourier", seed=0)
        theta = s.uniform_sample()
        t = best_time(lambda s=s, theta=theta: s.velocity(theta))
        print(f"circle fast path, {model.upper():3}, N = {n:.0e}, beta = {beta:g}: "
              f"{t * 1e3:8.1f} ms per velocity ({s.fourier_terms} Fourier terms, "
              f"{t / (n * s.fourier_terms) * 1e9:.2f} ns per token-term)")


def fast_vs_direct(n: int = 20000, beta: float = 5.0) -> None:
    fast = ParticleSystem(n, 2, beta, summation="fourier", seed=1)
    direct = ParticleSystem(n, 2, beta, summation="direct", block=1024)
    theta = fast.uniform_sample()
    t_fast = best_time(lambda: fast.velocity(theta))
    t0 = time.perf_counter()
    v_direct = direct.velocity(theta)
    t_direct = time.perf_counter() - t0
    v_fast = fast.velocity(theta)
    err = np.max(np.abs(v_fast - v_direct)) / np.max(np.abs(v_direct))
    print(f"\ncircle, N = {n}, beta = {beta:g}: direct O(N^2) {t_direct:.2f} s, fast "
          f"{t_fast * 1e3:.2f} ms, speed-up {t_direct / t_fast:.0f}x, max relative "
          f"difference {err:.1e}")


def blocked_general_d(n: int = 20000, d: int = 16, beta: float = 5.0) -> None:
    print()
    for block in (256, 1024, 2048):
        s = ParticleSystem(n, d, beta, "sa", qkv="gaussian", seed=2, block=block)
        x = s.uniform_sample()
        s.velocity(x)  # warm-up
        tracemalloc.start()
        t0 = time.perf_counter()
        s.velocity(x)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"blocked S^{d - 1}, SA, gaussian QKV, N = {n}, d = {d}, block = {block:4d}: "
              f"{elapsed:.2f} s per velocity, peak traced memory {peak / 2**20:.0f} MiB "
              f"(dense N x N float64: {n * n * 8 / 2**20:.0f} MiB)")


def main() -> int:
    fast_path_large()
    fast_vs_direct()
    blocked_general_d()
    return 0


if __name__ == "__main__":
    sys.exit(main())
