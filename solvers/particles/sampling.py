"""Uniform and density sampling of tokens, and the input checks shared by the particle code.

Token states: angles theta of shape (batch, N) on the circle (d = 2), or unit vectors of
shape (batch, N, d) on S^{d-1}. Masses m_j > 0 are rescaled to mean 1 per system, so the
empirical measure is mu = N^{-1} sum_j m_j delta_{x_j}.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from meanfield.theory.checks import check_dim, check_positive
from meanfield.theory.errors import InputError

TWO_PI = 2.0 * math.pi
REPRESENTATIONS = ("auto", "angles", "vectors")


def uniform_sample(count: int, dim: int = 2, batch: int = 1,
                   seed: int | np.random.Generator | None = None, *,
                   representation: str = "auto") -> np.ndarray:
    """``batch`` x ``count`` i.i.d. uniform tokens on S^{d-1}.

    Angles in [0, 2 pi) of shape (batch, N) for d = 2 (``representation`` "auto" or "angles"),
    otherwise unit vectors (batch, N, d) from normalised standard Gaussians.
    """
    n = check_positive(count, "count", integer=True, minimum=1, inclusive=True)
    d = check_dim(dim)
    b = check_positive(batch, "batch", integer=True, minimum=1, inclusive=True)
    rep = check_choice(representation, REPRESENTATIONS, "representation")
    if rep == "angles" and d != 2:
        raise InputError("representation", "'angles' needs dim = 2", representation)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if d == 2 and rep != "vectors":
        return rng.uniform(0.0, TWO_PI, size=(b, n))
    x = rng.standard_normal((b, n, d))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


def sample_circle_density(density: ArrayLike, count: int, batch: int = 1,
                          seed: int | np.random.Generator | None = None) -> np.ndarray:
    """i.i.d. angles (batch, N) from a density given as averages over M uniform cells.

    Cell j is [j dx, (j+1) dx), dx = 2 pi/M (the grid of ``solvers.circle``); the density is
    taken piecewise constant and sampled exactly by inverting its piecewise-linear CDF.
    """
    p = check_density(density)
    n = check_positive(count, "count", integer=True, minimum=1, inclusive=True)
    b = check_positive(batch, "batch", integer=True, minimum=1, inclusive=True)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return _inverse_cdf(p, rng.uniform(0.0, 1.0, size=(b, n)))


def _inverse_cdf(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """F^{-1}(u) for the piecewise-constant density p on M uniform cells of [0, 2 pi)."""
    m = p.size
    dx = TWO_PI / m
    cdf = np.concatenate(([0.0], np.cumsum(p) * dx))
    cdf /= cdf[-1]
    j = np.clip(np.searchsorted(cdf, u, side="right") - 1, 0, m - 1)
    while np.any(p[j] <= 0):  # u landed on an empty cell's edge: move to the next cell
        j = np.where(p[j] <= 0, np.minimum(j + 1, m - 1), j)
    frac = (u - cdf[j]) / (cdf[j + 1] - cdf[j])
    return (j + np.clip(frac, 0.0, 1.0)) * dx


def vmf_mixture(directions: ArrayLike, kappas: ArrayLike, weights: ArrayLike | None,
                count: int, batch: int = 1, seed: int | np.random.Generator | None = None
                ) -> np.ndarray:
    """N i.i.d. tokens from a mixture of von Mises-Fisher laws on S^{d-1}, (batch, N, d).

    Component i has density proportional to e^{kappa_i <mu_i, x>} with mu_i = directions[i];
    a direction that is not a unit vector is used as given, i.e. with concentration
    kappa_i |mu_i| about mu_i/|mu_i| (seed 004 App. C.1 prints non-unit mu_i, notes-004
    §3.2). Component counts are multinomial with the ``weights`` (default equal).
    """
    from scipy.stats import vonmises_fisher

    mu = np.atleast_2d(np.asarray(directions, float))
    k = np.broadcast_to(np.asarray(kappas, float), (mu.shape[0],))
    norms = np.linalg.norm(mu, axis=1)
    if mu.ndim != 2 or mu.shape[1] < 2 or not np.all(np.isfinite(mu)) or np.any(norms == 0):
        raise InputError("initial.directions", "must be non-zero vectors in R^d (rows)",
                         f"shape {mu.shape}")
    if not np.all(np.isfinite(k)) or np.any(k < 0):
        raise InputError("initial.kappas", "must be numbers >= 0, one per direction",
                         list(k))
    w = np.full(mu.shape[0], 1.0 / mu.shape[0]) if weights is None or len(weights) == 0 \
        else np.asarray(weights, float)
    if w.shape != (mu.shape[0],) or np.any(w < 0) or not w.sum() > 0:
        raise InputError("initial.masses", "must be >= 0, one per direction", list(w))
    n = check_positive(count, "count", integer=True, minimum=1, inclusive=True)
    b = check_positive(batch, "batch", integer=True, minimum=1, inclusive=True)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    out = np.empty((b, n, mu.shape[1]))
    for s in range(b):
        counts = rng.multinomial(n, w / w.sum())
        parts = [vonmises_fisher(mu[i] / norms[i], k[i] * norms[i]).rvs(c, random_state=rng)
                 .reshape(c, -1) for i, c in enumerate(counts) if c]
        x = np.concatenate(parts)[rng.permutation(n)]
        out[s] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def quantile_circle_density(density: ArrayLike, count: int, offset: float = 0.5
                            ) -> np.ndarray:
    """N angles at the quantiles of a density of cell averages (deterministic placement).

    theta_i = F^{-1}((i + offset)/N), i = 0..N-1, with F the piecewise-linear CDF of the
    piecewise-constant density (cells as in ``sample_circle_density``). The empirical measure
    is within W_1 <= 2 pi / N (and in every Fourier mode within O(k/N)) of the density, with
    no sampling noise: the particle counterpart of a grid run from the same density.
    """
    p = check_density(density)
    n = check_positive(count, "count", integer=True, minimum=1, inclusive=True)
    if not 0.0 <= float(offset) < 1.0:
        raise InputError("offset", "must be in [0, 1)", offset)
    return _inverse_cdf(p, (np.arange(n) + float(offset)) / n)


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------
def check_choice(value, allowed: Sequence[str], name: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InputError(name, f"must be one of {', '.join(allowed)}", value)
    return value


def check_density(density) -> np.ndarray:
    p = np.asarray(density, dtype=float)
    if p.ndim != 1 or p.size < 2 or not np.all(np.isfinite(p)) or p.min() < 0 or p.sum() <= 0:
        raise InputError("density", "must be a 1-d array of >= 2 finite cell averages >= 0 "
                         "with positive mass")
    return p


def batch_angles(angles, name: str = "angles") -> np.ndarray:
    th = np.asarray(angles, dtype=float)
    if th.ndim == 1:
        th = th[None]
    if th.ndim != 2 or th.shape[1] == 0 or not np.all(np.isfinite(th)):
        raise InputError(name, "must be finite angles of shape (N,) or (batch, N)",
                         f"shape {np.shape(angles)}")
    return th


def batch_vectors(x, name: str = "x") -> np.ndarray:
    v = np.asarray(x, dtype=float)
    if v.ndim == 2:
        v = v[None]
    if v.ndim != 3 or v.shape[1] == 0 or v.shape[2] < 2 or not np.all(np.isfinite(v)):
        raise InputError(name, "must be finite unit vectors of shape (N, d) or (batch, N, d)",
                         f"shape {np.shape(x)}")
    return v


def normalised_masses(masses, batch: int, count: int, name: str = "masses") -> np.ndarray:
    """Masses rescaled to mean 1 per system, shape (1 or batch, N)."""
    if masses is None:
        return np.ones((1, count))
    m = np.asarray(masses, dtype=float)
    if m.ndim == 1:
        m = m[None]
    if (m.ndim != 2 or m.shape[1] != count or m.shape[0] not in (1, batch)
            or not np.all(np.isfinite(m)) or np.any(m <= 0)):
        raise InputError(name, f"must be finite numbers > 0 of shape (N,) or (batch, N) with "
                         f"N = {count}", f"shape {m.shape}")
    return m / m.mean(axis=-1, keepdims=True)
