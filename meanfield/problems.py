"""Adapters between a run configuration and a solver: one class per domain.

A problem builds the scheme and the initial state from the config, and tells the driver
what to store: coordinates, the field and its dims, the diagnostic series, and how to
save/restore the exact solver state for checkpoints. Adding a domain = one class here plus
one registry entry.
"""

from __future__ import annotations

import itertools
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


def common_specs(measure: str) -> dict[str, tuple]:
    """Diagnostic series every density solver records: name -> (extra dims, dtype, attrs)."""
    scalar = ((), "f8")
    return {
        "mass": (*scalar, {"long_name": f"integral of p {measure}"}),
        "min_density": (*scalar, {"long_name": "min p"}),
        "max_density": (*scalar, {"long_name": "max p"}),
        "energy": (*scalar, {"long_name": "E = (1/2) iint W dmu dmu (time unit of the run)"}),
        "ebar": (*scalar, {"long_name": "normalised energy 2 beta exp(-beta) E"}),
        "max_speed": (*scalar, {"long_name": "max |v|"}),
        "tv_distance": (*scalar, {"long_name": "(1/2) integral |p - mean(p)|"}),
        "dt": (*scalar, {"long_name": "last time step"}),
        "steps": ((), "i8", {"long_name": "time steps taken"}),
    }


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
        self.diag_specs = common_specs("d theta") | {
            "angular_momentum": ((), "f8", {"long_name": "integral v p d theta"}),
            "dominant_mode": ((), "i4", {"long_name": "argmax_{k>=1} |p_hat_k|"}),
            "fourier": (("mode",), "f8", {"long_name": "|p_hat_k| = |integral p e^{-ik theta}|"}),
        }

    static: dict = {}  # noqa: RUF012 - read-only: no static datasets on the circle

    def new_stats(self) -> StepStats:
        return StepStats()

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
        return self.scheme.advance(state, t, target, stats, deadline, max_steps)

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
        if hasattr(self.scheme, "set_background"):
            self.scheme.set_background(float(scalars["background"]))
        else:
            self.scheme.background = float(scalars["background"])
        stats = StepStats(int(scalars["steps"]), float(scalars["last_dt"]),
                          float(scalars["max_courant"]), int(scalars["cfl_violations"]),
                          arrays.get("compensation"))
        return np.asarray(arrays["q"]), stats


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
    return _array_from_file(i["path"], (m,))



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


