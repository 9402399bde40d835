"""Speed of ensembles (printed, never asserted; `make bench`).

1. Member-steps per second of ``solvers.ensemble.CircleEnsemble`` (fv2, SSP-RK3, the
   convolution drift, half SA half USA, betas 3..7) against the single scheme, for
   M in {512, 4096} and batch sizes 1..64, and the fraction of the batched step spent
   outside the FFTs (the batched pyfftw transforms timed alone).
2. End to end: a no-atom sweep of 32 circle runs (M = 512, 4 betas x 2 models x 4 seeds,
   8 e-folds, 11 outputs) with one run per process-pool task against ``--ensemble 16``,
   both on 2 processes.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from meanfield import initial
from solvers.circle import FiniteVolume
from solvers.ensemble import BatchedConvolution, CircleEnsemble, Member
from solvers.stepping import StepStats

T_END = 1.0


def _members(m: int, b: int):
    out = []
    for i in range(b):
        beta, model = 3.0 + 4.0 * (i % 8) / 8, ("sa" if i % 2 else "usa")
        s = FiniteVolume(m, beta, model, time_unit="raw" if model == "sa" else "scaled")
        out.append(Member(s, s.split(s.check_density(initial.white_noise(m, 0.01, i))), 0.0,
                          StepStats()))
    return out


def solver_table() -> None:
    print(f"{'M':>5} {'batch':>5} {'member-steps/s':>15} {'single':>8} {'ratio':>6} "
          f"{'outside FFT':>11}")
    for m in (512, 4096):
        one = _members(m, 1)[0]
        st = StepStats()
        start = time.perf_counter()
        one.scheme.advance(one.q, 0.0, T_END, st)
        single = st.steps / (time.perf_counter() - start)
        for b in (1, 8, 32, 64):
            mem = _members(m, b)
            ens = CircleEnsemble([x.scheme for x in mem])
            ens.advance(_members(m, b)[:1], np.array([1e-3]))     # compile, plan
            start = time.perf_counter()
            ens.advance(mem, np.full(b, T_END))
            wall = time.perf_counter() - start
            steps = sum(x.stats.steps for x in mem)
            conv = BatchedConvolution.of([x.scheme for x in mem])
            q = np.stack([x.q for x in mem])
            rin, *_, fwd, bwd = conv._plan(b)
            rin[:] = q
            t0 = time.perf_counter()
            for _ in range(20):
                fwd.execute()
                bwd.execute()
            fft = (time.perf_counter() - t0) / 20 * 3        # 3 stages per step
            per_step = wall / max(x.stats.steps for x in mem)
            print(f"{m:5d} {b:5d} {steps / wall:15.0f} {single:8.0f} "
                  f"{steps / wall / single:6.1f} {1 - fft / per_step:11.2f}")


def sweep_table() -> None:
    base = ("[discretization]\ncells = 512\n[atoms]\nenabled = false\n[time]\n"
            "t_end_units = \"e_folds\"\nt_end = 8.0\nn_outputs = 11\n"
            "diagnostics_per_output = 1\n")
    params = ["--param", "model.beta=3,5,7,9", "--param", "model.model=usa,sa", "--param",
              "initial.seed=0:4"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "b.toml").write_text(base)
        walls = []
        for name, extra in (("pool", []), ("ens", ["--ensemble", "16"])):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "meanfield.cli", "sweep", "b.toml", *params,
                            "-o", name, "--jobs", "2", "--quiet", *extra], cwd=tmp,
                           check=True, capture_output=True)
            walls.append(time.perf_counter() - start)
    print(f"sweep of 32 no-atom runs (M = 512), 2 processes: one run per task "
          f"{walls[0]:.1f} s, ensembles of 16 {walls[1]:.1f} s (x{walls[0] / walls[1]:.2f})")


if __name__ == "__main__":
    solver_table()
    sweep_table()
