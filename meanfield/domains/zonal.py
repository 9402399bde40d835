"""Zonal (axisymmetric) densities on S^{d-1}, any d >= 2 (``solvers.zonal.Zonal``).

Config: ``model.dim`` (any d >= 2), ``discretization.cells`` (M cells of the polar angle
[0, pi]); scheme ``fv``. Files hold density(time, theta) (theta = angle to the pole). With
``atoms.enabled`` (default) the density hands off to weighted rings once a cluster is
narrower than ``atoms.capture_width`` cells (``meanfield.domains.handoff``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from meanfield.domains.base import (
    array_from_file,
    common_specs,
    level_mass_clusters,
)
from meanfield.domains.handoff import HandoffDomain, HandoffProblem
from meanfield.theory.errors import InputError
from meanfield.theory.geometry import sphere_area
from solvers.zonal import Zonal
from solvers.zonal_atoms import RingAtoms, rings_from_density, zonal_clusters

INITIAL_KINDS = ("uniform", "noise", "tokens", "mode", "bumps", "file")


class ZonalProblem(HandoffProblem):
    """Zonal cells, then (once a cluster is narrower than atoms.capture_width cells) weighted
    rings of ``solvers.zonal_atoms`` with merges and pole captures."""

    measure = "the surface measure of S^{d-1} (zonal cells)"
    field_dims = ("theta",)
    position_attrs = {"long_name": "ring atom: polar angle to the pole (0, pi: a point atom "  # noqa: RUF012
                      "at the pole; NaN: none)", "units": "rad"}

    def __init__(self, cfg: dict) -> None:
        m, d = cfg["model"], cfg["discretization"]
        super().__init__(cfg, Zonal(d["cells"], m["dim"], m["beta"], m["model"],
                                    time_unit=m["time_unit"], cfl=d["cfl"],
                                    dt=d["dt"] or None, accuracy=d["accuracy"],
                                    integrator=d["integrator"]),
                         RingAtoms(m["dim"], m["beta"], m["model"], m["time_unit"],
                                   merge_window=cfg["atoms"]["merge_window"]))
        s = self.scheme
        self.coords = {
            "theta": (s.theta, {"long_name": "polar angle to the pole", "units": "rad"}),
            "mode": self.mode_coord,
        }
        self.field_attrs = {"long_name": "density w.r.t. the surface measure of S^{d-1} "
                            "(cell averages in the weighted measure)"}
        self.diag_specs = common_specs("dsigma")
        self.add_atom_specs()

    def attrs(self) -> dict[str, Any]:
        out = super().attrs()
        s = self.scheme
        out.update({"density_measure": f"surface measure of S^{s.dim - 1}, zonal",
                    "domain": "zonal", "dim": s.dim, "kernel": s.kernel.name,
                    "drift": "convolution", "model": s.model})
        return out

    def initial_density(self) -> np.ndarray:
        i = self.cfg["initial"]
        s = self.scheme
        kind = i["kind"]
        if kind == "uniform":
            return s.uniform()
        if kind == "mode":
            return s.mode(i["mode"], i["amplitude"])
        if kind in ("noise", "tokens"):
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
            return p0
        if kind == "bumps":  # rings at polar angles c (caps at 0 and pi)
            cen = np.asarray(i["centres"], float)
            mass = np.asarray(i["masses"] or [1.0 / cen.size] * cen.size, float)
            p0 = np.full(s.cells, (1.0 - mass.sum()) / s.area)
            for c, mi in zip(cen, mass, strict=True):
                bump = s.cell_average(lambda th, c=c: np.exp(i["kappa"] * (np.cos(th - c) - 1)))
                p0 += mi * bump / float(s.cell_weight @ bump)
            return p0
        return array_from_file(i["path"], (s.cells,))

    # ------------------------------------------------------------------ hand-off
    def handoff_due(self, q) -> bool:
        """Once a cluster holding at least atoms.capture_min_mass of the mass is narrower
        than atoms.capture_width cells (its angular standard deviation; a polar cap: the
        root mean square angle to the pole): from then on the cells would pin it."""
        s, a = self.scheme, self.cfg["atoms"]
        p = s.join(q)
        total = s.mass_of(p)
        return any(c.width <= a["capture_width"] * s.h and c.mass >= a["capture_min_mass"] * total
                   for c in zonal_clusters(s.theta, s.cell_weight, p, level=a["capture_level"]))

    def where(self, pos) -> str:
        return "at theta = " + ", ".join(f"{x:.4g}" for x in pos[:8]) + " rad "

    def atoms_from_grid(self, q) -> tuple[np.ndarray, np.ndarray, float]:
        s = self.scheme
        return rings_from_density(s.theta, s.cell_weight, s.join(q),
                                  level=self.cfg["atoms"]["capture_level"])


def zonal_cluster_count(theta: np.ndarray, p: np.ndarray, dim: int, *, level: float = 2.0,
                        min_mass: float = 0.01, clustered_fraction: float = 0.5) -> int:
    """Zonal data on S^{d-1}: regions of theta in [0, pi] (polar caps or rings) where p >
    level * mean(p), weighted by the measure |S^{d-2}| sin^{d-2}(theta) d theta."""
    h = math.pi / p.size
    w = (np.sin(theta) ** (dim - 2) if dim > 2 else np.ones_like(theta)) * h
    w *= sphere_area(dim) / w.sum()
    total = float(w @ p)
    above = p > level * total / sphere_area(dim)
    return level_mass_clusters(above, w, p, total, min_mass, clustered_fraction)


class ZonalDomain(HandoffDomain):
    name = "zonal"
    summary = "axisymmetric densities on S^{d-1}, any d: weighted finite volumes (scheme fv)"
    schemes = ("fv",)
    defaults = {"model": {"dim": 3}, "discretization": {"scheme": "fv", "cells": 512},  # noqa: RUF012
                "initial": {"kind": "tokens", "cutoff": 16}}
    spectrum_label = r"$|a_k| = \|P_k\mu\|_{L^2}$ (Gegenbauer)"

    def check(self, cfg: dict) -> None:
        super().check(cfg)
        m, i = cfg["model"], cfg["initial"]
        if m["drift"] != "convolution":
            raise InputError("model.drift", "must be 'convolution' for model.domain = 'zonal'",
                             m["drift"])
        if i["kind"] not in INITIAL_KINDS:
            raise InputError("initial.kind", f"must be one of {', '.join(INITIAL_KINDS)}",
                             i["kind"])
        if cfg["time"]["schedule"] == "steps":
            raise InputError("time.schedule", "must be linear or log for model.domain = "
                             "'zonal'")

    def ensemble_key(self, cfg: dict) -> tuple | None:
        """Zonal runs batch together by grid and dimension (``solvers.zonal_ensemble``); a
        run that hands off to atoms steps them on its own."""
        d = cfg["discretization"]
        return ("zonal", d["cells"], cfg["model"]["dim"])

    def problem(self, cfg: dict) -> ZonalProblem:
        return ZonalProblem(cfg)

    def cluster_count(self, snapshot: np.ndarray, coords: dict, params: dict) -> int:
        return zonal_cluster_count(coords["theta"], snapshot, params["dim"],
                                   level=params["cluster_level"],
                                   min_mass=params["cluster_min_mass"],
                                   clustered_fraction=params["clustered_fraction"])

    def figures(self, run, analysis: dict, out: Path, stem: str, title: str) -> list[str]:
        from meanfield.figures import profile_figures

        return profile_figures(run, analysis, out, stem, title, period=math.pi)


DOMAIN = ZonalDomain()
__all__ = ["DOMAIN", "ZonalProblem", "zonal_cluster_count"]
