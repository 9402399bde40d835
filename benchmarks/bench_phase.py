"""Speed of phase diagrams and of the staircase (printed, never asserted; `make bench`).

1. Seed 001 Fig. 2 for d = 2 (n = 32, 1024 realisations, 90 betas, 200 output times on
   [0, 30], Euler dt = 0.1 landing on the outputs): the wall time of ``meanfield phase``
   (fused kernels, both cores), and on every 10th beta the same computation against a plain
   numpy port of the published algorithm (explicit Euler on the unprojected softmax average,
   renormalise; dense softmax over the batch; P and Ebar at the outputs) at the same steps.
2. The issue's small case: 256 systems of 32 tokens, d = 2, beta = 4, 300 Euler steps:
   ``ParticleSystem`` (integrator euler-unprojected), the port, and the fused kernel.
3. The staircase at beta = 4000 (seed 000 Fig. 4's configuration, normalised-gradient
   clock): seconds per decade of physical time.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from meanfield.phase import PhaseConfig, initial_tokens, run_phase
from solvers.particles import ParticleSystem
from solvers.particles.fused import run_batch, step_schedule
from solvers.particles.staircase import MergingCircle
from solvers.stepping import StepStats


def port(x: np.ndarray, beta: np.ndarray, steps: np.ndarray, counts: np.ndarray,
         delta: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """The published algorithm in numpy: x <- normalize(x + h A x), A = softmax(beta G)."""
    b = beta[:, None, None]
    p, k = [], 0
    for c in counts:
        for _ in range(c):
            g = x @ x.transpose(0, 2, 1)
            a = np.exp(b * (g - 1.0))
            a /= a.sum(-1, keepdims=True)
            x = x + steps[k] * (a @ x)
            x /= np.linalg.norm(x, axis=-1, keepdims=True)
            k += 1
        g = x @ x.transpose(0, 2, 1)
        n = x.shape[1]
        p.append(((g >= 1 - delta).sum((1, 2)) - n) / (n * (n - 1)))
        np.exp(b * (g - 1.0)).mean((1, 2))
    return x, np.array(p)


def fig2(quick: bool) -> None:
    cfg = PhaseConfig(dim=2, realisations=256 if quick else 1024, samples=0).check()
    betas = cfg.beta_values()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_phase(cfg, str(Path(tmp) / "fig2.h5"), quiet=True)
        full = time.perf_counter() - start
    sub = betas[::10]
    steps, counts = step_schedule(cfg.times(), cfg.dt)
    x0 = np.concatenate([initial_tokens(cfg)] * sub.size)
    beta = np.repeat(sub, cfg.realisations)
    start = time.perf_counter()
    fused = run_batch(x0, beta, cfg.times(), cfg.dt)
    t_fused = time.perf_counter() - start
    start = time.perf_counter()
    xp, _ = port(x0.copy(), beta, steps, counts)
    t_port = time.perf_counter() - start
    print(f"seed 001 Fig. 2, d = 2: {cfg.realisations} realisations x {betas.size} betas x "
          f"{cfg.outputs} outputs ({steps.size} Euler steps): meanfield phase {full:.1f} s")
    print(f"  on {sub.size} of the betas: fused {t_fused:.2f} s, numpy port {t_port:.2f} s "
          f"-> x{t_port / t_fused:.2f} (port for all {betas.size} betas ~ "
          f"{t_port * betas.size / sub.size:.0f} s); max |x_fused - x_port| = "
          f"{np.abs(fused['x'] - xp).max():.1e}")


def small() -> None:
    n_sys, beta, h = 256, 4.0, 0.1
    times = np.arange(301) * h
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((n_sys, 32, 2))
    x0 /= np.linalg.norm(x0, axis=-1, keepdims=True)
    steps, _ = step_schedule(times, h)
    run_batch(x0[:2], np.full(2, beta), times[:3], h)     # compile
    ps = ParticleSystem(32, 2, beta, "sa", integrator="euler-unprojected", dt=h,
                        batch=n_sys, representation="vectors")
    start = time.perf_counter()
    ps.advance(ps.check_state(x0.copy()), 0.0, 30.0, StepStats())
    t_ps = time.perf_counter() - start
    start = time.perf_counter()
    port(x0.copy(), np.full(n_sys, beta), steps, np.array([steps.size]))
    t_port = time.perf_counter() - start
    start = time.perf_counter()
    run_batch(x0, np.full(n_sys, beta), [times[-1]], h)
    t_fused = time.perf_counter() - start
    print(f"256 systems x 32 tokens, d = 2, beta = 4, 300 Euler steps: ParticleSystem "
          f"{t_ps:.2f} s, numpy port {t_port:.2f} s, fused {t_fused:.2f} s (port/fused "
          f"x{t_port / t_fused:.2f}, ParticleSystem/port x{t_ps / t_port:.2f})")


def staircase() -> None:
    theta0 = 0.5 * np.array([0, 0.5, 2, 4, 7]) * math.log(2000) / math.sqrt(2000)
    mc = MergingCircle(4000.0, "usa", clock="gradient", window=1e-3, normalization="1/N^2")
    st, prev = mc.initial_state(theta0), 0.0
    start = time.perf_counter()
    for s in np.geomspace(1e-5, 0.3, 400):
        st = mc.advance(st, prev, s)
        prev = s
    wall = time.perf_counter() - start
    decades = st.log1p_t / math.log(10.0)
    print(f"staircase beta = 4000 (Fig. 7 configuration, gradient clock, 400 outputs): "
          f"{wall:.2f} s for {decades:.0f} decades of physical time "
          f"({wall / decades * 1e3:.1f} ms per decade), {len(st.merges)} merges")


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    small()
    staircase()
    fig2(quick)
