"""The sphere S^2: the pseudo-spectral scheme of ``solvers.sphere.Spectral`` (shtns).

Config: ``discretization.lmax``, ``discretization.filter``, ``stop.unresolved`` (stop, with
status complete and a message, once the spectrum says the solution is no longer resolved).
Files hold density(time, lat, lon) on the Gauss grid and spectrum(diag_time, mode).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from meanfield.domains.base import array_from_file, common_specs
from meanfield.domains.handoff import HandoffDomain, HandoffProblem
from meanfield.initial import sphere as ini
from meanfield.schema import Key, ge
from meanfield.theory.errors import InputError
from solvers.sphere import Spectral
from solvers.sphere_atoms import WeightedAtoms, atoms_from_density

INITIAL_KINDS = ("uniform", "noise", "tokens", "mode", "bumps", "file")


class SphereProblem(HandoffProblem):
    measure = "the surface measure of S^2 (Gauss grid)"
    field_dims = ("lat", "lon")
    atom_axes = {"component": (np.arange(3), {"long_name": "ambient axis"})}  # noqa: RUF012
    position_attrs = {"long_name": "atom position, unit vector (NaN: none)"}  # noqa: RUF012

    def __init__(self, cfg: dict) -> None:
        m, d = cfg["model"], cfg["discretization"]
        super().__init__(cfg, Spectral(d["lmax"], m["beta"], m["model"],
                                       time_unit=m["time_unit"], cfl=d["cfl"],
                                       dt=d["dt"] or None, accuracy=d["accuracy"],
                                       integrator=d["integrator"],
                                       filter=d["filter"] or None),
                         WeightedAtoms(3, m["beta"], m["model"], m["time_unit"],
                                       merge_window=cfg["atoms"]["merge_window"]))
        s = self.scheme
        x, phi = s.grid()
        self.coords = {
            "lat": (90.0 - np.degrees(np.arccos(x)), {"long_name": "latitude (Gauss nodes)",
                                                      "units": "degrees_north"}),
            "lon": (np.degrees(phi), {"long_name": "longitude", "units": "degrees_east"}),
            "mode": self.mode_coord,
        }
        self.field_attrs = {"long_name": "probability density w.r.t. the surface measure of "
                            "S^2 (grid values)", "units": "1/sr"}
        self.diag_specs = common_specs("dsigma (Gauss quadrature)") | {
            "tail_fraction": ((), "f8", {"long_name": "power fraction in the top degrees"}),
            "resolved": ((), "i1", {"long_name": "1 if the spectrum tail is below threshold"}),
        }
        self.add_atom_specs()

    def attrs(self) -> dict[str, Any]:
        out = super().attrs()
        s = self.scheme
        out.update({"density_measure": "surface measure of S^2 (4 pi total)", "domain": "sphere",
                    "lmax": s.lmax, "nlat": s.nlat, "nphi": s.nphi, "kernel": s.kernel.name,
                    "drift": "convolution", "model": s.model,
                    "dealiasing": "3/2 rule: nlat >= 3(lmax+1)/2, nphi >= 3 lmax + 1"})
        return out

    def initial_density(self) -> np.ndarray:
        i = self.cfg["initial"]
        x, phi = self.scheme.grid()
        kind = i["kind"]
        if kind == "uniform":
            return ini.uniform(x, phi)
        if kind in ("noise", "tokens"):  # the N-token noise, N = initial.tokens
            return ini.token_noise(x, phi, i["tokens"], i["seed"],
                                   cutoff=min(i["cutoff"], self.scheme.lmax))
        if kind == "mode":
            return ini.harmonic(x, phi, (i["mode"], 0), i["amplitude"])
        if kind == "bumps":
            c = np.asarray(i["centres"], float).reshape(-1, 2)  # (lat, lon) pairs, degrees
            cen = np.array([ini.direction(la, lo) for la, lo in c])
            return ini.von_mises_fisher(x, phi, cen, i["masses"] or None, i["kappa"])
        return array_from_file(i["path"], (x.size, phi.size))

    # ------------------------------------------------------------------ hand-off
    def handoff_due(self, q) -> bool:
        """Once the spectrum tail says the solution is no longer resolved."""
        return not self.scheme.resolution_report(q).resolved

    def atoms_from_grid(self, q) -> tuple[np.ndarray, np.ndarray, float]:
        """The grid density becomes weighted atoms (solvers.sphere_atoms), mass exact."""
        s = self.scheme
        x, phi = s.grid()
        pts = ini.unit_vectors(x, phi).reshape(-1, 3)
        w = (np.broadcast_to(s.sht.weights[:, None], (x.size, phi.size))
             * (2 * math.pi / phi.size)).ravel()
        p = s.join(q).ravel()
        level = self.cfg["atoms"]["capture_level"]
        pos, mass = atoms_from_density(pts, w, p, level=level)
        total = float(w @ p)
        above = p > level * total / (4 * math.pi)
        inside = float(w[above] @ p[above])
        return pos, mass, max(0.0, 1.0 - inside / total)

    def where(self, pos) -> str:
        lat = np.degrees(np.arcsin(np.clip(pos[:8, 2], -1, 1)))
        lon = np.degrees(np.arctan2(pos[:8, 1], pos[:8, 0]))
        return "at (lat, lon) = " + ", ".join(f"({a:.1f}, {b:.1f})"
                                              for a, b in zip(lat, lon, strict=True)) + " deg "

    def diagnostics(self, state, stats) -> dict[str, Any]:
        d = super().diagnostics(state, stats)
        d["resolved"] = int(d["resolved"]) if self.phase == "grid" else 1
        return d


def sphere_cluster_count(lat: np.ndarray, lon: np.ndarray, p: np.ndarray, *,
                         level: float = 2.0, min_mass: float = 0.01, cap: float = 0.35,
                         clustered_fraction: float = 0.5) -> int:
    """S^2 grid data: local maxima above level * mean(p), each with the mass of the cap of
    angular radius ``cap`` (radians) around it; maxima closer than ``cap`` to a higher one
    are merged into it. Counted once the caps hold ``clustered_fraction`` of the mass."""
    from scipy.ndimage import maximum_filter

    colat = np.radians(90.0 - lat)
    phi = np.radians(lon)
    dA = np.sin(colat)[:, None] * np.ones_like(phi)[None, :]
    dA *= 4 * np.pi / dA.sum()
    total = float(np.sum(p * dA))
    mean = total / (4 * np.pi)
    peak = (p == maximum_filter(p, size=3, mode=("nearest", "wrap"))) & (p > level * mean)
    idx = np.argwhere(peak)
    idx = idx[np.argsort(-p[peak])]
    x = np.stack([np.sin(colat)[:, None] * np.cos(phi)[None, :],
                  np.sin(colat)[:, None] * np.sin(phi)[None, :],
                  np.cos(colat)[:, None] * np.ones_like(phi)[None, :]], axis=-1)
    centres: list[np.ndarray] = []
    masses: list[float] = []
    cos_cap = math.cos(cap)
    for i, j in idx:
        c = x[i, j]
        if any(float(c @ o) > cos_cap for o in centres):
            continue
        centres.append(c)
        masses.append(float(np.sum((p * dA)[(x @ c) > cos_cap])))
    kept = [m for m in masses if m >= min_mass * total]
    return len(kept) if sum(kept) >= clustered_fraction * total else 0


class SphereDomain(HandoffDomain):
    name = "sphere"
    summary = "the sphere S^2: shtns pseudo-spectral scheme (scheme spectral, lmax)"
    schemes = ("spectral",)
    defaults = {"model": {"dim": 3}, "discretization": {"scheme": "spectral"},  # noqa: RUF012
                "initial": {"kind": "tokens", "cutoff": 16, "tokens": 1e6}}
    keys = {  # noqa: RUF012 - read-only class data
        "discretization": {
            "lmax": Key(63, int, "spherical-harmonic truncation (sphere)", check=ge(4),
                        allowed="an integer >= 4"),
            "filter": Key(False, bool, "sphere: exponential spectral filter after every step"),
        },
        "stop": {
            "unresolved": Key(True, bool, "sphere: stop (complete, with a message) once the "
                              "spectrum tail says the solution is no longer resolved"),
        },
    }
    spectrum_label = r"$\|P_l\mu\|_{L^2} = \sqrt{\sum_m |p_{lm}|^2}$"

    def check(self, cfg: dict) -> None:
        super().check(cfg)
        m, d, i = cfg["model"], cfg["discretization"], cfg["initial"]
        if m["dim"] != 3:
            raise InputError("model.dim", "must be 3 for model.domain = 'sphere'", m["dim"])
        if m["drift"] != "convolution":
            raise InputError("model.drift", "must be 'convolution' for model.domain = "
                             "'sphere'", m["drift"])
        if d["cfl"] > 0.55:
            raise InputError("discretization.cfl", "must be <= 0.55 on the sphere", d["cfl"])
        if i["kind"] not in INITIAL_KINDS:
            raise InputError("initial.kind", f"must be one of {', '.join(INITIAL_KINDS)}",
                             i["kind"])
        if i["kind"] == "mode" and i["mode"] > d["lmax"]:
            raise InputError("initial.mode", "must be <= discretization.lmax", i["mode"])
        if i["kind"] == "bumps" and len(i["centres"]) % 2:
            raise InputError("initial.centres", "must list (lat, lon) pairs in degrees on the "
                             "sphere")
        if cfg["time"]["schedule"] == "steps":
            raise InputError("time.schedule", "must be linear or log on the sphere")

    def problem(self, cfg: dict) -> SphereProblem:
        return SphereProblem(cfg)

    def resolution(self, cfg: dict) -> str:
        return f"spectral, lmax = {cfg['discretization']['lmax']}"

    def cluster_count(self, snapshot: np.ndarray, coords: dict, params: dict) -> int:
        return sphere_cluster_count(coords["lat"], coords["lon"], snapshot,
                                    level=params["cluster_level"],
                                    min_mass=params["cluster_min_mass"],
                                    clustered_fraction=params["clustered_fraction"])

    def figures(self, run, analysis: dict, out: Path, stem: str, title: str) -> list[str]:
        from meanfield.figures import sphere_maps

        return sphere_maps(run, out, stem, title)


DOMAIN = SphereDomain()
__all__ = ["DOMAIN", "SphereProblem", "sphere_cluster_count"]
