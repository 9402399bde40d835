"""Geometry of S^{d-1}: surface areas, harmonic multiplicities, Gegenbauer index, zonal
harmonics."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import comb, gammaln

from meanfield.theory.checks import check_dim


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


def log_area_sd2(dim: int) -> float:
    """log |S^{d-2}| (the weight's constant; |S^0| = 2)."""
    d = check_dim(dim)
    return math.log(2.0) if d == 2 else log_sphere_area(d - 1)


def zonal_harmonics(t, degree: int, dim: int) -> np.ndarray:
    """Z_k(t), k = 0..degree: Gegenbauer C_k^a(t), a = (d-2)/2, with integral Z_k^2 dsigma = 1.

    Orthonormal recurrence for the weight (1 - t^2)^{a - 1/2} on [-1, 1]:
        t P_k = b_{k+1} P_{k+1} + b_k P_{k-1},  b_k = (1/2) sqrt(k (k+2a-1)/((k+a)(k+a-1))),
        b_1 = (1/2) sqrt(2/(1+a)),  P_0 = (sqrt(pi) Gamma(a+1/2)/Gamma(a+1))^{-1/2},
    and Z_k = P_k / sqrt(|S^{d-2}|) (d = 2: Z_k(cos theta) = cos(k theta)/sqrt(pi), k >= 1).
    Returns shape (degree + 1,) + t.shape.
    """
    d = check_dim(dim)
    n = int(degree)
    t = np.asarray(t, dtype=float)
    a = gegenbauer_index(d)
    log_mu0 = 0.5 * math.log(math.pi) + gammaln(a + 0.5) - gammaln(a + 1.0)
    b = np.zeros(n + 2)
    b[1] = 0.5 * math.sqrt(2.0 / (1.0 + a))
    k = np.arange(2, n + 2, dtype=float)
    b[2:] = 0.5 * np.sqrt(k * (k + 2 * a - 1) / ((k + a) * (k + a - 1)))
    out = np.empty((n + 1, *t.shape))
    out[0] = math.exp(-0.5 * (log_mu0 + log_area_sd2(d)))
    if n >= 1:
        out[1] = t * out[0] / b[1]
    for j in range(1, n):
        out[j + 1] = (t * out[j] - b[j] * out[j - 1]) / b[j + 1]
    return out
