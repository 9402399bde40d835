"""Causal attention on the circle: densities over token labels (seed 002, solvers.causal).

Config: ``[causal]`` slices (S) and self_weight; ``discretization.cells`` (M per slice),
scheme fv2; ``model.model`` sa (the paper's) or usa; Q = K = V = I or general B = Q^T K and V
from ``[attention]``; frozen cross-attention centres from ``[frozen]`` (weights a_j in token
units, mass a_j / causal.sequence). Files hold
density(time, slice, theta) with the slice weights and label edges as coordinates; the
diagnostics describe the label-averaged density (all tokens) plus each slice's mass.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from meanfield import initial
from meanfield.domains.base import CONVENTIONS, Domain, GridProblem, array_from_file, common_specs
from meanfield.schema import NUM, Key, ge
from meanfield.theory.errors import InputError
from solvers.causal import CausalCircle
from solvers.clusters import density_cluster_count

TWO_PI = 2.0 * math.pi
INITIAL_KINDS = ("uniform", "noise", "mode", "bumps", "file")


class CausalProblem(GridProblem):
    """Run adapter for ``solvers.causal.CausalCircle``."""

    measure = "d theta on [0, 2 pi), per slice"
    field_dims = ("slice", "theta")

    def __init__(self, cfg: dict) -> None:
        from meanfield import attention_config

        m, d, c = cfg["model"], cfg["discretization"], cfg["causal"]
        k = c["tokens"]
        mats = attention_config.matrices(cfg)
        centres, weights = Causal.frozen(cfg)
        scheme = CausalCircle(d["cells"], c["slices"], m["beta"], m["model"],
                              self_weight=c["self_weight"], time_unit=m["time_unit"],
                              cfl=d["cfl"], dt=d["dt"] or None, accuracy=d["accuracy"],
                              integrator=d["integrator"], tokens=k,
                              token_mass=k / c["sequence"] if k else 0.0,
                              B=None if mats.isotropic else mats.B,
                              V=None if mats.isotropic else mats.V,
                              centres=centres, centre_mass=weights / c["sequence"])
        self.matrices = mats
        if k:  # the first tokens: i.i.d. uniform (the Renyi seeds), from initial.seed
            scheme.set_tokens(np.random.default_rng([cfg["initial"]["seed"], 2]).uniform(
                0.0, TWO_PI, k))
        super().__init__(cfg, scheme)
        s = self.scheme
        edges = np.concatenate([[0.0], np.cumsum(s.weights)])
        self.coords = {
            "slice": (np.arange(s.slices), {"long_name": "slice of token labels s (0 = the "
                                            "first tokens)"}),
            "theta": (s.theta, {"long_name": "cell centre angle", "units": "rad"}),
            "mode": self.mode_coord,
            "edge": (np.arange(s.slices + 1), {"long_name": "slice edge index"}),
        }
        self.static = {"slice_weight": (s.weights, {"long_name": "w_l: share of the tokens "
                                                    "in slice l"}, ("slice",)),
                       "label_edges": (edges, {"long_name": "label s at the slice edges"},
                                       ("edge",))}
        self.field_attrs = {"long_name": "probability density of slice l w.r.t. d theta "
                            "(cell averages)", "units": "1/rad"}
        self.diag_specs = common_specs("d theta (label-averaged)") | {
            "slice_mass": (("slice",), "f8", {"long_name": "mass of each slice"}),
        }
        self.snapshot_specs: dict = {}
        self.event_specs: dict = {}
        if k:
            self.coords["token"] = (np.arange(k), {"long_name": "hybrid token (label order)"})
            self.snapshot_specs = {"token_angle": (("token",), "f8", {
                "long_name": "angle of the exact first tokens (not wrapped)", "units": "rad"})}

    def snapshot_extras(self, state) -> dict[str, np.ndarray]:
        return {"token_angle": self.scheme.token_angles(state)} if self.scheme.tokens else {}

    def attrs(self) -> dict[str, Any]:
        out = super().attrs()
        s = self.scheme
        out.update({"density_measure": "d theta on [0, 2 pi) per slice of token labels",
                    "domain": "causal", "slices": s.slices, "self_weight": s.self_weight,
                    "hybrid_tokens": s.tokens, "token_mass": s.token_mass,
                    "drift": "causal convolution" if s.attention is None else
                             "causal general attention",
                    "velocity": "slice s: SA v = d_theta(W*nu^s)/(beta W*nu^s), USA v = "
                                "d_theta(W*nu^s), nu^s = sum_{k<l} w_k p_k + self_weight w_l "
                                "p_l (+ frozen centres)" if s.attention is None else
                                "slice s: SA v = P_x(V int e^{beta<x,By>} y dnu^s / int "
                                "e^{beta<x,By>} dnu^s), USA without the denominator",
                    "B": self.matrices.B.ravel().tolist(),
                    "V": self.matrices.V.ravel().tolist(),
                    "matrices": self.matrices.source,
                    "frozen_centres": s.centres.tolist(),
                    "frozen_mass": s.centre_mass.tolist(),
                    "conventions": CONVENTIONS + "; causal: §3.6"})
        return out

    def initial_density(self) -> np.ndarray:
        i, cells, n = self.cfg["initial"], self.scheme.cells, self.scheme.slices
        kind = i["kind"]
        if kind == "uniform":
            return np.full((n, cells), 1.0 / TWO_PI)
        if kind == "noise":  # independent white noise per slice (finite-n fluctuations)
            return np.stack([initial.white_noise(cells, i["amplitude"], i["seed"] + k,
                                                 renormalize=True) for k in range(n)])
        if kind == "mode":
            return np.broadcast_to(initial.mode(cells, i["mode"], i["amplitude"], i["phase"]),
                                   (n, cells)).copy()
        if kind == "bumps":
            return np.broadcast_to(initial.von_mises_bumps(cells, i["centres"],
                                                           i["masses"] or None, i["kappa"]),
                                   (n, cells)).copy()
        return array_from_file(i["path"], (n, cells))


class Causal(Domain):
    name = "causal"
    summary = "causal attention on S^1: densities over token labels (seed 002; [causal])"
    schemes = ("fv2",)
    general_attention = True
    frozen_centres = True
    keys = {  # noqa: RUF012 - read-only class data
        "causal": {
            "slices": Key(16, int, "S slices of token labels of equal weight (1 = full "
                      "attention)", check=ge(1), allowed="an integer >= 1"),
            "self_weight": Key(1.0, NUM, "weight of a slice in its own attention: 1 mimics "
                               "j <= k, 1/2 is the midpoint rule",
                               check=lambda v: 0 <= v <= 1, allowed="a number in [0, 1]"),
            "tokens": Key(0, int, "hybrid: the first K tokens as exact particles (i.i.d. "
                          "uniform from initial.seed) ahead of the slices; 0 = none",
                          check=ge(0), allowed="an integer >= 0"),
            "sequence": Key(1000, int, "hybrid: the sequence length n; the K tokens hold K/n "
                            "of the mass, the slices the rest", check=ge(2),
                            allowed="an integer >= 2"),
        },
    }
    defaults = {"model": {"model": "sa"}}  # noqa: RUF012 - seed 002's normalised attention
    spectrum_label = r"$\|P_k\bar\mu\|_{L^2}$ (label-averaged)"

    def check(self, cfg: dict) -> None:
        super().check(cfg)
        m, i = cfg["model"], cfg["initial"]
        if m["dim"] != 2:
            raise InputError("model.dim", "must be 2 for model.domain = 'causal'", m["dim"])
        if m["drift"] != "convolution":
            raise InputError("model.drift", "must be 'convolution' for model.domain = "
                             "'causal' (Q = K = V = I)", m["drift"])
        if i["kind"] not in INITIAL_KINDS:
            raise InputError("initial.kind", f"must be one of {', '.join(INITIAL_KINDS)} for "
                             "model.domain = 'causal'", i["kind"])
        c = cfg["causal"]
        if c["tokens"] and c["tokens"] >= c["sequence"]:
            raise InputError("causal.tokens", "must be < causal.sequence (the slices hold the "
                             "other tokens)", c["tokens"])
        if cfg["stop"]["single_cluster"]:
            raise InputError("stop.single_cluster", "needs atoms, which the causal domain "
                             "does not have")

    def problem(self, cfg: dict) -> CausalProblem:
        return CausalProblem(cfg)

    def resolution(self, cfg: dict) -> str:
        return f"fv2, M = {cfg['discretization']['cells']}, S = {cfg['causal']['slices']}"

    def cluster_count(self, snapshot: np.ndarray, coords: dict, params: dict) -> int:
        """Clusters of the label-averaged density (all tokens)."""
        p = np.asarray(snapshot, float)
        p = p.mean(axis=0) if p.ndim == 2 else p
        return density_cluster_count(p, level=params["cluster_level"],
                                     min_mass=params["cluster_min_mass"],
                                     clustered_fraction=params["clustered_fraction"])

    def points(self, run, index: int, system: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Cell centres with the label-averaged cell masses, and the hybrid tokens."""
        w = run.static("slice_weight")
        p = np.asarray(w) @ np.asarray(run.snapshot(index), float)
        th = np.asarray(run.coords["theta"], float)
        m = p * (TWO_PI / p.size)
        tok = run.extra("token_angle")
        if tok is not None:
            x = np.asarray(tok[index], float)
            th = np.concatenate([th, x])
            m = np.concatenate([m, np.full(x.size, float(run.attrs["token_mass"]) / x.size)])
        return np.stack([np.cos(th), np.sin(th)], axis=1), m / m.sum()

    def token_trajectory(self, run, system: int = 0) -> np.ndarray | None:
        """The hybrid's exact first tokens (the Renyi seeds), if any."""
        tok = run.extra("token_angle")
        return None if tok is None else np.asarray(tok, float)

    def figures(self, run, analysis: dict, out: Path, stem: str, title: str) -> list[str]:
        from meanfield.figures import causal_figures

        return causal_figures(run, out, stem, title)


DOMAIN = Causal()
