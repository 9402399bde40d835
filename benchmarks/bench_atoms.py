"""Atoms on the circle (solvers.atoms): a beta = 7 noise run from uniform to one cluster, the
same against a particle run from the same initial density, and the per-step cost with atoms
against without. Prints figures measured in this run.

    .venv/bin/python benchmarks/bench_atoms.py
"""

from __future__ import annotations

import sys
import time

import numpy as np
from timing import best_time  # benchmarks/timing.py (script folder on sys.path)

from meanfield import initial
from solvers.atoms import AtomicCircle
from solvers.circle import FiniteVolume
from solvers.clusters import detect_clusters
from solvers.particles import ParticleSystem, sample_circle_density
from solvers.stepping import StepStats

BETA = 7.0
T_MAX = 1e8


def to_one_cluster(s: AtomicCircle, state) -> tuple[float, int, float, list]:
    """Advance by factors of 3 in time until one atom holds all the mass."""
    stats, t, target, start = StepStats(), 0.0, 1.0, time.perf_counter()
    while t < T_MAX and not (s.count == 1 and s.density_mass == 0):
        state, t = s.advance(state, t, target, stats)
        target *= 3
    merges = [e.t for e in s.atoms.events if e.kind == "merge"]
    return time.perf_counter() - start, stats.steps, merges[-1] if merges else np.nan, merges


def pde(cells: int) -> None:
    s = AtomicCircle(FiniteVolume(cells, BETA, time_unit="scaled"))
    state = s.split(initial.white_noise(cells, 0.01, seed=0))
    wall, steps, final, merges = to_one_cluster(s, state)
    captures = sum(e.kind == "capture" for e in s.atoms.events)
    print(f"PDE  M = {cells:5d}: one cluster at t = {final:.4g} (scaled time), {steps} steps, "
          f"{wall:.1f} s wall, {captures} captures, {len(merges)} merges")


def particles(n: int) -> None:
    """N tokens sampled from the same initial density: the particle system (Fourier-Bessel
    sums, Dormand-Prince) until the clusters have formed, then its clusters as weighted
    atoms (exact for the metastable phase) until one is left."""
    p0 = initial.white_noise(512, 0.01, seed=0)
    x0 = sample_circle_density(p0, n, seed=1)
    start = time.perf_counter()
    ps = ParticleSystem(n, 2, BETA, time_unit="scaled", integrator="adaptive", rtol=1e-6,
                        atol=1e-8)
    r = ps.run(x0, 300.0, [0.0, 300.0], diagnostics=False)
    cl = detect_clusters(r.positions[-1], method="gap", gap=0.05, representation="angles")[0]
    keep = cl.masses > 1e-3
    s = AtomicCircle(FiniteVolume(512, BETA, time_unit="scaled"))
    state = s.start(np.zeros(512), cl.centres[keep], cl.masses[keep] / cl.masses[keep].sum())
    _, _, final, _ = to_one_cluster(s, state)
    print(f"particles N = {n}: {int(keep.sum())} clusters at t = 300 (masses "
          f"{np.round(np.sort(cl.masses[keep]), 3)}), one cluster at t = {final:.4g}, "
          f"{time.perf_counter() - start:.1f} s wall")


def step_cost(cells: int = 1024) -> None:
    """One fv2 step on a clustered state: the density alone, and with four atoms."""
    from solvers.stepping import advance

    p = initial.von_mises_bumps(cells, [0.5, 2.0, 3.6, 5.0], kappa=200.0)
    plain = FiniteVolume(cells, BETA, time_unit="scaled")
    s = AtomicCircle(FiniteVolume(cells, BETA, time_unit="scaled"))

    def run_plain():
        advance(plain, plain.split(p), 0.0, 1.0, stats=StepStats(), max_steps=20)

    def run_atoms():  # events change the atoms: start afresh each time
        state = s.start(0.5 * p, [0.5, 2.0, 3.6, 5.0], [0.125] * 4)
        s.advance(state, 0.0, 1.0, StepStats(), max_steps=20)

    a, b = best_time(run_plain) / 20, best_time(run_atoms) / 20
    print(f"per step at M = {cells}: {a * 1e6:.0f} us density only, {b * 1e6:.0f} us with "
          f"4 atoms (ratio {b / a:.2f})")


if __name__ == "__main__":
    step_cost()
    for m in (512, 1024):
        pde(m)
    if "--quick" not in sys.argv:
        particles(10_000)
