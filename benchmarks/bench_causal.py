"""Speed of causal attention (printed, never asserted; `make bench`).

1. The causal right-hand side with S slices of M cells (one FFT of all slices, a prefix sum,
   two inverse FFTs, fv2 per slice) against S independent full-attention fv2 right-hand sides
   (what running the slices as separate solvers would cost): the prefix structure is not
   meant to cost more than about 2x.
2. The same with general B = Q^T K and V (the attention drift's kernel matrices on all S
   prefix sums, one matrix product per field) against S independent attention-drift fv2
   right-hand sides.
3. A batched causal particle run (n = 200, beta = 64, 16 seeds in one array, RK4 dt = 0.1 for
   5 time units) against the same 16 seeds one at a time.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from timing import best_time  # benchmarks/timing.py (script folder on sys.path)

from meanfield import initial
from solvers.causal import CausalCircle
from solvers.circle import FiniteVolume
from solvers.particles import ParticleSystem
from solvers.stepping import StepStats


def rhs_table(cases) -> None:
    print(f"{'S':>4} {'M':>6} {'causal rhs [ms]':>15} {'S x full rhs [ms]':>17} {'ratio':>6}")
    for s, m in cases:
        c = CausalCircle(m, s, 9.0, "sa")
        q = c.split(np.stack([initial.white_noise(m, 0.01, seed=k) for k in range(s)]))
        full = FiniteVolume(m, 9.0, "sa")
        qf = full.split(initial.white_noise(m, 0.01, seed=0))
        a = best_time(lambda c=c, q=q: c.rhs(q))
        b = best_time(lambda full=full, qf=qf: full.rhs(qf)) * s
        print(f"{s:4d} {m:6d} {a * 1e3:15.2f} {b * 1e3:17.2f} {a / b:6.2f}")


def general_table(cases) -> None:
    from solvers.drifts.attention import GeneralAttention

    b, v = np.array([[1.0, 0.3], [-0.2, 0.8]]), np.array([[1.0, 0.1], [0.0, 0.7]])
    print(f"general B, V\n{'S':>4} {'M':>6} {'causal rhs [ms]':>15} "
          f"{'S x full rhs [ms]':>17} {'ratio':>6}")
    for s, m in cases:
        c = CausalCircle(m, s, 9.0, "sa", B=b, V=v)
        q = c.split(np.stack([initial.white_noise(m, 0.01, seed=k) for k in range(s)]))
        full = FiniteVolume(m, drift=GeneralAttention(9.0, "sa", b, v))
        qf = full.split(initial.white_noise(m, 0.01, seed=0))
        a = best_time(lambda c=c, q=q: c.rhs(q))
        t = best_time(lambda full=full, qf=qf: full.rhs(qf)) * s
        print(f"{s:4d} {m:6d} {a * 1e3:15.2f} {t * 1e3:17.2f} {a / t:6.2f}")


def particles_table(seeds: int = 16) -> None:
    def run(batch):
        ps = ParticleSystem(200, 2, 64.0, "sa", mask="causal", integrator="rk4", dt=0.1,
                            batch=batch, seed=0)
        x0 = ps.uniform_sample(batch, 0)
        start = time.perf_counter()
        ps.advance(x0, 0.0, 5.0, StepStats())
        return time.perf_counter() - start

    batched = run(seeds)
    one = sum(run(1) for _ in range(seeds))
    print(f"causal particles n = 200, {seeds} seeds to t = 5: batched {batched:.2f} s, one at a "
          f"time {one:.2f} s (x{one / batched:.1f})")


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    rhs_table([(16, 512), (64, 512)] if quick else [(16, 512), (64, 512), (64, 2048),
                                                    (256, 1024)])
    general_table([(16, 256)] if quick else [(16, 256), (64, 512)])
    particles_table(4 if quick else 16)
