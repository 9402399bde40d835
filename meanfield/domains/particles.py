"""N tokens on S^{d-1} (``solvers.particles``): angles on the circle, unit vectors otherwise.

Config: the ``[particles]`` section (count, integrator, dt, tolerances, mask, Q/K/V, USA
normalisation, batch of independent systems). Files hold angles(time, system, particle) or
positions(time, system, particle, component), the matrices and the token masses.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from meanfield import attention_config
from meanfield.domains.base import (
    CONVENTIONS,
    Domain,
    array_from_file,
    predicted_kmax,
    theory_attrs,
)
from meanfield.schema import NUM, Key, ge, gt
from meanfield.theory.attention import QKV_ENSEMBLES
from meanfield.theory.errors import InputError
from meanfield.theory.geometry import sphere_area
from meanfield.theory.kernels import ExponentialKernel
from solvers.clusters import density_cluster_count
from solvers.stepping import StepStats, integrators

INITIAL_KINDS = ("uniform", "noise", "tokens", "file", "quantiles", "vmf")


def _load_qkv(spec: str):
    """A named ensemble, or (Q, K, V) from a .npz file (no pickles)."""
    if spec in QKV_ENSEMBLES:
        return spec
    path = Path(spec)
    if not path.is_file() or path.suffix != ".npz":
        raise InputError("particles.qkv", f"must be {', '.join(QKV_ENSEMBLES)} or an existing "
                         ".npz with arrays Q, K, V", spec)
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["Q"], z["K"], z["V"]
    except (KeyError, ValueError, OSError) as exc:
        raise InputError("particles.qkv", f"is not an .npz with numeric arrays Q, K, V ({exc})",
                         spec) from None


class ParticlesProblem:
    """Run adapter for ``solvers.particles.ParticleSystem``."""

    def __init__(self, cfg: dict) -> None:
        from solvers.particles import ParticleSystem

        m, pc, i = cfg["model"], cfg["particles"], cfg["initial"]
        self.cfg = cfg
        # frozen centres ([frozen]) are the first tokens, with masses a_j, and never move
        self.centres, centre_w = Particles.frozen(cfg)
        self.n_frozen = nf = self.centres.size
        self.count = count = pc["count"] + nf
        masses = np.concatenate([centre_w, np.ones(pc["count"])]) if nf else None
        qkv = _load_qkv(pc["qkv"])
        general = attention_config.given(cfg) or attention_config.zero_temperature(cfg)
        if attention_config.given(cfg):
            mats = attention_config.matrices(cfg)
            qkv = (np.eye(m["dim"]), mats.B, mats.V)           # Q = I, K = B: Q^T K = B
        if attention_config.zero_temperature(cfg):
            from solvers.particles.zero_temperature import ZeroTemperatureSystem

            self.system = ZeroTemperatureSystem(
                pc["count"], m["dim"], qkv=qkv, qkv_scale=pc["qkv_scale"],
                integrator=pc["integrator"], dt=pc["dt"] or None, rtol=pc["rtol"],
                atol=pc["atol"], batch=pc["batch"], seed=i["seed"])
        else:
            self.system = ParticleSystem(
                count, m["dim"], m["beta"], m["model"], mask=pc["mask"],
                qkv=qkv, qkv_scale=pc["qkv_scale"],
                normalization=pc["normalization"], time_unit=m["time_unit"],
                integrator=pc["integrator"], dt=pc["dt"] or None, rtol=pc["rtol"],
                atol=pc["atol"], batch=pc["batch"], seed=i["seed"], masses=masses,
                frozen=nf)
        s = self.system
        self.angles = s.representation == "angles"
        self.field = "angles" if self.angles else "positions"
        self.field_dims = ("system", "particle") if self.angles else (
            "system", "particle", "component")
        self.modes = s.default_modes() if self.angles else None
        self.coords = {"system": (np.arange(pc["batch"]), {"long_name": "independent system"}),
                       "particle": (np.arange(count), {"long_name": "token index (frozen "
                                                       "centres first)" if nf else
                                                       "token index"})}
        if self.angles:
            self.coords["mode"] = (np.arange(self.modes + 1), {"long_name": "degree k of the "
                                                               "spectrum"})
            self.field_attrs = {"long_name": "token angles (not wrapped)", "units": "rad"}
        else:
            self.coords["component"] = (np.arange(m["dim"]), {"long_name": "ambient axis"})
            self.field_attrs = {"long_name": "token positions, unit vectors in R^d"}
        at = s.attention
        self.coords["row"] = (np.arange(at.Q.shape[0]), {"long_name": "matrix row"})
        self.coords["col"] = (np.arange(m["dim"]), {"long_name": "matrix column"})
        self.coords["vrow"] = (np.arange(m["dim"]), {"long_name": "value matrix row"})
        rc = ("row", "col")
        self.static = {"Q": (at.Q, {"long_name": "query matrix"}, rc),
                       "K": (at.K, {"long_name": "key matrix"}, rc),
                       "V": (at.V, {"long_name": "value matrix"}, ("vrow", "col")),
                       "masses": (np.broadcast_to(s.masses, (1, count))[0],
                                  {"long_name": "token masses (mean 1)"}, ("particle",))}
        per = ("system",)
        self.diag_specs = {
            "energy": (per, "f8", {"long_name": "E (docs/conventions.md)"}),
            "ebar": (per, "f8", {"long_name": "normalised energy"}),
            "energy_rate": (per, "f8", {"long_name": "dE/dt from the dissipation identity"}),
            "max_speed": (per, "f8", {"long_name": "max |dx_i/dt|"}),
            "dt": ((), "f8", {"long_name": "last time step"}),
            "steps": ((), "i8", {"long_name": "time steps taken"}),
        }
        if self.angles:
            self.diag_specs.update({
                "spectrum": (("system", "mode"), "f8",
                             {"long_name": "||P_k mu||_L2 = |c_k|/sqrt(pi), c_k = "
                                           "N^-1 sum_j m_j e^{-ik theta_j}"}),
                "dominant_mode": (per, "i4", {"long_name": "argmax_{k>=1} spectrum_k"}),
                "tv_distance": (per, "f8", {"long_name": "total variation between the "
                                            "100-bin token histogram and the uniform density "
                                            "(seed 003 Fig. 3; noise floor 0.399 sqrt(100/N)"
                                            f" = {0.399 * math.sqrt(100 / pc['count']):.3g})"}),
                "tv_fourier_proxy": (per, "f8", {"long_name": "(2/pi) max_k |c_k|: the TV "
                                                 "distance of a single-mode density with that "
                                                 "amplitude (a proxy, no histogram noise)"}),
            })

        # general attention (seed 004): spectral data and the Wasserstein diagnostics
        self.report = None
        self._attention_diag: list | None = None
        if general:
            from meanfield.theory.attention import attention_report
            from solvers.attention_measures import AttentionDiagnostics

            at = self.system.attention
            self.report = attention_report(at.A, at.V)
            self.diag_specs.update({k: (per, "f8", {"long_name": v})
                                    for k, v in AttentionDiagnostics.NAMES.items()})

    snapshot_specs: dict = {}  # noqa: RUF012 - read-only: no extras, no events
    event_specs: dict = {}  # noqa: RUF012

    def snapshot_extras(self, state) -> dict:
        return {}

    def new_events(self) -> list:
        return []

    def new_stats(self) -> StepStats:
        return StepStats()

    @property
    def gamma_max(self) -> float | None:
        """Largest linear growth rate (identity Q, K, V and no mask; None otherwise)."""
        return self.system.gamma_max

    @property
    def step_size(self) -> float | None:
        """The fixed time step (None: adaptive)."""
        return self.system.step_size

    def attrs(self) -> dict[str, Any]:
        m = self.cfg["model"]
        s = self.system
        k = predicted_kmax(self.cfg) if s.gamma_max is not None else None
        zero_t = math.isinf(m["beta"])
        out = {"conventions": CONVENTIONS + "; particles: mu = N^-1 sum_j m_j delta_{x_j}",
               "density_measure": "empirical measure of the tokens",
               "kernel": ("none (beta = inf: v = P_x(V B^T x/|B^T x|))" if zero_t else
                          ExponentialKernel(m["beta"], m["time_unit"]).name),
               "time_unit": m["time_unit"], "seed": self.cfg["initial"]["seed"],
               "domain": "particles", "representation": s.representation,
               "summation": s.summation, "qkv": s.attention.name, "drift": "convolution",
               "model": m["model"],
               "energy_is_lyapunov": bool(s.energy_is_lyapunov),
               "frozen_centres": self.centres.tolist(), "frozen_tokens": self.n_frozen}
        out.update(theory_attrs(self.cfg, k, s.gamma_max))
        if self.report is not None:
            import json

            out["drift"] = "attention"
            out["attention_report"] = json.dumps(self.report.as_dict())
        return out

    def initial_state(self) -> np.ndarray:
        """The tokens of [initial], after the frozen centres (if any)."""
        x = self._tokens()
        nf = self.n_frozen
        if not nf:
            return x
        c = self.centres if self.angles else np.stack([np.cos(self.centres),
                                                       np.sin(self.centres)], axis=-1)
        c = np.broadcast_to(c, (x.shape[0], *c.shape))
        if x.shape[1] == self.count:  # drawn with the centres' places: overwrite them
            x = x.copy()
            x[:, :nf] = c
        else:
            x = np.concatenate([c, x], axis=1)
        return self.system.check_state(x, "initial")

    def _tokens(self) -> np.ndarray:
        i = self.cfg["initial"]
        if i["kind"] in ("uniform", "noise", "tokens"):  # N i.i.d. uniform tokens
            return self.system.uniform_sample(self.cfg["particles"]["batch"], i["seed"])
        if i["kind"] == "vmf":  # i.i.d. from a von Mises-Fisher mixture (seed 004 Figs. 1-2)
            from solvers.particles import vmf_mixture

            x = vmf_mixture(i["directions"], i["kappas"] or i["kappa"], i["masses"] or None,
                            self.cfg["particles"]["count"], self.cfg["particles"]["batch"],
                            i["seed"])
            if self.angles:
                x = np.arctan2(x[..., 1], x[..., 0])
            return self._check(x, "initial.directions")
        if i["kind"] == "quantiles":  # deterministic placement at a circle density's quantiles
            from solvers.particles import quantile_circle_density

            p = array_from_file(i["path"], None, index=0)
            if not np.all(np.isfinite(p)) or p.min() < 0 or not p.sum() > 0:
                raise InputError("initial.path", "must hold a density (finite, >= 0, positive "
                                 "mass)", i["path"])
            x = quantile_circle_density(p, self.cfg["particles"]["count"])
            if not self.angles:  # general matrices: unit vectors
                x = np.stack([np.cos(x), np.sin(x)], axis=-1)
            return self._check(np.broadcast_to(x, (self.cfg["particles"]["batch"],
                                                               *x.shape)).copy(),
                                           "initial.path")
        path = Path(i["path"])
        if not path.is_file() or path.suffix != ".npy":
            raise InputError("initial.path", "must be an existing .npy file of angles (batch, "
                             "N) or unit vectors (batch, N, d)", i["path"])
        try:
            x = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InputError("initial.path", f"is not a plain numeric .npy array ({exc})",
                             i["path"]) from None
        return self._check(x, "initial.path")

    def _check(self, x: np.ndarray, name: str) -> np.ndarray:
        """check_state, except for the N tokens that initial_state puts after the centres."""
        x = np.asarray(x, float)
        if self.n_frozen and x.ndim >= 2 and x.shape[1] == self.count - self.n_frozen:
            return x
        return self.system.check_state(x, name)

    @property
    def stepper(self):
        """What ``advance`` steps with (see ``GridProblem.stepper``)."""
        return self.system

    def advance(self, state, t, target, stats, deadline=None, max_steps=None):
        return self.system.advance(state, t, target, stats, deadline, max_steps)

    def _vectors(self, state) -> np.ndarray:
        x = np.asarray(state, float)
        return np.stack([np.cos(x), np.sin(x)], axis=-1) if self.angles else x

    def _attention(self) -> list:
        """AttentionDiagnostics per system, Pi_# rho_0 from the (deterministic) initial state."""
        if self._attention_diag is None:
            from solvers.attention_measures import AttentionDiagnostics

            x0 = self._vectors(self.initial_state())
            w = np.broadcast_to(self.system.masses, x0.shape[:2]) / x0.shape[1]
            self._attention_diag = [AttentionDiagnostics(self.report, x0[b], w[b])
                                    for b in range(x0.shape[0])]
        return self._attention_diag

    def diagnostics(self, state, stats) -> dict[str, Any]:
        d = self.system.diagnostics(state, self.modes)
        if self.report is not None:
            x = self._vectors(state)
            w = np.broadcast_to(self.system.masses, x.shape[:2]) / x.shape[1]
            rows = [f(x[b], w[b]) for b, f in enumerate(self._attention())]
            d.update({k: np.array([r[k] for r in rows]) for k in rows[0]})
        out = {k: d[k] for k in self.diag_specs if k in d}
        out["dt"] = stats.last_dt
        out["steps"] = stats.steps
        return out

    def snapshot(self, state) -> np.ndarray:
        return state

    def save_state(self, state, stats: StepStats) -> tuple[dict, dict]:
        arrays = {"x": state}
        if stats.f is not None:
            arrays["f"] = stats.f
        scalars = {"dt": -1.0 if stats.dt is None else stats.dt, "steps": stats.steps,
                   "rejected": stats.rejected, "last_dt": stats.last_dt,
                   "max_courant": stats.max_courant, "cfl_violations": stats.cfl_violations}
        return arrays, scalars

    def load_state(self, arrays, scalars):
        st = self.new_stats()
        st.dt = None if scalars["dt"] < 0 else float(scalars["dt"])
        st.f = arrays.get("f")
        st.steps, st.rejected = int(scalars["steps"]), int(scalars["rejected"])
        st.last_dt = float(scalars["last_dt"])
        st.max_courant = float(scalars.get("max_courant", 0.0))
        st.cfl_violations = int(scalars.get("cfl_violations", 0))
        return np.asarray(arrays["x"], float), st


