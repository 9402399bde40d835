"""The domain contract and what grid domains share.

A *domain* is where the measure lives and how it is represented (the circle's cells, the
sphere's spectral grid, zonal cells on S^{d-1}, tokens). Everything that depends on the
domain is in its module in ``meanfield/domains/``; the rest of the workflow (config, driver,
storage, analysis, plots, sweeps, CLI) asks the domain through the methods below and never
switches on a domain's name. ``meanfield.domains.DOMAINS`` is the only list of domains.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from meanfield.theory.errors import InputError
from meanfield.theory.growth import growth_rate, most_unstable_mode
from solvers.stepping import StepStats

#: Every file says where its conventions are written down (in this repository).
CONVENTIONS = ("docs/conventions.md (conventions version 2): mu a probability measure; density "
               "w.r.t. the surface measure (circle: d theta); (W*mu)(x) = int W(<x,y>) dmu(y), "
               "W(t) = exp(beta t)/beta; USA v = grad(W*mu); SA v = grad log Z / beta, "
               "Z = int exp(beta<x,y>) dmu(y); E = (1/(2 beta)) iint exp(beta<x,y>) dmu dmu, "
               "Ebar = 2 beta exp(-beta) E; gamma_k = k^2 I_k(beta)/beta on the circle (USA); "
               "spectrum = ||P_k mu||_L2 (L2 norm of the degree-k part)")


class Domain:
    """The contract of a domain module (one instance per module, listed in ``DOMAINS``).

    1. ``name`` is the value of ``model.domain``; ``summary`` one line for help texts.
    2. ``keys`` maps config sections to the keys this domain adds (``meanfield.schema.Key``);
       ``defaults`` the values of shared keys the domain changes when the user did not set
       them (e.g. the sphere's d = 3); ``schemes`` the allowed ``discretization.scheme``.
    3. ``check(cfg)`` enforces the cross-key rules of the domain, each error naming the key
       that fixes the problem (InputError).
    4. ``problem(cfg)`` builds the run adapter (:class:`GridProblem` or the particles'), which
       owns the solver, the initial state, the file layout and the checkpoint state.
    5. ``cluster_count(snapshot, coords, params)`` counts clusters in one stored snapshot
       (``params``: the ``[analysis]`` section); ``cluster_series`` may be overridden.
    6. ``figures(run, analysis, out, stem, title)`` writes the domain's own figures and
       returns their paths; ``resolution(cfg)`` names the discretisation for titles.
    7. ``effective_tokens(cfg)`` is the N whose i.i.d. tokens perturb the uniform state as
       much as the initial condition (None if not meaningful).
    8. ``spectrum_label`` names the ``spectrum`` diagnostic on figures.
    """

    name = "domain"
    summary = ""
    #: takes general query/key/value matrices from [attention]; runs beta = inf
    general_attention = False
    zero_temperature = False
    #: takes frozen cross-attention centres from [frozen]
    frozen_centres = False
    keys: dict[str, dict[str, Any]] = {}  # noqa: RUF012 - read-only class data
    defaults: dict[str, dict[str, Any]] = {}  # noqa: RUF012
    schemes: tuple[str, ...] = ()
    spectrum_label = r"$\|P_k\mu\|_{L^2}$"

    def check(self, cfg: dict) -> None:
        d = cfg["discretization"]
        if d["scheme"] not in self.schemes:
            raise InputError("discretization.scheme", f"must be {' or '.join(self.schemes)} "
                             f"for model.domain = '{self.name}'", d["scheme"])
        self.check_attention(cfg)

    def check_attention(self, cfg: dict) -> None:
        """[attention] matrices and beta = inf only where the domain supports them."""
        from meanfield import attention_config

        if attention_config.given(cfg):
            if not self.general_attention:
                raise InputError("attention", f"model.domain = '{self.name}' takes no general "
                                 "query/key/value matrices (the circle and particles do)")
            mats = attention_config.matrices(cfg)
            if attention_config.zero_temperature(cfg):
                sv = np.linalg.svd(mats.B, compute_uv=False)
                if sv[-1] <= 1e-12 * max(sv[0], 1.0):
                    raise InputError("attention", "B = Q^T K must be invertible at "
                                     "model.beta = inf (B^T x/|B^T x| is undefined where "
                                     "B^T x = 0)", f"sigma_min(B) = {sv[-1]:.3g}")
        f = cfg["frozen"]
        if f["centres"] or f["weights"]:
            if not self.frozen_centres:
                raise InputError("frozen.centres", f"model.domain = '{self.name}' takes no "
                                 "frozen centres (particles and causal do)")
            if f["weights"] and len(f["weights"]) != len(f["centres"]):
                raise InputError("frozen.weights", "must give one weight per centre "
                                 f"({len(f['centres'])})", f["weights"])
        if attention_config.zero_temperature(cfg) and not self.zero_temperature:
            raise InputError("model.beta", f"inf (the zero-temperature model) is not "
                             f"available for model.domain = '{self.name}' (the circle and "
                             "particles have it)")

    @staticmethod
    def frozen(cfg: dict) -> tuple[np.ndarray, np.ndarray]:
        """[frozen] centres (angles) and their weights a_j (token units, default 1)."""
        f = cfg["frozen"]
        c = np.asarray(f["centres"], float)
        return c, np.asarray(f["weights"], float) if f["weights"] else np.ones(c.size)

    def problem(self, cfg: dict):
        raise NotImplementedError

    def cluster_count(self, snapshot: np.ndarray, coords: dict, params: dict) -> int:
        raise NotImplementedError

    def cluster_series(self, run, params: dict, system: int = 0) -> np.ndarray:
        """Cluster counts of every stored snapshot of ``run`` (read in blocks)."""
        out = []
        for lo in range(0, run.n_snapshots, SNAPSHOT_BLOCK):
            block = run.density[lo: min(lo + SNAPSHOT_BLOCK, run.n_snapshots)]
            out.extend(self.cluster_count(p, run.coords, params) for p in block)
        return np.asarray(out, dtype=int)

    def figures(self, run, analysis: dict, out: Path, stem: str, title: str) -> list[str]:
        return []

    def ensemble_key(self, cfg: dict) -> tuple | None:
        """Runs with equal keys can share one batched stepper (``meanfield.ensemble``);
        None: this run steps alone."""
        return None

    def token_trajectory(self, run, system: int = 0) -> np.ndarray | None:
        """Angles (snapshots, tokens) in label order of a token-ordered (causal) run on S^1,
        for the Renyi analysis; None where tokens have no order that matters."""
        return None

    def points(self, run, index: int, system: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Snapshot ``index`` as weighted points on S^{d-1}: unit vectors (n, d) and masses
        summing to 1 (for Wasserstein distances between runs, ``meanfield compare``)."""
        raise InputError("RUN", f"model.domain = '{self.name}' runs cannot be compared yet "
                         "(circle and particle runs can)", str(run.path))

    def resolution(self, cfg: dict) -> str:
        d = cfg["discretization"]
        return f"{d['scheme']}, M = {d['cells']}"

    def effective_tokens(self, cfg: dict) -> float | None:
        i = cfg["initial"]
        return float(i["tokens"]) if i["kind"] == "tokens" else None

    def upgrade_diagnostics(self, d: dict[str, np.ndarray], version: int) -> dict:
        """Diagnostics of a file of format ``version`` under the names of the current format
        (format 1: fourier |p_hat_k| or |c_k| -> spectrum = ||P_k mu||_L2, i.e. /sqrt(pi) and
        /sqrt(2 pi) at k = 0; power P_l -> sqrt(P_l); gegenbauer a_k -> |a_k|;
        dominant_degree -> dominant_mode)."""
        if version >= 2:
            return d
        d = dict(d)
        if "fourier" in d:
            amp = np.array(d.pop("fourier"), dtype=float)
            amp[..., 0] /= math.sqrt(2 * math.pi)
            amp[..., 1:] /= math.sqrt(math.pi)
            d["spectrum"] = amp
        if "power" in d:
            d["spectrum"] = np.sqrt(np.maximum(d.pop("power"), 0.0))
        if "gegenbauer" in d:
            d["spectrum"] = np.abs(d.pop("gegenbauer"))
        if "dominant_degree" in d:
            d["dominant_mode"] = d.pop("dominant_degree")
        return d


# ----------------------------------------------------------------------------- diagnostics
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
        "dominant_mode": ((), "i4", {"long_name": "argmax_{k>=1} spectrum_k"}),
        "spectrum": (("mode",), "f8", {"long_name": "||P_k mu||_L2: L2 norm of the degree-k "
                                       "part of mu (docs/conventions.md)"}),
        "dt": (*scalar, {"long_name": "last time step"}),
        "steps": ((), "i8", {"long_name": "time steps taken"}),
    }


def theory_attrs(cfg: dict, k_max: int | None, gamma_max: float | None) -> dict[str, Any]:
    """Linear-theory predictions stored with a run (absent when the velocity has none)."""
    if k_max is None or gamma_max is None:
        return {"linear_theory": "none"}
    return {"linear_theory": "uniform-state linearisation (docs/conventions.md)",
            "k_max_predicted": int(k_max), "gamma_max": float(gamma_max)}


def predicted_rate(cfg: dict, k: int) -> float:
    """gamma_k of the theory toolkit for the run's model, dimension and time unit."""
    m = cfg["model"]
    return float(growth_rate(k, m["beta"], m["dim"], m["model"], m["time_unit"]))


def predicted_kmax(cfg: dict) -> int:
    return int(most_unstable_mode(cfg["model"]["beta"], cfg["model"]["dim"]))


#: snapshots read from a file at once by the analyses (one HDF5 read per block)
SNAPSHOT_BLOCK = 256
#: how far from 1 the mass of a density read from a file may be
MASS_TOLERANCE = 1e-6


class GridProblem:
    """Run adapter for a density scheme (circle, zonal, sphere).

    A subclass sets ``scheme``, ``coords``, ``field_dims``, ``field_attrs``, ``diag_specs``
    and provides ``initial_density()``; this class does the rest: initial state, stepping,
    diagnostics (plus ``dt`` and ``steps``), snapshots and the exact checkpoint state.
    """

    field = "density"
    static: dict = {}  # noqa: RUF012 - read-only: grid domains store no static datasets
    measure = "the surface measure"
    #: datasets stored with every snapshot and the event table (none by default)
    snapshot_specs: dict = {}  # noqa: RUF012
    event_specs: dict = {}  # noqa: RUF012

    def snapshot_extras(self, state) -> dict[str, np.ndarray]:
        """Values of ``snapshot_specs`` for the state (stored with its snapshot)."""
        return {}

    def new_events(self) -> list[tuple[float, dict]]:
        """Events since the last call: (t, {name in event_specs: value})."""
        return []

    def __init__(self, cfg: dict, scheme) -> None:
        self.cfg = cfg
        self.scheme = scheme
        self.modes = scheme.default_modes()
        self.mode_coord = (np.arange(self.modes + 1), {"long_name": "degree k of the "
                                                        "spectrum"})

    # ------------------------------------------------------------------ metadata
    @property
    def gamma_max(self) -> float | None:
        """Largest linear growth rate (run's time unit; None without a linear theory)."""
        return self.scheme.gamma_max

    @property
    def step_size(self) -> float | None:
        """The fixed time step (None: adaptive)."""
        return self.scheme.step_size

    def attrs(self) -> dict[str, Any]:
        s = self.scheme
        out = {"conventions": CONVENTIONS, "time_unit": self.cfg["model"]["time_unit"],
               "seed": self.cfg["initial"]["seed"]}
        out.update(theory_attrs(self.cfg, s.k_max, s.gamma_max))
        return out

    # ------------------------------------------------------------------ state
    def new_stats(self) -> StepStats:
        return StepStats()

    def initial_density(self) -> np.ndarray:
        raise NotImplementedError

    def initial_state(self) -> np.ndarray:
        """The scheme's state for the initial density; a density read from a file must be a
        probability density w.r.t. the domain's measure (docs/conventions.md §1) unless
        ``initial.normalize_file`` asks to divide it by its mass."""
        p = self.initial_density()
        i = self.cfg["initial"]
        if i["kind"] != "file":
            return self.scheme.split(self.scheme.check_density(p))
        try:
            p = self.scheme.check_density(p)
        except InputError as exc:
            raise InputError("initial.path", f"{exc.allowed} (the density in the file)",
                             i["path"]) from None
        mass = self.scheme.mass_of(p)
        if not mass > 0:
            raise InputError("initial.path", "holds a density of mass 0", i["path"])
        if i["normalize_file"]:
            p = p / mass
        elif abs(mass - 1.0) > MASS_TOLERANCE:
            raise InputError("initial.path", f"holds a density of mass {mass:.10g} w.r.t. "
                             f"{self.measure} (docs/conventions.md §1), not 1; set "
                             "initial.normalize_file = true to divide it by its mass",
                             i["path"])
        return self.scheme.split(p)

    @property
    def stepper(self):
        """What ``advance`` steps with (an ensemble member is routed through its
        ``advance``: ``meanfield.ensemble``)."""
        return self.scheme

    def advance(self, state, t, target, stats, deadline=None, max_steps=None):
        return self.scheme.advance(state, t, target, stats, deadline, max_steps)

    def diagnostics(self, state, stats: StepStats) -> dict[str, Any]:
        d = self.scheme.diagnostics(state, self.modes)
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
        self.scheme.set_background(float(scalars["background"]))
        stats = StepStats(int(scalars["steps"]), float(scalars["last_dt"]),
                          float(scalars["max_courant"]), int(scalars["cfl_violations"]),
                          arrays.get("compensation"))
        return np.asarray(arrays["q"]), stats


def array_from_file(path: str, shape: tuple[int, ...] | None, index: int = -1) -> np.ndarray:
    """An initial density from a .npy array or the last (``index``-th) snapshot of a
    meanfield run file; ``shape`` None accepts any 1-D array."""
    p = Path(path)
    if not p.is_file():
        raise InputError("initial.path", "must be an existing .npy or meanfield .h5 file", path)
    if p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise InputError("initial.path", f"is not a plain numeric .npy array ({exc})",
                             path) from None
    else:
        from meanfield.io.storage import last_snapshot

        try:
            arr = last_snapshot(p, index)
        except InputError as exc:
            raise InputError("initial.path", f"{exc}", path) from None
    arr = np.asarray(arr, float)
    if shape is None and arr.ndim != 1:
        raise InputError("initial.path", "must hold a 1-D array of cell averages on the "
                         "circle", f"shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise InputError("initial.path", f"must hold an array of shape {shape} (the grid of "
                         "the discretization)", f"shape {arr.shape}")
    return arr


def level_mass_clusters(above: np.ndarray, weights: np.ndarray, p: np.ndarray, total: float,
                        min_mass: float, clustered_fraction: float) -> int:
    """Count runs of ``above`` (non-periodic) whose mass sum(w p) >= min_mass * total, once
    they hold ``clustered_fraction`` of the mass (else 0: uniform or still forming)."""
    edges = np.diff(np.concatenate([[0], above.astype(np.int8), [0]]))
    masses = [float(weights[a:b] @ p[a:b]) for a, b in zip(np.flatnonzero(edges == 1),
                                                          np.flatnonzero(edges == -1),
                                                          strict=True)]
    masses = [m for m in masses if m >= min_mass * total]
    return len(masses) if sum(masses) >= clustered_fraction * total else 0


def finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)
