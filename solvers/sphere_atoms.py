"""The hand-off on S^{d-1}: once a grid solution no longer resolves its clusters, they
become weighted atoms that continue as an exact weighted particle system with merges.

A spectral solution rings (Gibbs) once clusters are narrower than pi/lmax, and grid
schemes pin them; but by then almost all the mass sits in clusters. ``atoms_from_density``
turns a grid density into atoms: one per local maximum above ``level`` x mean (maxima closer
than ``cap`` radians to a higher one belong to it), each grid point's mass w p going to the
nearest atom (so the total mass is kept exactly, Gibbs undershoots included), placed at the
normalised first moment of the positive mass within ``cap`` of its maximum.

``WeightedAtoms`` then advances sum_j m_j delta_{x_j} with the exact mean-field velocity
(``solvers.particles.ParticleSystem`` with masses, Dormand-Prince 5(4)); atoms closer than
``merge_window`` (radians) merge into one at their normalised centre of mass, with the sum of
the masses (seed 000, Def. 6.3), and the merge is dated inside its step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from meanfield.theory.checks import check_positive
from solvers.stepping import StepStats


def atoms_from_density(points: np.ndarray, weights: np.ndarray, p: np.ndarray, *,
                       level: float = 2.0, cap: float = 0.35,
                       neighbours=None) -> tuple[np.ndarray, np.ndarray]:
    """(positions (A, d), masses (A,)) of the clusters of the grid density ``p``.

    ``points`` (n, d) are the grid's unit vectors, ``weights`` (n,) its quadrature weights,
    ``p`` (n,) the density; ``neighbours(p)`` may return a boolean mask of local maxima
    (default: the points above the level, taken in decreasing order of p).
    """
    x, w, p = (np.asarray(a, float) for a in (points, weights, p))
    total = float(w @ p)
    mean = total / float(w.sum())
    cand = neighbours(p) if neighbours is not None else np.ones(p.size, bool)
    cand &= p > level * mean
    cos_cap = math.cos(cap)
    centres: list[np.ndarray] = []
    for i in np.flatnonzero(cand)[np.argsort(-p[cand])]:
        if all(float(x[i] @ c) <= cos_cap for c in centres):
            centres.append(x[i])
    if not centres:
        return np.zeros((0, x.shape[1])), np.zeros(0)
    c = np.array(centres)
    near = np.argmax(x @ c.T, axis=1)
    masses = np.bincount(near, weights=w * p, minlength=len(centres))
    pos = c.copy()
    for _ in range(3):  # re-centre the cap on the centroid: a grid point is not the centre
        for a in range(len(centres)):
            sel = (near == a) & (x @ pos[a] > cos_cap) & (p > 0)
            v = (w[sel] * p[sel]) @ x[sel]
            pos[a] = v / np.linalg.norm(v)
    return pos, masses


@dataclass
class AtomEvent:
    t: float
    kind: str
    position: np.ndarray
    mass: float
    parts: tuple[float, ...]


@dataclass
class WeightedAtoms:
    """Weighted atoms on S^{d-1} under USA/SA with merges (see the module docstring)."""

    dim: int
    beta: float
    model: str = "usa"
    time_unit: str = "raw"
    merge_window: float = 1e-3
    rtol: float = 1e-10
    atol: float = 1e-12
    masses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    events: list[AtomEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_positive(self.merge_window, "merge_window", inclusive=True)
        self._system = None

    def system(self):
        """The ParticleSystem of the current atoms (rebuilt after a merge)."""
        if self._system is None or self._system.count != self.masses.size:
            from solvers.particles import ParticleSystem

            self._system = ParticleSystem(
                self.masses.size, self.dim, self.beta, self.model, time_unit=self.time_unit,
                masses=self.masses, integrator="adaptive", rtol=self.rtol, atol=self.atol,
                representation="vectors")
        return self._system

    @property
    def step_size(self) -> None:
        return None

    def advance(self, x: np.ndarray, t: float, t_target: float, stats: StepStats,
                deadline=None, max_steps: int | None = None) -> tuple[np.ndarray, float]:
        """One accepted adaptive step at a time, merging atoms between steps."""
        while t < t_target and (max_steps is None or stats.steps < max_steps):
            if self.masses.size < 2 and not self.moves_alone:
                stats.steps += 1
                return x, t_target  # a single atom does not move
            n0 = stats.steps
            before, t_before = x, t
            x, t = self._step(x, t, t_target, stats, deadline, n0 + 1)
            if stats.steps == n0:
                break
            x = self._merge(x, t, before, t_before, stats)
        return x, t

    # ---------------------------------------------------------------- geometry hooks
    #: whether a single atom can move (a ring of S^{d-1} does; a point does not)
    moves_alone = False

    def _step(self, x, t, t_target, stats, deadline, max_steps):
        x, t = self.system().advance(x[None], t, t_target, stats, deadline, max_steps)
        return x[0], t

    def _closest(self, x: np.ndarray) -> tuple[int, int, float]:
        """The closest pair (i, j) and their distance (the angle, radians)."""
        g = np.clip(x @ x.T, -1.0, 1.0)
        np.fill_diagonal(g, -2.0)
        i, j = np.unravel_index(np.argmax(g), g.shape)
        return int(i), int(j), math.acos(float(g[i, j]))

    def _distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return math.acos(float(np.clip(a @ b, -1.0, 1.0)))

    def _centre(self, a: np.ndarray, b: np.ndarray, ma: float, mb: float) -> np.ndarray:
        """Seed 000 Def. 6.3: the normalised centre of mass."""
        v = ma * a + mb * b
        return v / np.linalg.norm(v)

    def _merge(self, x, t, before, t_before, stats) -> np.ndarray:
        while self.masses.size > 1:
            i, j, angle = self._closest(x)
            if angle >= self.merge_window:
                break
            g0 = self._distance(before[i], before[j]) \
                if before is not None and before.shape == x.shape else angle
            t_merge = t
            if g0 > self.merge_window > angle > 0:
                # the gap closes exponentially: date the merge by log interpolation
                frac = math.log(g0 / self.merge_window) / math.log(g0 / angle)
                t_merge = t_before + frac * (t - t_before)
            m = self.masses
            c = self._centre(x[i], x[j], m[i], m[j])
            self.events.append(AtomEvent(t_merge, "merge", np.asarray(c), float(m[i] + m[j]),
                                         (float(m[i]), float(m[j]))))
            keep = np.ones(m.size, bool)
            keep[[i, j]] = False
            x = np.concatenate([x[keep], np.asarray(c)[None]])
            self.masses = np.append(m[keep], m[i] + m[j])
            before = None
            stats.f, stats.dt = None, None  # a new system: restart the adaptive steps
        return x

    def diagnostics(self, x: np.ndarray, modes: int | None = None) -> dict:
        if self.masses.size == 0:
            return {}
        d = self.system().diagnostics(x[None], modes)
        return {k: np.asarray(v)[0] for k, v in d.items()}