class ParticlesProblem:
    """N tokens on S^{d-1} (``solvers.particles``): angles on the circle, vectors otherwise."""

    def __init__(self, cfg: dict) -> None:
        from solvers.particles import ParticleSystem

        m, pc, i = cfg["model"], cfg["particles"], cfg["initial"]
        self.cfg = cfg
        qkv: Any = pc["qkv"]
        if qkv not in ("identity", "gaussian", "orthogonal", "symmetric-psd"):
            path = Path(qkv)
            if not path.is_file():
                raise InputError("particles.qkv", "must be identity, gaussian, orthogonal, "
                                 "symmetric-psd or an existing .npz with Q, K, V", qkv)
            with np.load(path) as z:
                qkv = (z["Q"], z["K"], z["V"])
        self.system = ParticleSystem(
            pc["count"], m["dim"], m["beta"], m["model"], mask=pc["mask"], qkv=qkv,
            qkv_scale=pc["qkv_scale"], normalization=pc["normalization"],
            time_unit=m["time_unit"], integrator=pc["integrator"], dt=pc["dt"] or None,
            rtol=pc["rtol"], atol=pc["atol"], batch=pc["batch"], seed=i["seed"])
        s = self.system
        self.angles = s.representation == "angles"
        self.field = "angles" if self.angles else "positions"
        self.field_dims = ("system", "particle") if self.angles else (
            "system", "particle", "component")
        self.modes = s._default_modes() if self.angles else 0
        self.coords = {"system": (np.arange(pc["batch"]), {"long_name": "independent system"}),
                       "particle": (np.arange(pc["count"]), {"long_name": "token index"})}
        if self.angles:
            self.coords["mode"] = (np.arange(self.modes + 1), {"long_name": "Fourier mode k"})
            self.field_attrs = {"long_name": "token angles (not wrapped)", "units": "rad"}
        else:
            self.coords["component"] = (np.arange(m["dim"]), {"long_name": "ambient axis"})
            self.field_attrs = {"long_name": "token positions, unit vectors in R^d"}
        at = s.attention
        self.coords["row"] = (np.arange(m["dim"]), {"long_name": "matrix row"})
        self.coords["col"] = (np.arange(m["dim"]), {"long_name": "matrix column"})
        rc = ("row", "col")
        self.static = {"Q": (at.Q, {"long_name": "query matrix"}, rc),
                       "K": (at.K, {"long_name": "key matrix"}, rc),
                       "V": (at.V, {"long_name": "value matrix"}, rc),
                       "masses": (np.broadcast_to(s.masses, (1, pc["count"]))[0],
                                  {"long_name": "token masses (mean 1)"}, ("particle",))}
        per = ("system",)
        self.diag_specs = {
            "energy": (per, "f8", {"long_name": "E (see solvers.particles)"}),
            "ebar": (per, "f8", {"long_name": "normalised energy"}),
            "energy_rate": (per, "f8", {"long_name": "dE/dt from the dissipation identity"}),
            "max_speed": (per, "f8", {"long_name": "max |dx_i/dt|"}),
            "dt": ((), "f8", {"long_name": "last time step"}),
            "steps": ((), "i8", {"long_name": "time steps taken"}),
        }
        if self.angles:
            self.diag_specs.update({
                "fourier": (("system", "mode"), "f8",
                            {"long_name": "|c_k| = |N^-1 sum_j e^{-ik theta_j}|"}),
                "dominant_mode": (per, "i4", {"long_name": "argmax_{k>=1} |c_k|"}),
                "tv_distance": (per, "f8", {"long_name": "(2/pi) max_k |c_k|: the TV distance "
                                            "of a single-mode density with that amplitude"}),
            })

    def new_stats(self):
        from solvers.particles import _StepState

        return _StepState()

    @property
    def gamma_max(self) -> float:
        g = self.system.gamma_max
        if g is None:
            raise InputError("time.t_end_units", "'e_folds' needs identity QKV and no mask")
        return g

    def attrs(self) -> dict[str, Any]:
        m = self.cfg["model"]
        s = self.system
        return {"conventions": CONVENTIONS + "; particles: mu = N^-1 sum_j m_j delta_{x_j}",
                "density_measure": "empirical measure of the tokens",
                "kernel": ExponentialKernel(m["beta"], m["time_unit"]).name,
                "time_unit": m["time_unit"], "seed": self.cfg["initial"]["seed"],
                "domain": "particles", "representation": s.representation,
                "summation": s.summation, "qkv": s.attention.name,
                "k_max_predicted": int(most_unstable(m["beta"], m["dim"])),
                "energy_is_lyapunov": bool(s.mask == "none" and s.attention.gradient_flow)}

    def initial_state(self) -> np.ndarray:
        i = self.cfg["initial"]
        if i["kind"] in ("uniform", "noise", "tokens"):  # N i.i.d. uniform tokens
            return self.system.uniform_sample(self.cfg["particles"]["batch"], i["seed"])
        path = Path(i["path"])
        if not path.is_file() or path.suffix != ".npy":
            raise InputError("initial.path", "must be an existing .npy file of angles (batch, "
                             "N) or unit vectors (batch, N, d)", i["path"])
        return self.system.check_state(np.load(path), "initial.path")

    def advance(self, state, t, target, stats, deadline=None, max_steps=None):
        return self.system._advance(state, t, target, stats)

    def diagnostics(self, state, stats) -> dict[str, Any]:
        d = self.system._diagnostics(state, self.modes if self.angles else None)
        out = {k: d[k] for k in ("energy", "ebar", "energy_rate", "max_speed")}
        if self.angles:
            four = d["fourier"]
            out["fourier"] = four
            out["dominant_mode"] = np.argmax(four[:, 1:], axis=1) + 1
            out["tv_distance"] = (2.0 / np.pi) * four[:, 1:].max(axis=1)
        out["dt"] = stats.last_dt
        out["steps"] = stats.steps
        return out

    def snapshot(self, state) -> np.ndarray:
        return state

    def save_state(self, state, stats) -> tuple[dict, dict]:
        arrays = {"x": state}
        if stats.f is not None:
            arrays["f"] = stats.f
        scalars = {"dt": -1.0 if stats.dt is None else stats.dt, "steps": stats.steps,
                   "rejected": stats.rejected, "last_dt": stats.last_dt}
        return arrays, scalars

    def load_state(self, arrays, scalars):
        st = self.new_stats()
        st.dt = None if scalars["dt"] < 0 else float(scalars["dt"])
        st.f = arrays.get("f")
        st.steps, st.rejected = int(scalars["steps"]), int(scalars["rejected"])
        st.last_dt = float(scalars["last_dt"])
        return np.asarray(arrays["x"], float), st


