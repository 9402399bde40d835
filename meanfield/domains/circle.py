"""The circle S^1: finite volumes (fv2, rusanov, lf) with any drift of ``solvers.drifts``.

Config: ``discretization.cells`` (M), ``scheme``, ``dt_per_dx`` (lf's paper step), the FFT
settings; ``model.drift`` (default ``convolution``: USA/SA self-attention) with the drift's
own parameters in ``[drift]``. Files hold density(time, theta) and spectrum(diag_time, mode).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from meanfield import attention_config, initial
from meanfield.domains.base import (
    CONVENTIONS,
    SNAPSHOT_BLOCK,
    Domain,
    GridProblem,
    array_from_file,
    common_specs,
)
from meanfield.schema import Key, ge
from meanfield.theory.errors import InputError
from solvers.atoms import EVENT_KINDS, AtomicCircle
from solvers.circle import make_scheme
from solvers.clusters import density_cluster_count
from solvers.drifts import DRIFTS

TWO_PI = 2.0 * math.pi
INITIAL_KINDS = ("uniform", "noise", "tokens", "mode", "bumps", "file")


def drift_name(cfg: dict) -> str:
    """model.drift, except that general [attention] matrices or beta = inf select the
    ``attention`` drift when model.drift is left at the convolution."""
    name = cfg["model"]["drift"]
    if attention_config.given(cfg) or attention_config.zero_temperature(cfg):
        if name == "convolution":
            return "attention"
        if not getattr(DRIFTS[name], "MATRICES", None):
            raise InputError("model.drift", "must be 'attention' with [attention] matrices "
                             "or model.beta = inf", name)
    return name


def drift_parameters(cfg: dict, name: str) -> dict[str, Any]:
    """Keyword parameters of drift ``name``: from [model] (beta, model, time_unit) or [drift],
    and B, V from [attention] for drifts that take matrices."""
    cls = DRIFTS[name]
    out = {k: (cfg["model"][k] if k in cfg["model"] else cfg["drift"][k])
           for k in cls.PARAMETERS}
    if getattr(cls, "MATRICES", None):
        mats = attention_config.matrices(cfg)
        out.update({"B": mats.B, "V": mats.V})
    return out


def initial_density(cfg: dict, cells: int) -> np.ndarray:
    """The initial density of ``[initial]`` on M = ``cells`` cells (meanfield.initial)."""
    i, m = cfg["initial"], cells
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
    return array_from_file(i["path"], (m,))


class CircleProblem(GridProblem):
    """Run adapter: ``solvers.circle`` schemes with the configured drift."""

    measure = "d theta on [0, 2 pi)"
    field_dims = ("theta",)

    def __init__(self, cfg: dict) -> None:
        d = cfg["discretization"]
        name = drift_name(cfg)
        drift = DRIFTS[name](**drift_parameters(cfg, name))
        kw: dict[str, Any] = {"drift": drift, "cfl": d["cfl"], "dt": d["dt"] or None,
                              "accuracy": d["accuracy"], "fft_threads": d["fft_threads"],
                              "fft_planner": d["fft_planner"]}
        if d["scheme"] == "lf":
            kw["dt_per_dx"] = d["dt_per_dx"] or None
        else:
            kw["integrator"] = d["integrator"]
        scheme = make_scheme(d["scheme"], d["cells"], **kw)
        a = cfg["atoms"]
        self.atomic = bool(a["enabled"]) and hasattr(drift, "atom_velocity")
        if self.atomic:
            scheme = AtomicCircle(scheme, capture_width=a["capture_width"],
                                  capture_level=a["capture_level"],
                                  capture_min_mass=a["capture_min_mass"],
                                  merge_window=a["merge_window"],
                                  residual_mass=a["residual_mass"])
        super().__init__(cfg, scheme)
        s = self.scheme
        self.coords = {
            "theta": (s.theta, {"long_name": "cell centre angle", "units": "rad"}),
            "mode": self.mode_coord,
        }
        self.field_attrs = {"long_name": "probability density w.r.t. d theta (cell averages; "
                            "the atoms are atom_position, atom_mass_by_atom)",
                            "units": "1/rad"}
        self.diag_specs = common_specs("d theta (density and atoms)") | {
            "angular_momentum": ((), "f8", {"long_name": "integral v dmu (density and atoms)"}),
        }
        self.snapshot_specs: dict = {}
        self.event_specs: dict = {}
        self._events_out = 0
        # general attention (seed 004): the spectral data and its diagnostics
        self.report = None
        self._attention_diag = None
        if getattr(drift, "MATRICES", None):
            from meanfield.theory.attention import attention_report
            from solvers.attention_measures import AttentionDiagnostics

            self.report = attention_report(drift.B, drift.V)
            self.diag_specs |= {k: ((), "f8", {"long_name": v})
                                for k, v in AttentionDiagnostics.NAMES.items()}
        if self.atomic:
            n = a["max"]
            self.coords["atom"] = (np.arange(n), {"long_name": "atom slot (heaviest first)"})
            self.coords["part"] = (np.arange(2), {"long_name": "merged atom"})
            self.diag_specs |= {
                "atoms": ((), "i4", {"long_name": "number of atoms"}),
                "atom_mass": ((), "f8", {"long_name": "mass in atoms"}),
            }
            self.snapshot_specs = {
                "atom_position": (("atom",), "f8", {"long_name": "atom angle (NaN: no atom)",
                                                    "units": "rad"}),
                "atom_mass_by_atom": (("atom",), "f8", {"long_name": "atom mass (0: no atom)"}),
            }
            self.event_specs = {
                "event_kind": ((), "i1", {"long_name": "0 capture, 1 merge, 2 residual "
                                          "(solvers.atoms)"}),
                "event_position": ((), "f8", {"long_name": "angle of the resulting atom",
                                              "units": "rad"}),
                "event_mass": ((), "f8", {"long_name": "mass of the resulting atom"}),
                "event_parts": (("part",), "f8", {"long_name": "masses merged (capture: the "
                                                 "cluster's, 0)"}),
                "event_oracle": ((), "f8", {"long_name": "merge: time predicted by the two-"
                                            "cluster law from the pair's gap at the previous "
                                            "event (NaN otherwise)"}),
            }

    def attrs(self) -> dict[str, Any]:
        out = super().attrs()
        out.update({"density_measure": "d theta on [0, 2 pi) plus weighted atoms",
                    "domain": "circle", "atoms": "enabled" if self.atomic else "disabled"})
        out.update(self.scheme.drift.describe())
        if self.report is not None:
            import json

            diag = self._attention()
            out["attention_report"] = json.dumps(self.report.as_dict() | diag.masses()
                                                 | {"V_p_exponent": diag.p})
        return out

    # ------------------------------------------------------------------ attention
    def _points(self, q) -> tuple[np.ndarray, np.ndarray]:
        """Cell centres as unit vectors with the cell masses (atoms appended)."""
        s = self.scheme
        th = s.theta
        p = s.join(q)
        w = p * s.dx
        if self.atomic and s.count:
            th = np.concatenate([th, s.positions(q)])
            w = np.concatenate([w, s.atoms.masses])
        return np.stack([np.cos(th), np.sin(th)], axis=1), w

    def _attention(self):
        """AttentionDiagnostics with Pi_# rho_0 from the initial density (once)."""
        if self._attention_diag is None:
            from solvers.attention_measures import AttentionDiagnostics

            p0 = self.initial_density()
            th = self.scheme.theta
            x0 = np.stack([np.cos(th), np.sin(th)], axis=1)
            self._attention_diag = AttentionDiagnostics(self.report, x0, p0 * self.scheme.dx,
                                                        ot_points=1024)
        return self._attention_diag

    def diagnostics(self, state, stats) -> dict[str, Any]:
        d = super().diagnostics(state, stats)
        if self.report is not None:
            d |= self._attention()(*self._points(state))
        return d

    # ------------------------------------------------------------------ atoms
    def snapshot_extras(self, state) -> dict[str, np.ndarray]:
        n = self.cfg["atoms"]["max"]
        pos, mass = np.full(n, np.nan), np.zeros(n)
        if self.atomic and self.scheme.count:
            x, m = self.scheme.positions(state), self.scheme.atoms.masses
            order = np.argsort(-m)[:n]
            pos[: order.size], mass[: order.size] = x[order], m[order]
        return {"atom_position": pos, "atom_mass_by_atom": mass}

    def new_events(self) -> list[tuple[float, dict]]:
        if not self.atomic:
            return []
        events = self.scheme.atoms.events[self._events_out:]
        self._events_out += len(events)
        return [(e.t, {"event_kind": EVENT_KINDS.index(e.kind), "event_position": e.position,
                       "event_mass": e.mass,
                       "event_parts": np.array([*e.parts, 0.0, 0.0][:2]),
                       "event_oracle": e.oracle}) for e in events]

    def save_state(self, state, stats) -> tuple[dict, dict]:
        arrays, scalars = super().save_state(state, stats)
        if self.atomic:
            s = self.scheme
            arrays["atom_masses"] = s.atoms.masses
            arrays["config_positions"] = s.config_positions
            scalars["density_mass"] = s.density_mass
            scalars["config_time"] = s.config_time
            scalars["since_capture"] = s.since_capture
        return arrays, scalars

    def load_state(self, arrays, scalars):
        state, stats = super().load_state(arrays, scalars)
        if self.atomic:
            self.scheme.restore(state, np.asarray(arrays["atom_masses"], float),
                                float(scalars["density_mass"]),
                                float(scalars["config_time"]),
                                np.asarray(arrays["config_positions"], float),
                                int(scalars["since_capture"]))
        return state, stats

    def initial_density(self) -> np.ndarray:
        return initial_density(self.cfg, self.scheme.cells)


