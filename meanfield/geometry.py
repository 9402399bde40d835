"""Geometry of S^{d-1}: surface areas, harmonic multiplicities, Gegenbauer index."""

from __future__ import annotations

import numpy as np
from scipy.special import comb, gammaln

from meanfield.checks import check_dim


def log_sphere_area(dim: int) -> float:
    """log |S^{d-1}| with |S^{d-1}| = 2 pi^{d/2} / Gamma(d/2) (d = 2: 2 pi; d = 3: 4 pi)."""
    d = check_dim(dim)
    return float(np.log(2.0) + 0.5 * d * np.log(np.pi) - gammaln(0.5 * d))


def sphere_area(dim: int) -> float:
    """Surface measure |S^{d-1}| = 2 pi^{d/2} / Gamma(d/2) of the unit sphere in R^d."""
    return float(np.exp(log_sphere_area(dim)))


def uniform_density(dim: int) -> float:
    """p_inf = 1/|S^{d-1}|, the uniform density w.r.t. the surface measure."""
    return float(np.exp(-log_sphere_area(dim)))


def gegenbauer_index(dim: int) -> float:
    """nu = (d-2)/2, the Gegenbauer parameter of zonal harmonics on S^{d-1}."""
    return 0.5 * (check_dim(dim) - 2)


def harmonic_multiplicity(k, dim: int):
    """Dimension of the space H_k of degree-k spherical harmonics on S^{d-1}.

    dim H_k = C(k+d-1, d-1) - C(k+d-3, d-1); on the circle 1 for k = 0 and 2 for k >= 1,
    on S^2 it is 2k+1.
    """
    d = check_dim(dim)
    k = np.asarray(k)
    if np.any(k < 0) or np.any(np.asarray(k, dtype=float) % 1 != 0):
        raise ValueError("k: must be integers >= 0")
    k = k.astype(np.int64)
    out = comb(k + d - 1, d - 1, exact=False) - np.where(
        k >= 2, comb(np.maximum(k + d - 3, 0), d - 1, exact=False), 0.0
    )
    out = np.rint(out).astype(np.int64)
    return int(out) if out.ndim == 0 else out