def most_unstable(beta: float, dim: int) -> int:
    from meanfield.growth import most_unstable_mode

    return int(most_unstable_mode(beta, dim))


DOMAINS["particles"] = ParticlesProblem


class SphereProblem(CircleProblem):
    """The mean-field PDE on S^2 (``solvers.sphere.Spectral``, shtns)."""

    field_dims = ("lat", "lon")

    def __init__(self, cfg: dict) -> None:
        from solvers.sphere import Spectral

        m, d = cfg["model"], cfg["discretization"]
        self.cfg = cfg
        self.scheme = Spectral(d["lmax"], m["beta"], m["model"], time_unit=m["time_unit"],
                               cfl=d["cfl"], dt=d["dt"] or None, accuracy=d["accuracy"],
                               integrator=d["integrator"], filter=d["filter"] or None)
        s = self.scheme
        self.modes = s.default_modes()
        x, phi = s.grid()
        self.coords = {
            "lat": (90.0 - np.degrees(np.arccos(x)), {"long_name": "latitude (Gauss nodes)",
                                                      "units": "degrees_north"}),
            "lon": (np.degrees(phi), {"long_name": "longitude", "units": "degrees_east"}),
            "degree": (np.arange(self.modes + 1), {"long_name": "spherical-harmonic degree l"}),
        }
        self.field_attrs = {"long_name": "probability density w.r.t. the surface measure of "
                            "S^2 (grid values)", "units": "1/sr"}
        self.diag_specs = common_specs("dsigma (Gauss quadrature)") | {
            "tail_fraction": ((), "f8", {"long_name": "power fraction in the top degrees"}),
            "resolved": ((), "i1", {"long_name": "1 if the spectrum tail is below threshold"}),
            "dominant_degree": ((), "i4", {"long_name": "argmax_{l>=1} power_l"}),
            "power": (("degree",), "f8", {"long_name": "P_l = sum_m |p_lm|^2 (orthonormal "
                                          "harmonics)"}),
        }

    def attrs(self) -> dict[str, Any]:
        out = super().attrs()
        s = self.scheme
        out.update({"density_measure": "surface measure of S^2 (4 pi total)", "domain": "sphere",
                    "lmax": s.lmax, "nlat": s.nlat, "nphi": s.nphi,
                    "dealiasing": "3/2 rule: nlat >= 3(lmax+1)/2, nphi >= 3 lmax + 1"})
        return out

    def initial_state(self):
        from meanfield import initial_sphere as ini

        i = self.cfg["initial"]
        x, phi = self.scheme.grid()
        kind = i["kind"]
        if kind == "uniform":
            p0 = ini.uniform(x, phi)
        elif kind in ("noise", "tokens"):  # the N-token noise, N = initial.tokens
            p0 = ini.token_noise(x, phi, i["tokens"], i["seed"],
                                 cutoff=min(i["cutoff"], self.scheme.lmax))
        elif kind == "mode":
            p0 = ini.harmonic(x, phi, (i["mode"], 0), i["amplitude"])
        elif kind == "bumps":
            c = np.asarray(i["centres"], float).reshape(-1, 2)  # (lat, lon) pairs, degrees
            cen = np.array([ini.direction(la, lo) for la, lo in c])
            p0 = ini.von_mises_fisher(x, phi, cen, i["masses"] or None, i["kappa"])
        else:
            p0 = _array_from_file(i["path"], (x.size, phi.size))
        return self.scheme.split(self.scheme.check_density(p0))

    def diagnostics(self, state, stats) -> dict[str, Any]:
        d = self.scheme.diagnostics(state, self.modes)
        p = self.scheme.join(state)
        d["tv_distance"] = 0.5 * self.scheme.sht.quadrature(np.abs(p - self.scheme.background))
        d["power"] = d["power"][: self.modes + 1]
        d["resolved"] = int(d["resolved"])
        d["dt"], d["steps"] = stats.last_dt, stats.steps
        return d


