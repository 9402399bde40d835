"""Clusters of a measure, the one place for both representations.

* Tokens on S^{d-1} (angles or unit vectors): :func:`detect_clusters`, connected components
  of the "close" relation (seeds 001/002); tokens may carry masses m_j > 0 (rescaled to mean
  1, so cluster masses are fractions of the total).
* A density on the circle's M cells: :func:`density_clusters`, connected regions above a
  level of the density with the masses of their basins, and :func:`density_cluster_count`.

Used by ``ParticleSystem.clusters`` and by the workflow's analysis and domain modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from meanfield.theory.checks import check_positive
from meanfield.theory.errors import InputError

TWO_PI = 2.0 * math.pi


@dataclass
class Clusters:
    """Clusters of one system, sorted by decreasing mass.

    ``count`` counts clusters of mass >= ``min_mass`` (``masses``/``centres`` list all of
    them, ``labels`` gives each token's cluster index); masses are fractions of the total;
    centres are angles in [0, 2 pi) (circular mean) or unit vectors (normalised mean).
    """

    count: int
    masses: np.ndarray
    centres: np.ndarray
    labels: np.ndarray


def detect_clusters(x: ArrayLike, *, method: str = "inner", eps: float = 1e-3,
                    gap: float | None = None, masses: ArrayLike | None = None,
                    min_mass: float = 0.0, representation: str = "vectors",
                    block: int = 1024) -> list[Clusters]:
    """Clusters as connected components, one :class:`Clusters` per system.

    * ``method="inner"`` (seeds 001/002): tokens i, j are linked when <x_i, x_j> > 1 - eps;
      clusters are the connected components (breadth-first search against the unassigned
      tokens in blocks of ``block`` rows: memory O(block N), work O(N^2)). On angles this is
      exactly the gap rule with the link cos(gap) > 1 - eps.
    * ``method="gap"`` (angles only): sort the angles and split the circle at every gap
      larger than ``gap`` (default arccos(1 - eps)); O(N log N).

    ``x``: angles (N,) or (batch, N) with ``representation="angles"``, else unit vectors
    (N, d) or (batch, N, d).
    """
    # imported here: solvers.particles imports this module (ParticleSystem.clusters)
    from solvers.particles.sampling import (
        batch_angles,
        batch_vectors,
        check_choice,
        normalised_masses,
    )

    meth = check_choice(method, ("inner", "gap"), "method")
    rep = check_choice(representation, ("angles", "vectors"), "representation")
    e = check_positive(eps, "eps")
    if e > 2:
        raise InputError("eps", "must be in (0, 2]", eps)
    mm = check_positive(min_mass, "min_mass", inclusive=True)
    if meth == "gap" and rep != "angles":
        raise InputError("method", "'gap' needs angles (representation='angles')", method)
    bs = check_positive(block, "block", integer=True, minimum=1, inclusive=True)
    if rep == "angles":
        th = batch_angles(x)
        w = np.broadcast_to(normalised_masses(masses, *th.shape), th.shape)
        if meth == "gap":
            g = math.acos(1.0 - e) if gap is None else check_positive(gap, "gap")
            def split(d: np.ndarray) -> np.ndarray:
                return d > g
        else:
            def split(d: np.ndarray) -> np.ndarray:
                return ~(np.cos(d) > 1.0 - e)
        return [_circle_components(th[b], w[b], split, mm) for b in range(th.shape[0])]
    v = batch_vectors(x)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    w = np.broadcast_to(normalised_masses(masses, v.shape[0], v.shape[1]), v.shape[:2])
    return [_vector_components(v[b], w[b], 1.0 - e, mm, bs) for b in range(v.shape[0])]


def _finish_clusters(labels: np.ndarray, w: np.ndarray, centres_of, min_mass: float) -> Clusters:
    ncl = int(labels.max()) + 1
    mass = np.bincount(labels, weights=w, minlength=ncl) / w.sum()
    order = np.argsort(-mass, kind="stable")
    rank = np.empty(ncl, int)
    rank[order] = np.arange(ncl)
    labels = rank[labels]
    centres = centres_of(labels, ncl)
    return Clusters(int(np.sum(mass >= min_mass)), mass[order], centres, labels)


def _circle_components(th: np.ndarray, w: np.ndarray, split, min_mass: float) -> Clusters:
    a = np.mod(th, TWO_PI)
    order = np.argsort(a)
    s = a[order]
    gaps = np.diff(np.concatenate((s, [s[0] + TWO_PI])))  # gap after each sorted token
    cut = split(gaps)
    labels_sorted = np.zeros(s.size, int)
    if cut.any():
        # start a new cluster after every cut; the wrap-around run joins the last one
        start = int(np.argmax(cut)) + 1
        rolled = np.roll(cut, -start)
        labels_sorted = np.roll(np.concatenate(([0], np.cumsum(rolled[:-1]))), start)
    labels = np.empty_like(labels_sorted)
    labels[order] = labels_sorted

    def centres_of(lab, ncl):
        zs = np.bincount(lab, weights=w * np.cos(th), minlength=ncl) \
            + 1j * np.bincount(lab, weights=w * np.sin(th), minlength=ncl)
        return np.mod(np.angle(zs), TWO_PI)

    return _finish_clusters(labels, w, centres_of, min_mass)


def _vector_components(x: np.ndarray, w: np.ndarray, thresh: float, min_mass: float,
                       block: int) -> Clusters:
    n = x.shape[0]
    labels = np.full(n, -1)
    remaining = np.arange(n)
    lab = 0
    while remaining.size:
        labels[remaining[0]] = lab
        frontier, remaining = remaining[:1], remaining[1:]
        while frontier.size and remaining.size:
            hit = np.zeros(remaining.size, bool)
            for f0 in range(0, frontier.size, block):
                g = x[frontier[f0:f0 + block]] @ x[remaining].T
                hit |= np.any(g > thresh, axis=0)
            frontier, remaining = remaining[hit], remaining[~hit]
            labels[frontier] = lab
        lab += 1

    def centres_of(lab_, ncl):
        c = np.zeros((ncl, x.shape[1]))
        np.add.at(c, lab_, w[:, None] * x)
        return c / np.linalg.norm(c, axis=-1, keepdims=True)

    return _finish_clusters(labels, w, centres_of, min_mass)


__all__ = ["Clusters", "detect_clusters"]


@dataclass(frozen=True)
class DensityCluster:
    centre: float     # angle in [0, 2 pi)
    mass: float       # mass of the basin: the arc between the density minima on either side
    width: float      # angular extent of the core (the region above the level)
    core_mass: float  # mass inside the core


def _cores(p: np.ndarray, level: float, min_mass: float):
    """The cluster cores of ``density_clusters``: None (no cell above the level), "all"
    (every cell above), or (shift, p rolled by -shift, [(start, end) of each core in the
    rolled cells]) with index 0 of the rolled cells below the level (runs never wrap)."""
    dx = TWO_PI / p.size
    above = p > level * p.mean()
    if not above.any():
        return None
    if above.all():
        return "all"
    shift = int(np.argmin(above))
    a = np.roll(above, -shift)
    edges = np.diff(np.concatenate([[0], a.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    pr = np.roll(p, -shift)
    cores = [(s, e) for s, e in zip(starts, ends, strict=True)
             if pr[s:e].sum() * dx >= min_mass]
    return shift, pr, cores


def density_clusters(p: np.ndarray, *, level: float = 2.0,
                     min_mass: float = 0.01) -> list[DensityCluster]:
    """Clusters of a density on M uniform cells of [0, 2 pi).

    A cluster core is a maximal connected (periodic) run of cells where p > ``level`` *
    mean(p) whose mass (integral of p over the run) is >= ``min_mass``. Thresholds are levels
    of the density, not cell counts, so the count does not depend on the resolution. At the
    uniform state with 1 % noise max p / mean(p) ~ 1.25, so noise counts as zero clusters;
    k separated bumps (or Dirac-like clusters) count as k. The circle is then split at the
    density minimum between consecutive cores: a cluster's mass is that of its basin (masses
    sum to the total), its centre the p-weighted circular mean of its core.
    """
    p = np.asarray(p, float)
    m = p.size
    dx = TWO_PI / m
    found = _cores(p, level, min_mass)
    if found is None:
        return []
    theta = (np.arange(m) + 0.5) * dx
    if found == "all":
        total = float(p.sum() * dx)
        return [DensityCluster(float(np.angle(np.sum(p * np.exp(1j * theta))) % TWO_PI),
                               total, TWO_PI, total)]
    shift, pr, cores = found
    if not cores:
        return []
    # basin boundaries: the minimum of p in each gap between consecutive cores (cyclically)
    cuts = []
    for (_s0, e0), (s1, _) in zip(cores, [*cores[1:], (cores[0][0] + m, 0)], strict=True):
        gap = np.arange(e0, s1) % m
        cuts.append(int(gap[np.argmin(pr[gap])]) if gap.size else e0 % m)
    cum = np.concatenate([[0.0], np.cumsum(pr) * dx])

    def arc_mass(i0: int, i1: int) -> float:  # cells i0 .. i1-1, cyclic
        return cum[i1] - cum[i0] if i1 >= i0 else cum[m] - cum[i0] + cum[i1]

    out = []
    for j, (s, e) in enumerate(cores):
        lo, hi = cuts[j - 1], cuts[j]
        idx = (np.arange(s, e) + shift) % m
        centre = float(np.angle(np.sum(p[idx] * np.exp(1j * theta[idx]))) % TWO_PI)
        mass = arc_mass(lo, hi) if len(cores) > 1 else float(cum[m])
        out.append(DensityCluster(centre, float(mass), float((e - s) * dx),
                                  float(pr[s:e].sum() * dx)))
    return sorted(out, key=lambda c: c.centre)


def density_cluster_count(p: np.ndarray, *, level: float = 2.0, min_mass: float = 0.01,
                          clustered_fraction: float = 0.5) -> int:
    """Number of clusters once the pattern has formed: the number of cores if they hold at
    least ``clustered_fraction`` of the mass, else 0 (uniform, or clusters still forming,
    which would otherwise show as a staircase 1, 2, ... as bumps cross the level in turn)."""
    p = np.asarray(p, float)
    dx = TWO_PI / p.size
    found = _cores(p, level, min_mass)     # the cores alone: no basins, no centres
    if found is None:
        return 0
    if found == "all":
        core_masses = [float(p.sum() * dx)]
    else:
        _, pr, cores = found
        core_masses = [float(pr[s:e].sum() * dx) for s, e in cores]
    total = float(np.sum(p)) * TWO_PI / p.size
    if sum(core_masses) < clustered_fraction * total:
        return 0
    return len(core_masses)


def wasserstein1_circle(p: np.ndarray, q: np.ndarray | None = None) -> float:
    """Exact W_1 on the circle between two densities on the same M cells (q: uniform).

    W_1 = min_c integral |F - G - c| d theta = integral |F - G - median(F - G)| d theta, with
    F, G the cumulative distributions (both normalised to mass 1).
    """
    p = np.asarray(p, float)
    dx = TWO_PI / p.size
    q = np.full(p.size, 1.0 / TWO_PI) if q is None else np.asarray(q, float)
    diff = np.cumsum(p / (p.sum() * dx) - q / (q.sum() * dx)) * dx
    return float(np.sum(np.abs(diff - np.median(diff))) * dx)