def particle_cluster_count(x: np.ndarray, *, angles: bool, level: float = 2.0,
                           min_mass: float = 0.01, clustered_fraction: float = 0.5,
                           eps: float = 0.01) -> int:
    """Tokens of one system. Circle: the PDE rule on a histogram with max(16, min(N/20,
    720)) bins (>= 20 tokens per bin on average, so counting noise stays below the level).
    S^{d-1}: connected components of <x_i, x_j> > 1 - eps (seed 001's rule,
    ``solvers.clusters``), with eps capped so that i.i.d. uniform tokens have 0.3 linked
    neighbours on average: the link angle a solves N |S^{d-2}| a^{d-1} / ((d-1) |S^{d-1}|)
    = 0.3, far below percolation, so the uniform state counts as zero clusters for any N."""
    if angles:
        from meanfield.initial import from_particles

        bins = int(max(16, min(x.size // 20, 720)))
        return density_cluster_count(from_particles(bins, x), level=level, min_mass=min_mass,
                                     clustered_fraction=clustered_fraction)
    from solvers.clusters import detect_clusters

    n, d = x.shape
    a = (0.3 * (d - 1) * sphere_area(d) / (sphere_area(d - 1) * n)) ** (1.0 / (d - 1)) \
        if d > 2 else 0.3 * math.pi / n
    cl = detect_clusters(x[None], method="inner", eps=min(eps, 1.0 - math.cos(a)))[0]
    kept = cl.masses[cl.masses >= min_mass]
    return int(kept.size) if kept.sum() >= clustered_fraction else 0


class Particles(Domain):
    name = "particles"
    summary = "N tokens on S^{d-1}: USA/SA, masks, Q/K/V, batches (section [particles])"
    general_attention = True
    frozen_centres = True
    zero_temperature = True
    schemes = ()
    defaults = {"initial": {"kind": "uniform"}}  # noqa: RUF012
    keys = {  # noqa: RUF012 - read-only class data
        "particles": {
            "count": Key(1000, int, "number of tokens N", check=ge(1),
                         allowed="an integer >= 1"),
            "integrator": Key("rk4", str, "euler (projected) | euler-unprojected (the papers' "
                              "step: Euler on the unprojected average, then renormalise) | "
                              "rk4 | adaptive (Dormand-Prince 5(4)) | exact (beta = inf: the "
                              "characteristics e^{sA}x/|e^{sA}x|)",
                              (*integrators("ode"), "exact")),
            "dt": Key(0.0, NUM, "fixed step (euler, rk4); 0 = from the velocity Lipschitz "
                      "bound and 0.02/gamma_max", check=ge(0), allowed="a number >= 0"),
            "rtol": Key(1e-8, NUM, "adaptive: relative tolerance", check=gt(0),
                        allowed="a number > 0"),
            "atol": Key(1e-10, NUM, "adaptive: absolute tolerance", check=gt(0),
                        allowed="a number > 0"),
            "mask": Key("none", str, "none | causal (token i attends to j <= i)",
                        ("none", "causal")),
            "qkv": Key("identity", str, "identity | gaussian | orthogonal | symmetric-psd | "
                       "path to a .npz with Q, K, V"),
            "qkv_scale": Key(1.0, NUM, "scale of the random Q, K, V ensembles", check=ge(0),
                             allowed="a number >= 0"),
            "normalization": Key("1/N", str, "USA prefactor: 1/N | 1 | 1/N^2",
                                 ("1/N", "1", "1/N^2")),
            "batch": Key(1, int, "independent systems simulated together (seeds)",
                         check=ge(1), allowed="an integer >= 1"),
        },
    }
    spectrum_label = r"$\|P_k\mu\|_{L^2} = |c_k|/\sqrt{\pi}$"

    def check(self, cfg: dict) -> None:
        m, i, p = cfg["model"], cfg["initial"], cfg["particles"]
        self.check_attention(cfg)
        if m["drift"] not in ("convolution", "attention"):
            raise InputError("model.drift", "must be 'convolution' or 'attention' for "
                             "model.domain = 'particles' (general matrices: [attention])",
                             m["drift"])
        if attention_config.given(cfg) and p["qkv"] != "identity":
            raise InputError("particles.qkv", "give the matrices once: [attention] or "
                             "particles.qkv, not both", p["qkv"])
        zero_t = attention_config.zero_temperature(cfg)
        if cfg["frozen"]["centres"] and (m["dim"] != 2 or zero_t):
            raise InputError("frozen.centres", "are angles on S^1: they need model.dim = 2 and "
                             "a finite model.beta")
        if (p["integrator"] == "exact") != zero_t and p["integrator"] == "exact":
            raise InputError("particles.integrator", "'exact' (the characteristics) applies "
                             "to model.beta = inf only", p["integrator"])
        if zero_t and p["mask"] != "none":
            raise InputError("particles.mask", "must be 'none' at model.beta = inf")
        if i["kind"] not in INITIAL_KINDS:
            raise InputError("initial.kind", "must be uniform (= noise = tokens: N i.i.d. "
                             "uniform tokens), vmf, file or quantiles for model.domain = "
                             "'particles'", i["kind"])
        if i["kind"] == "vmf":
            if not i["directions"] or len(i["directions"][0]) != m["dim"]:
                raise InputError("initial.directions", f"must list vectors in R^{m['dim']} "
                                 "(model.dim) for kind 'vmf'", i["directions"])
            if i["kappas"] and len(i["kappas"]) != len(i["directions"]):
                raise InputError("initial.kappas", "must give one kappa per direction",
                                 i["kappas"])
            if i["masses"] and len(i["masses"]) != len(i["directions"]):
                raise InputError("initial.masses", "must give one weight per direction",
                                 i["masses"])
        if i["kind"] == "quantiles" and m["dim"] != 2:
            raise InputError("initial.kind", "'quantiles' (tokens at the quantiles of a circle "
                             "density) needs model.dim = 2", i["kind"])
        if cfg["time"]["schedule"] == "steps":
            raise InputError("time.schedule", "must be linear or log for particles")
        if p["normalization"] != "1/N" and m["model"] != "usa":
            raise InputError("particles.normalization", "applies to model.model = 'usa' only")
        if cfg["time"]["t_end_units"] == "e_folds" and (
                p["mask"] != "none" or p["qkv"] != "identity" or zero_t
                or not attention_config.matrices(cfg).isotropic):
            raise InputError("time.t_end_units", "'e_folds' needs particles.mask = 'none' and "
                             "particles.qkv = 'identity' (gamma_max is known only then): use "
                             "time.t_end_units = 'time'")

    def ensemble_key(self, cfg: dict) -> tuple | None:
        """Fixed-step runs of the papers' rules (euler, euler-unprojected) batch together by
        N and d (``solvers.particles.ensemble``; masks, frozen tokens and beta = inf step
        alone)."""
        p = cfg["particles"]
        if p["integrator"] not in ("euler", "euler-unprojected"):
            return None
        return ("particles", p["count"], cfg["model"]["dim"], p["integrator"])

    def problem(self, cfg: dict) -> ParticlesProblem:
        return ParticlesProblem(cfg)

    def points(self, run, index: int, system: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The tokens of one system (unit vectors) with their masses."""
        x = np.asarray(run.snapshot(index)[system], float)
        if x.ndim == 1:
            x = np.stack([np.cos(x), np.sin(x)], axis=1)
        m = run.static("masses")
        w = np.ones(x.shape[0]) if m is None else np.asarray(m, float)
        return x, w / w.sum()

    def resolution(self, cfg: dict) -> str:
        p = cfg["particles"]
        return f"N = {p['count']}, {p['integrator']}"

    def cluster_count(self, snapshot: np.ndarray, coords: dict, params: dict) -> int:
        system = params.get("system", 0)
        return particle_cluster_count(snapshot[system], angles=snapshot.ndim == 2,
                                      level=params["cluster_level"],
                                      min_mass=params["cluster_min_mass"],
                                      clustered_fraction=params["clustered_fraction"],
                                      eps=params["cluster_eps"])

    def effective_tokens(self, cfg: dict) -> float | None:
        """The tokens themselves (i.i.d. uniform draws)."""
        kind = cfg["initial"]["kind"]
        return float(cfg["particles"]["count"]) if kind not in ("file", "quantiles", "vmf") \
            else None

    def upgrade_diagnostics(self, d: dict[str, np.ndarray], version: int) -> dict:
        """Format 1 stored the Fourier proxy (2/pi) max |c_k| as tv_distance."""
        if version < 2 and "tv_distance" in d:
            d = dict(d)
            d["tv_fourier_proxy"] = d.pop("tv_distance")
        return super().upgrade_diagnostics(d, version)

    def token_trajectory(self, run, system: int = 0) -> np.ndarray | None:
        """Masked runs on S^1 (angles): the tokens after any frozen centres, label order."""
        cfg = run.config
        if cfg["particles"]["mask"] == "none" or run.field != "angles":
            return None
        nf = len(cfg.get("frozen", {}).get("centres", []))
        return np.stack([np.asarray(run.snapshot(i)[system], float)[nf:]
                         for i in range(run.n_snapshots)])

    def figures(self, run, analysis: dict, out: Path, stem: str, title: str) -> list[str]:
        from meanfield.figures import particle_figures

        return particle_figures(run, analysis, out, stem, title)


DOMAIN = Particles()
__all__ = ["DOMAIN", "ParticlesProblem", "particle_cluster_count"]