class ZonalProblem(CircleProblem):
    """Axisymmetric densities on S^{d-1}, any d (``solvers.zonal.Zonal``)."""

    field_dims = ("theta",)

    def __init__(self, cfg: dict) -> None:
        from solvers.zonal import Zonal

        m, d = cfg["model"], cfg["discretization"]
        self.cfg = cfg
        self.scheme = Zonal(d["cells"], m["dim"], m["beta"], m["model"],
                            time_unit=m["time_unit"], cfl=d["cfl"], dt=d["dt"] or None,
                            accuracy=d["accuracy"], integrator=d["integrator"])
        s = self.scheme
        self.modes = s.default_modes()
        self.coords = {
            "theta": (s.theta, {"long_name": "polar angle to the pole", "units": "rad"}),
            "degree": (np.arange(self.modes + 1), {"long_name": "Gegenbauer degree k"}),
        }
        self.field_attrs = {"long_name": "density w.r.t. the surface measure of S^{d-1} "
                            "(cell averages in the weighted measure)"}
        self.diag_specs = common_specs("dsigma") | {
            "dominant_degree": ((), "i4", {"long_name": "argmax_{k>=1} |a_k|"}),
            "gegenbauer": (("degree",), "f8", {"long_name": "a_k = integral p Z_k dsigma"}),
        }

    def attrs(self) -> dict[str, Any]:
        out = super().attrs()
        out.update({"density_measure": f"surface measure of S^{self.scheme.dim - 1}, zonal",
                    "domain": "zonal", "dim": self.scheme.dim})
        return out

    def initial_state(self):
        i = self.cfg["initial"]
        s = self.scheme
        kind = i["kind"]
        if kind == "uniform":
            p0 = s.uniform()
        elif kind == "mode":
            p0 = s.mode(i["mode"], i["amplitude"])
        elif kind in ("noise", "tokens"):
            # the zonal (m = 0) part of the N-token noise: a_k ~ N(0, 1/(|S| N)) per
            # orthonormal zonal harmonic Z_k, k = 1..cutoff
            rng = np.random.default_rng(i["seed"])
            kc = min(i["cutoff"], s.degree)
            a = rng.standard_normal(kc) / np.sqrt(s.area * i["tokens"])
            p0 = s.uniform() + s.cell_average_matrix(kc)[:, 1:] @ a
            if p0.min() < 0:
                raise InputError("initial.tokens", "too few tokens for this cutoff and d: the "
                                 "noise (concentrated at the poles, where dim H_k ~ k^{d-2}) "
                                 "makes the density negative; raise initial.tokens or lower "
                                 "initial.cutoff", i["tokens"])
        elif kind == "bumps":  # rings at polar angles c (caps at 0 and pi)
            cen = np.asarray(i["centres"], float)
            mass = np.asarray(i["masses"] or [1.0 / cen.size] * cen.size, float)
            p0 = np.full(s.cells, (1.0 - mass.sum()) / s.area)
            for c, mi in zip(cen, mass, strict=True):
                bump = s.cell_average(lambda th, c=c: np.exp(i["kappa"] * (np.cos(th - c) - 1)))
                p0 += mi * bump / float(s.cell_weight @ bump)
        else:
            p0 = _array_from_file(i["path"], (s.cells,))
        return s.split(s.check_density(p0))

    def diagnostics(self, state, stats) -> dict[str, Any]:
        s = self.scheme
        d = s.diagnostics(state, self.modes)
        d["tv_distance"] = 0.5 * float(s.cell_weight @ np.abs(state))
        d["gegenbauer"] = d["gegenbauer"][: self.modes + 1]
        d["dt"], d["steps"] = stats.last_dt, stats.steps
        return d


def _array_from_file(path: str, shape: tuple[int, ...]) -> np.ndarray:
    """An initial density from a .npy array or the last snapshot of a meanfield run file."""
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
    if arr.shape != shape:
        raise InputError("initial.path", f"must hold an array of shape {shape} (the grid of "
                         "the discretization)", f"shape {arr.shape}")
    return arr


DOMAINS["sphere"] = SphereProblem
DOMAINS["zonal"] = ZonalProblem