class Circle(Domain):
    name = "circle"
    summary = "the circle S^1: finite volumes fv2 | rusanov | lf, any drift (model.drift)"
    general_attention = True
    zero_temperature = True
    schemes = ("fv2", "rusanov", "lf")
    keys = {  # noqa: RUF012 - read-only class data
        "discretization": {
            "dt_per_dx": Key(0.0, (int, float), "lf only: fixed dt = dt_per_dx * dx (seed "
                             "003); 0 = off", check=ge(0), allowed="a number >= 0"),
            "fft_threads": Key(1, int, "FFTW threads per run", check=ge(1),
                               allowed="an integer >= 1"),
            "fft_planner": Key("estimate", str, "estimate (bit-reproducible) | measure "
                               "(faster at M >= 16384, plans may differ between processes)",
                               ("estimate", "measure")),
        },
    }
    spectrum_label = r"$\|P_k\mu\|_{L^2} = |\hat p_k|/\sqrt{\pi}$"

    def check(self, cfg: dict) -> None:
        super().check(cfg)
        m, d, i = cfg["model"], cfg["discretization"], cfg["initial"]
        if m["dim"] != 2:
            raise InputError("model.dim", "must be 2 for model.domain = 'circle'", m["dim"])
        if i["kind"] not in INITIAL_KINDS:
            raise InputError("initial.kind", f"must be one of {', '.join(INITIAL_KINDS)} on "
                             "the circle", i["kind"])
        if i["kind"] == "mode" and 2 * i["mode"] >= d["cells"]:
            raise InputError("initial.mode", "must be < discretization.cells / 2", i["mode"])
        if i["kind"] == "tokens" and 2 * i["cutoff"] + 2 > d["cells"]:
            raise InputError("initial.cutoff", "must be <= (discretization.cells - 2)/2",
                             i["cutoff"])
        if d["dt_per_dx"] > 0 and d["scheme"] != "lf":
            raise InputError("discretization.dt_per_dx", "applies to scheme 'lf' only")

    def ensemble_key(self, cfg: dict) -> tuple | None:
        """Circle runs batch together by grid, scheme, integrator and drift
        (``solvers.ensemble.CircleEnsemble``; atoms: fv2 with adaptive SSP-RK3)."""
        d = cfg["discretization"]
        integrator = "euler" if d["scheme"] == "lf" else d["integrator"]
        return ("circle", d["cells"], d["scheme"], integrator, drift_name(cfg))

    def problem(self, cfg: dict) -> CircleProblem:
        return CircleProblem(cfg)

    def points(self, run, index: int, system: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Cell centres with the cell masses, and the atoms of the snapshot."""
        p = np.asarray(run.snapshot(index), float)
        th = np.asarray(run.coords["theta"], float)
        w = p * (TWO_PI / p.size)
        pos, mass = run.extra("atom_position"), run.extra("atom_mass_by_atom")
        if pos is not None:
            ok = np.asarray(mass[index]) > 0
            th = np.concatenate([th, np.asarray(pos[index])[ok]])
            w = np.concatenate([w, np.asarray(mass[index])[ok]])
        return np.stack([np.cos(th), np.sin(th)], axis=1), w / w.sum()

    def cluster_count(self, snapshot: np.ndarray, coords: dict, params: dict) -> int:
        return density_cluster_count(snapshot, level=params["cluster_level"],
                                     min_mass=params["cluster_min_mass"],
                                     clustered_fraction=params["clustered_fraction"])

    def cluster_series(self, run, params: dict, system: int = 0) -> np.ndarray:
        """Counts of the whole measure: each atom's mass is added to its cell (as m/dx)
        before the density's clusters are counted, so an atom is a cluster and a density
        cluster around an atom is not counted twice."""
        pos, mass = run.extra("atom_position"), run.extra("atom_mass_by_atom")
        if pos is None:
            return super().cluster_series(run, params, system)
        out = []
        for lo in range(0, run.n_snapshots, SNAPSHOT_BLOCK):   # block reads: one per block
            hi = min(lo + SNAPSHOT_BLOCK, run.n_snapshots)
            ps, xs, ms = run.density[lo:hi], pos[lo:hi], mass[lo:hi]
            for p, x, m in zip(np.asarray(ps, float), xs, ms, strict=True):
                ok = m > 0
                if ok.any():
                    dx = TWO_PI / p.size
                    cells = np.minimum((np.mod(x[ok], TWO_PI) / dx).astype(int), p.size - 1)
                    np.add.at(p, cells, m[ok] / dx)
                out.append(self.cluster_count(p, run.coords, params))
        return np.asarray(out, dtype=int)

    def effective_tokens(self, cfg: dict) -> float | None:
        """Token noise: N. White noise sigma per cell on M cells: E|p_hat_k|^2 = (2 pi)^2
        sigma^2 / M, i.e. N_eff = M / (2 pi sigma)^2 (E|c_k|^2 = 1/N for N tokens)."""
        i = cfg["initial"]
        if i["kind"] == "noise" and i["amplitude"] > 0:
            return cfg["discretization"]["cells"] / (TWO_PI * i["amplitude"]) ** 2
        return super().effective_tokens(cfg)

    def figures(self, run, analysis: dict, out: Path, stem: str, title: str) -> list[str]:
        from meanfield.figures import profile_figures

        return profile_figures(run, analysis, out, stem, title, period=TWO_PI)


DOMAIN = Circle()
__all__ = ["CONVENTIONS", "DOMAIN", "CircleProblem", "initial_density"]
