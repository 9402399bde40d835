"""Clusters of a density on the circle's M uniform cells (merged into solvers.clusters)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class DensityCluster:
    centre: float     # angle in [0, 2 pi)
    mass: float       # mass of the basin: the arc between the density minima on either side
    width: float      # angular extent of the core (the region above the level)
    core_mass: float  # mass inside the core


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
    above = p > level * p.mean()
    if not above.any():
        return []
    theta = (np.arange(m) + 0.5) * dx
    if above.all():
        total = float(p.sum() * dx)
        return [DensityCluster(float(np.angle(np.sum(p * np.exp(1j * theta))) % TWO_PI),
                               total, TWO_PI, total)]
    # rotate so that index 0 is below the level: runs never wrap
    shift = int(np.argmin(above))
    a = np.roll(above, -shift)
    edges = np.diff(np.concatenate([[0], a.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    pr = np.roll(p, -shift)
    cores = [(s, e) for s, e in zip(starts, ends, strict=True)
             if pr[s:e].sum() * dx >= min_mass]
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
    clusters = density_clusters(p, level=level, min_mass=min_mass)
    total = float(np.sum(p)) * TWO_PI / p.size
    if sum(c.core_mass for c in clusters) < clustered_fraction * total:
        return 0
    return len(clusters)


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
