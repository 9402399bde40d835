"""Adapters between a run configuration and a solver: one class per domain.

A problem builds the scheme and the initial state from the config, and tells the driver
what to store: coordinates, the field and its dims, the diagnostic series, and how to
save/restore the exact solver state for checkpoints. Adding a domain = one class here plus
one registry entry.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

from meanfield import initial
from meanfield.errors import InputError
from meanfield.kernels import ExponentialKernel
from solvers.circle import make_scheme
from solvers.integrators import StepStats

CONVENTIONS = (
    "DESIGN.md section 2: mu probability measure; density w.r.t. the surface measure "
    "(circle: d theta); (W*mu)(x) = int W(<x,y>) dmu(y), W(t) = exp(beta t)/beta; "
    "USA v = grad(W*mu); SA v = grad log Z / beta, Z = int exp(beta<x,y>) dmu(y); "
    "E = (1/(2 beta)) iint exp(beta<x,y>) dmu dmu, Ebar = 2 beta exp(-beta) E; "
    "gamma_k = k^2 I_k(beta)/beta on the circle (USA)"
)


class CircleProblem:
    """The mean-field PDE on S^1 (schemes fv2, rusanov, lf)."""

    field = "density"
    field_dims = ("theta",)

    def __init__(self, cfg: dict) -> None:
        m, d = cfg["model"], cfg["discretization"]
        self.cfg = cfg
        kw: dict[str, Any] = {"time_unit": m["time_unit"], "cfl": d["cfl"],
                              "dt": d["dt"] or None, "accuracy": d["accuracy"],
                              "fft_threads": d["fft_threads"], "fft_planner": d["fft_planner"]}
        if d["scheme"] == "lf":
            kw["dt_per_dx"] = d["dt_per_dx"] or None
        else:
            kw["integrator"] = d["integrator"]
        self.scheme = make_scheme(d["scheme"], d["cells"], m["beta"], m["model"], **kw)
        self.modes = self.scheme.default_modes()
        self.coords = {
            "theta": (self.scheme.theta, {"long_name": "cell centre angle", "units": "rad"}),
            "mode": (np.arange(self.modes + 1), {"long_name": "Fourier mode k"}),
        }
        self.field_attrs = {"long_name": "probability density w.r.t. d theta (cell averages)",
                            "units": "1/rad"}
        scalar = ((), "f8")
        self.diag_specs = {
            "mass": (*scalar, {"long_name": "integral of p d theta"}),
            "min_density": (*scalar, {"long_name": "min p"}),
            "max_density": (*scalar, {"long_name": "max p"}),
            "energy": (*scalar, {"long_name": "E = (1/2) iint W dmu dmu (time unit of the run)"}),
            "ebar": (*scalar, {"long_name": "normalised energy 2 beta exp(-beta) E"}),
            "angular_momentum": (*scalar, {"long_name": "integral v p d theta"}),
            "max_speed": (*scalar, {"long_name": "max |v|"}),
            "tv_distance": (*scalar, {"long_name": "(1/2) integral |p - mean(p)| d theta"}),
            "dominant_mode": ((), "i4", {"long_name": "argmax_{k>=1} |p_hat_k|"}),
            "dt": (*scalar, {"long_name": "last time step"}),
            "steps": ((), "i8", {"long_name": "time steps taken"}),
            "fourier": (("mode",), "f8", {"long_name": "|p_hat_k| = |integral p e^{-ik theta}|"}),
        }

    @property
    def gamma_max(self) -> float:
        """Largest linear growth rate (run's time unit): the scale of e_folds times."""
        return self.scheme.gamma_max

    def attrs(self) -> dict[str, Any]:
        m = self.cfg["model"]
        kern = ExponentialKernel(m["beta"], m["time_unit"])
        return {"conventions": CONVENTIONS, "density_measure": "d theta on [0, 2 pi)",
                "kernel": kern.name, "time_unit": m["time_unit"],
                "seed": self.cfg["initial"]["seed"],
                "k_max_predicted": self.scheme.k_max, "gamma_max": self.scheme.gamma_max,
                "domain": "circle"}

    # ------------------------------------------------------------------ state
    def initial_state(self) -> np.ndarray:
        p0 = circle_initial_density(self.cfg)
        return self.scheme.split(self.scheme.check_density(p0))

    def advance(self, state, t, target, stats, deadline=None, max_steps=None):
        from solvers.integrators import advance

        s = self.scheme
        return advance(s, state, t, target, integrator=s.integrator, fixed_dt=s._fixed_dt(),
                       stats=stats, deadline=deadline, max_steps=max_steps)

    def diagnostics(self, state, stats: StepStats) -> dict[str, Any]:
        d = self.scheme.diagnostics(state, self.modes)
        d["fourier"] = d["fourier"][: self.modes + 1]
        d["dt"] = stats.last_dt
        d["steps"] = stats.steps
        return d

    def snapshot(self, state) -> np.ndarray:
        return self.scheme.join(state)

    def save_state(self, state, stats: StepStats) -> tuple[dict, dict]:
        arrays = {"q": state}
        if stats.compensation is not None:
            arrays["compensation"] = stats.compensation
        scalars = {"background": self.scheme.background, "steps": stats.steps,
                   "last_dt": stats.last_dt, "max_courant": stats.max_courant,
                   "cfl_violations": stats.cfl_violations}
        return arrays, scalars

    def load_state(self, arrays, scalars) -> tuple[np.ndarray, StepStats]:
        self.scheme.background = float(scalars["background"])
        stats = StepStats(int(scalars["steps"]), float(scalars["last_dt"]),
                          float(scalars["max_courant"]), int(scalars["cfl_violations"]),
                          arrays.get("compensation"))
        return np.asarray(arrays["q"], float), stats


def circle_initial_density(cfg: dict) -> np.ndarray:
    i, m = cfg["initial"], cfg["discretization"]["cells"]
    kind = i["kind"]
    if kind == "uniform":
        return initial.uniform(m)
    if kind == "noise":
        return initial.white_noise(m, i["amplitude"], i["seed"], renormalize=i["renormalize"])
    if kind == "tokens":
        return initial.token_noise(m, i["tokens"], i["seed"], cutoff=i["cutoff"])
    if kind == "mode":
        return initial.mode(m, i["mode"], i["amplitude"], i["phase"])
    if kind == "bumps":
        return initial.von_mises_bumps(m, i["centres"], i["masses"] or None, i["kappa"])
    return _density_from_file(i["path"], m)


def _density_from_file(path: str, cells: int) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise InputError("initial.path", "must be an existing .npy or meanfield .h5 file", path)
    if p.suffix == ".npy":
        arr = np.load(p)
    else:
        from meanfield.reader import open_run

        with open_run(p) as run:
            if run.n_snapshots == 0:
                raise InputError("initial.path", "run file has no snapshots", path)
            arr = run.snapshot(-1)
    arr = np.asarray(arr, float)
    if arr.shape != (cells,):
        raise InputError("initial.path", f"must hold {cells} cell values "
                         "(discretization.cells)", f"shape {arr.shape}")
    return arr


DOMAINS = {"circle": CircleProblem}


def make_problem(cfg: dict):
    return DOMAINS[cfg["model"]["domain"]](cfg)


def time_scale(cfg: dict, gamma_max: float) -> float:
    """Multiplier from config times to model time: 1, or 1/gamma_max for e_folds."""
    return 1.0 / gamma_max if cfg["time"]["t_end_units"] == "e_folds" else 1.0


def output_schedule(cfg: dict, gamma_max: float = 1.0) -> tuple[np.ndarray, np.ndarray] | None:
    """(diagnostic times, snapshot mask) for linear/log schedules; None for 'steps'."""
    t = cfg["time"]
    scale = time_scale(cfg, gamma_max)
    t_end, n = t["t_end"] * scale, t["n_outputs"]
    if t["schedule"] == "steps":
        return None
    if t["schedule"] == "linear":
        snaps = np.linspace(0.0, t_end, n)
    else:
        first = t["t_first"] * scale or t_end / 1000.0
        snaps = np.concatenate([[0.0], np.geomspace(first, t_end, n - 1)])
    sub = t["diagnostics_per_output"]
    times = [snaps[0]]
    mask = [True]
    for a, b in itertools.pairwise(snaps):
        # log schedules subdivide geometrically (except the first interval from 0)
        if t["schedule"] == "log" and a > 0:
            inner = np.geomspace(a, b, sub + 1)[1:]
        else:
            inner = np.linspace(a, b, sub + 1)[1:]
        inner[-1] = b
        times.extend(inner)
        mask.extend([False] * (sub - 1) + [True])
    return np.asarray(times), np.asarray(mask)


def is_finite_number(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
