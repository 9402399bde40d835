"""The zonal hand-off: clusters of a zonal density become ring atoms.

A zonal measure on S^{d-1} (axisymmetric about the pole e) concentrates on rings: the
(d-2)-spheres {x : <x, e> = cos theta_j}, or the poles theta = 0, pi themselves. Under USA/SA
a ring stays a ring (symmetry) and its polar angle moves with the zonal velocity at theta_j,

    theta_j' = sum_i m_i g(theta_j, theta_i)                         (USA, scaled time unit)
    theta_j' = sum_i m_i g(theta_j, theta_i) / sum_i m_i a(theta_j, theta_i)   (SA)

with (a, g) the ring-averaged kernel and its polar derivative of
``meanfield.theory.kernels.ring_average`` (raw USA multiplies by e^beta). A ring feels its
own pull towards the nearer pole (its centre of mass lies on the axis), so a lone ring
collapses onto a pole. This is exact for the zonal equation: the finite-volume solver of
``solvers.zonal`` pins clusters narrower than a few cells (the circle's problem, issue 12),
the ring system does not.

``zonal_clusters`` finds the clusters of a zonal density (connected regions of p > level x
mean, split at interior minima) with their masses, centres and widths; ``rings_from_density``
turns all the mass into rings (each cell's mass joins the nearest cluster: the total is kept
exactly), a cluster holding a pole becoming a point atom at that pole; ``RingAtoms`` advances
them (Dormand-Prince 5(4)) with merges (rings closer than ``merge_window`` radians) and pole
captures (a ring within ``merge_window`` of a pole becomes a point atom there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from meanfield.theory.energy import energy_from_scaled
from meanfield.theory.geometry import zonal_harmonics
from meanfield.theory.kernels import ring_average
from solvers.sphere_atoms import AtomEvent, WeightedAtoms
from solvers.stepping import StepStats, advance_ode


@dataclass
class ZonalCluster:
    """A cluster of a zonal density: cells [lo, hi), mass, centre and width (radians)."""

    lo: int
    hi: int
    mass: float
    centre: float
    width: float


def zonal_clusters(theta: np.ndarray, weights: np.ndarray, p: np.ndarray, *,
                   level: float = 2.0) -> list[ZonalCluster]:
    """Clusters of cell averages ``p`` at cell centres ``theta`` with cell weights W_j.

    A cluster is a maximal run of cells with p > level x mean(p), split at interior local
    minima. Its centre is the weighted mean angle, its width the weighted standard deviation
    of the angle; a cluster holding a pole cell is a polar cap: centre at the pole, width the
    root mean square angle to the pole.
    """
    th, w, p = (np.asarray(a, float) for a in (theta, weights, p))
    m = w * p
    mean = float(m.sum() / w.sum())
    above = p > level * mean
    # split at interior minima: a cell lower than both neighbours starts a new cluster
    interior_min = np.zeros_like(above)
    interior_min[1:-1] = (p[1:-1] < p[:-2]) & (p[1:-1] <= p[2:])
    cont = np.zeros_like(above)
    cont[1:] = above[1:] & above[:-1] & ~interior_min[1:]
    starts = np.flatnonzero(above & ~cont)
    if starts.size == 0:
        return []
    label = np.cumsum(above & ~cont) - 1
    label = np.where(above, label, -1)
    sel = label >= 0
    n_cl = starts.size
    mass = np.bincount(label[sel], weights=m[sel], minlength=n_cl)
    ends = np.bincount(label[sel], minlength=n_cl) + starts
    mean = np.bincount(label[sel], weights=(m * th)[sel], minlength=n_cl) / mass
    second = np.bincount(label[sel], weights=(m * th * th)[sel], minlength=n_cl) / mass
    centre = mean.copy()
    centre[starts == 0] = 0.0          # a cluster holding a pole cell is a polar cap
    centre[ends == p.size] = math.pi
    # spread about the centre: E (theta - c)^2 = second - 2 c mean + c^2
    width = np.sqrt(np.maximum(second - 2.0 * centre * mean + centre * centre, 0.0))
    return [ZonalCluster(int(lo), int(hi), float(ms), float(c), float(wd))
            for lo, hi, ms, c, wd in zip(starts, ends, mass, centre, width, strict=True)]


def rings_from_density(theta: np.ndarray, weights: np.ndarray, p: np.ndarray, *,
                       level: float = 2.0) -> tuple[np.ndarray, np.ndarray, float]:
    """(angles (A,), masses (A,), residual) of the rings a zonal density hands over.

    Every cell's mass w_j p_j joins the cluster whose centre is nearest (so the masses sum to
    the total exactly); ``residual`` is the fraction of the mass outside the clusters'
    cells, i.e. the part that was spread out and is now approximated by the rings.
    """
    w, p = np.asarray(weights, float), np.asarray(p, float)
    cl = zonal_clusters(theta, w, p, level=level)
    if not cl:
        return np.zeros(0), np.zeros(0), 1.0
    centres = np.array([c.centre for c in cl])
    m = w * p
    near = np.argmin(np.abs(np.asarray(theta, float)[:, None] - centres[None, :]), axis=1)
    masses = np.bincount(near, weights=m, minlength=centres.size)
    inside = sum(float(m[c.lo:c.hi].sum()) for c in cl)
    return centres, masses, max(0.0, 1.0 - inside / float(m.sum()))


class RingSystem:
    """theta' = v(theta) for weighted rings (module docstring); the ODE system of
    ``solvers.stepping.advance_ode``."""

    projects = True
    max_steps = None
    nonfinite_hint = ""

    def __init__(self, masses: np.ndarray, dim: int, beta: float, model: str,
                 time_unit: str, rtol: float, atol: float) -> None:
        self.masses = np.asarray(masses, float)
        self.dim, self.beta, self.model = int(dim), float(beta), model
        self.sa = model == "sa" and self.beta > 0
        self.rate = math.exp(self.beta) if (model == "usa" and time_unit == "raw") else 1.0
        self.rtol, self.atol = rtol, atol

    def velocity(self, th: np.ndarray) -> np.ndarray:
        a, g = ring_average(self.beta, th[:, None], th[None, :], self.dim)
        num = g @ self.masses
        if self.sa:
            return num / (a @ self.masses)
        return self.rate * num

    def project(self, th: np.ndarray) -> np.ndarray:
        return np.clip(th, 0.0, math.pi)


class RingAtoms(WeightedAtoms):
    """Weighted rings of a zonal measure on S^{d-1} with merges and pole captures.

    Positions are polar angles theta_j in [0, pi]; two rings closer than ``merge_window``
    merge at their mass-weighted mean angle, a ring closer than ``merge_window`` to a pole
    becomes a point atom there (an event "merge" with parts (m, 0)).
    """

    moves_alone = True

    def system(self):
        if self._system is None or self._system.masses.size != self.masses.size:
            self._system = RingSystem(self.masses, self.dim, self.beta, self.model,
                                      self.time_unit, self.rtol, self.atol)
        return self._system

    def advance(self, x, t, t_target, stats: StepStats, deadline=None, max_steps=None):
        if self.masses.size == 1 and float(x[0]) in (0.0, math.pi):
            stats.steps += 1
            return x, t_target  # one point atom at a pole: the measure is stationary
        return super().advance(x, t, t_target, stats, deadline, max_steps)

    def _step(self, x, t, t_target, stats, deadline, max_steps):
        return advance_ode(self.system(), x, t, t_target, stats, integrator="adaptive",
                           dt=0.0, deadline=deadline, max_steps=max_steps)

    def _closest(self, x: np.ndarray) -> tuple[int, int, float]:
        order = np.argsort(x)
        gaps = np.diff(x[order])
        k = int(np.argmin(gaps))
        return int(order[k]), int(order[k + 1]), float(gaps[k])

    def _distance(self, a, b) -> float:
        return abs(float(a) - float(b))

    def _centre(self, a, b, ma: float, mb: float) -> float:
        return (ma * float(a) + mb * float(b)) / (ma + mb)

    def _merge(self, x, t, before, t_before, stats) -> np.ndarray:
        x = np.asarray(x, float).copy()
        for j in range(x.size):
            for pole in (0.0, math.pi):
                if x[j] != pole and abs(x[j] - pole) < self.merge_window:
                    x[j] = pole
                    self.events.append(AtomEvent(t, "merge", np.array(pole),
                                                 float(self.masses[j]),
                                                 (float(self.masses[j]), 0.0)))
                    stats.f, stats.dt = None, None
        return super()._merge(x, t, before, t_before, stats)

    def diagnostics(self, x: np.ndarray, modes: int | None = None) -> dict:
        """mass, energy, ebar, max_speed and the spectrum |a_k| = |sum_j m_j Z_k(cos theta_j)|
        (a ring's projection on the zonal harmonic Z_k), dominant_mode."""
        m = self.masses
        if m.size == 0:
            return {}
        sys = self.system()
        a, _ = ring_average(self.beta, x[:, None], x[None, :], self.dim)
        if self.beta > 0:
            e_scaled = 0.5 * float(m @ a @ m) / self.beta
        else:  # W(t) = t: the ring average of <x, y> is cos(theta) cos(theta')
            c = np.cos(x)
            e_scaled = 0.5 * float(m @ c) ** 2
        energy, ebar = energy_from_scaled(e_scaled, self.beta, self.model, self.time_unit)
        k = 16 if modes is None else int(modes)
        spec = np.abs(zonal_harmonics(np.cos(x), k, self.dim) @ m)
        return {"mass": float(m.sum()), "energy": float(energy), "ebar": float(ebar),
                "max_speed": float(np.max(np.abs(sys.velocity(x)))),
                "spectrum": spec,
                "dominant_mode": int(np.argmax(spec[1:]) + 1) if k >= 1 else 0}


__all__ = ["RingAtoms", "RingSystem", "ZonalCluster", "rings_from_density", "zonal_clusters"]
