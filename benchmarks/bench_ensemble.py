"""Speed of ensembles (printed, never asserted; `make bench`).

1. Member-steps per second of ``solvers.ensemble.CircleEnsemble`` against each member's own
   stepper (``FiniteVolume.advance``, ``AtomicCircle.advance``), for M in {512, 4096} and
   batch sizes 1..64, and the fraction of the batched step spent outside the FFTs (the
   batched pyfftw transforms timed alone). Two kinds of member: ``fv2`` (no atoms, from 1 %
   white noise over the linear phase into clustering) and ``fv2+atoms`` (the main job's runs:
   from white noise through captures, merges and the metastable phase, 30 e-folds at
   M = 512, 12 at M = 4096). Members mix SA and USA and betas 3..7, as a sweep does.
2. The other grid members at M = 512 (batch 1..64, the same member mix, 12 e-folds):
   ``rusanov`` (SSP-RK3), ``lf`` (Euler, adaptive) and ``zonal`` (d = 3,
   ``solvers.zonal_ensemble.ZonalEnsemble``), against each scheme's own ``advance``.
3. ``make run``'s sweep (69 runs, beta = 1..12 x 3 seeds, M = 512, atoms) on 2 processes:
   one run per task (``--ensemble 0``, the schemes' own steppers) against the default
   ensembles, and whether the two tables agree.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from meanfield import initial
from solvers.atoms import AtomicCircle
from solvers.circle import FiniteVolume, make_scheme
from solvers.ensemble import BLOCK_CELLS, CircleEnsemble, Member, _plan
from solvers.stepping import StepStats
from solvers.zonal import Zonal
from solvers.zonal_ensemble import ZonalEnsemble

#: e-folds each member runs, by (kind, M)
E_FOLDS = {("fv2", 512): 12.0, ("fv2", 4096): 8.0, ("fv2+atoms", 512): 30.0,
           ("fv2+atoms", 4096): 12.0}


def _members(kind: str, m: int, b: int) -> tuple[list[Member], np.ndarray]:
    out, ends = [], []
    for i in range(b):
        beta, model = 3.0 + 4.0 * (i % 8) / 8, ("sa" if i % 2 else "usa")
        s = FiniteVolume(m, beta, model, time_unit="raw" if model == "sa" else "scaled")
        if kind == "fv2+atoms":
            s = AtomicCircle(s)
        out.append(Member(s, s.split(s.check_density(initial.white_noise(m, 0.01, i))), 0.0,
                          StepStats()))
        ends.append(E_FOLDS[(kind, m)] / s.gamma_max)
    return out, np.array(ends)


def solver_table() -> None:
    print(f"{'kind':>10} {'M':>5} {'batch':>5} {'member-steps/s':>15} {'single':>8} "
          f"{'ratio':>6} {'outside FFT':>11}")
    for kind in ("fv2", "fv2+atoms"):
        for m in (512, 4096):
            (one,), ends = _members(kind, m, 1)
            st = StepStats()
            start = time.perf_counter()
            one.scheme.advance(one.q, 0.0, float(ends[0]), st)
            single = st.steps / (time.perf_counter() - start)
            for b in (1, 8, 32, 64):
                if m == 4096 and kind == "fv2+atoms" and b > 8:
                    continue                       # minutes per row: the trend is clear
                mem, ends = _members(kind, m, b)
                warm, _ = _members(kind, m, 1)
                CircleEnsemble([warm[0].scheme]).advance(warm, np.array([1e-6]))  # compile
                ens = CircleEnsemble([x.scheme for x in mem])
                start = time.perf_counter()
                ens.advance(mem, ends)
                wall = time.perf_counter() - start
                steps = sum(x.stats.steps for x in mem)
                rows = min(b, max(1, BLOCK_CELLS // m))     # the stepper's block of rows
                rin, _, _, _, fwd, bwd = _plan(m, rows)
                rin[:] = np.stack([x.q[:m] for x in mem[:rows]])
                t0 = time.perf_counter()
                for _ in range(20):
                    fwd.execute()
                    bwd.execute()
                # the batched FFTs of one member-step (3 stages), times the member-steps
                fft = (time.perf_counter() - t0) / 20 / rows * 3 * steps
                print(f"{kind:>10} {m:5d} {b:5d} {steps / wall:15.0f} {single:8.0f} "
                      f"{steps / wall / single:6.1f} {max(0.0, 1 - fft / wall):11.2f}")


def _others(kind: str, m: int, b: int) -> tuple[list[Member], np.ndarray]:
    out, ends = [], []
    for i in range(b):
        beta, model = 3.0 + 4.0 * (i % 8) / 8, ("sa" if i % 2 else "usa")
        unit = "raw" if model == "sa" else "scaled"
        if kind == "zonal":
            s = Zonal(m, 3, beta, model, time_unit=unit)
            rng = np.random.default_rng(i)
            a = rng.standard_normal(16) / np.sqrt(s.area * 1e4)
            p0 = s.uniform() + s.cell_average_matrix(16)[:, 1:] @ a
        else:
            s = make_scheme(kind, m, beta, model, time_unit=unit)
            p0 = initial.white_noise(m, 0.01, i)
        out.append(Member(s, s.split(s.check_density(p0)), 0.0, StepStats()))
        ends.append(12.0 / s.gamma_max)
    return out, np.array(ends)


def other_table() -> None:
    print(f"{'kind':>10} {'M':>5} {'batch':>5} {'member-steps/s':>15} {'single':>8} "
          f"{'ratio':>6}")
    m = 512
    for kind in ("rusanov", "lf", "zonal"):
        (one,), ends = _others(kind, m, 1)
        st = StepStats()
        start = time.perf_counter()
        one.scheme.advance(one.q, 0.0, float(ends[0]), st)
        single = st.steps / (time.perf_counter() - start)
        cls = ZonalEnsemble if kind == "zonal" else CircleEnsemble
        for b in (1, 8, 32, 64):
            warm, _ = _others(kind, m, 1)
            cls([warm[0].scheme]).advance(warm, np.array([1e-6]))       # compile
            mem, ends = _others(kind, m, b)
            ens = cls([x.scheme for x in mem])
            start = time.perf_counter()
            ens.advance(mem, ends)
            wall = time.perf_counter() - start
            steps = sum(x.stats.steps for x in mem)
            print(f"{kind:>10} {m:5d} {b:5d} {steps / wall:15.0f} {single:8.0f} "
                  f"{steps / wall / single:6.1f}")


def sweep_table() -> None:
    """make run's sweep both ways (about 4 minutes one run per task, under 1 ensembles)."""
    cfg = Path(__file__).resolve().parent.parent / "experiments" / "sweep_beta.toml"
    params = ["--param", "model.beta=1:12.5:0.5", "--param", "initial.seed=0:3"]
    with tempfile.TemporaryDirectory() as tmp:
        walls, tables = [], []
        for name, extra in (("pool", ["--ensemble", "0"]), ("ens", [])):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "meanfield.cli", "sweep", str(cfg), *params,
                            "-o", name, "--jobs", "2", "--quiet", *extra], cwd=tmp,
                           check=True, capture_output=True)
            walls.append(time.perf_counter() - start)
            with open(Path(tmp) / name / "summary.csv") as f:
                tables.append({r["name"]: r for r in csv.DictReader(f)})
    same = all(a[k] == b[k] for n, a in tables[0].items() for b in [tables[1][n]]
               for k in ("first_plateau_clusters", "final_clusters", "steps",
                         "k_max_predicted"))
    rel = max(abs(float(a[k]) - float(b[k])) / abs(float(a[k]))
              for n, a in tables[0].items() for b in [tables[1][n]]
              for k in ("one_cluster_time", "exit_time", "final_ebar")
              if a[k] not in ("", "nan") and float(a[k]) != 0 and math.isfinite(float(a[k])))
    print(f"make run's sweep (69 runs, M = 512, atoms), 2 processes: one run per task "
          f"{walls[0]:.1f} s, ensembles {walls[1]:.1f} s (x{walls[0] / walls[1]:.2f}); "
          f"cluster counts and steps {'identical' if same else 'DIFFER'}, times and "
          f"energies within {rel:.1e}")


if __name__ == "__main__":
    solver_table()
    other_table()
    sweep_table()
