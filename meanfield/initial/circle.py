"""Initial densities on the circle as cell averages over M uniform cells of [0, 2 pi).

All return p (w.r.t. d theta, integral 1 up to the stated exceptions) of length M. Cell j is
[j dx, (j+1) dx); Fourier modes are averaged exactly over cells (factor sinc(k dx/2)), so a
refined grid sees the same perturbation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import ive

from meanfield.theory.checks import check_positive
from meanfield.theory.errors import InputError

TWO_PI = 2.0 * math.pi


def cell_centres(cells: int) -> np.ndarray:
    m = check_positive(cells, "cells", integer=True, minimum=8, inclusive=True)
    return (np.arange(m) + 0.5) * (TWO_PI / m)


def _mode_average(cells: int, k: np.ndarray) -> np.ndarray:
    """sinc(k dx / 2): the cell average of e^{ik theta} is this times its centre value."""
    return np.sinc(np.asarray(k, float) / cells)


def _nonnegative(p: np.ndarray, what: str, key: str = "initial.amplitude",
                 fix: str = "lower the amplitude") -> np.ndarray:
    if p.min() < 0:
        raise InputError(key, f"{what} makes the density negative (min {p.min():.3g}); {fix}")
    return p


def uniform(cells: int) -> np.ndarray:
    """p = 1/(2 pi)."""
    return np.full(int(check_positive(cells, "cells", integer=True, minimum=8, inclusive=True)),
                   1.0 / TWO_PI)


def white_noise(cells: int, sigma: float, seed: int | None = 0, *,
                renormalize: bool = True) -> np.ndarray:
    """p_j = (1/(2 pi) + sigma xi_j) / mass, xi_j ~ N(0, 1) i.i.d. per cell (seed 003).

    sigma is absolute on the density (0.01 is 6.3 % of 1/(2 pi)). The noise is not
    resolution independent (finer grids carry less energy per Fourier mode). By default the
    result is divided by its discrete mass, so it is a probability density (mass 1 to
    round-off); ``renormalize=False`` keeps the paper's unnormalised u_j = 1/(2 pi) +
    sigma xi_j, whose mass is 1 + O(sigma sqrt(dx)) (0.99691 at M = 1024, sigma = 0.01,
    seed 0).
    """
    m = len(cell_centres(cells))
    sigma = check_positive(sigma, "initial.amplitude", inclusive=True)
    rng = np.random.default_rng(seed)
    p = 1.0 / TWO_PI + sigma * rng.standard_normal(m)
    _nonnegative(p, f"noise of amplitude {sigma:g}")
    if renormalize:
        p /= p.sum() * (TWO_PI / m)
    return p


def token_noise(cells: int, tokens: float, seed: int | None = 0, *,
                cutoff: int = 64) -> np.ndarray:
    """Uniform plus the fluctuation of N i.i.d. uniform tokens, resolution independent.

    The empirical measure of N i.i.d. uniform angles has Fourier coefficients
    c_k = N^{-1} sum_j e^{-ik theta_j} with E c_k = 0 and E|c_k|^2 = 1/N (asymptotically complex
    Gaussian). This draws c_k, 1 <= k <= ``cutoff``, as independent complex Gaussians of that
    variance in a fixed order from ``seed`` and returns
        p(theta) = (1/2 pi) [1 + 2 sum_{k=1}^{cutoff} Re(c_k e^{ik theta})],
    averaged exactly over cells; any M >= 2 cutoff + 2 sees the same perturbation.
    """
    n = check_positive(tokens, "initial.tokens", minimum=1.0, inclusive=True)
    kc = check_positive(cutoff, "cutoff", integer=True, minimum=1, inclusive=True)
    theta = cell_centres(cells)
    if 2 * kc + 2 > theta.size:
        raise InputError("cutoff", f"must be <= (cells - 2)/2 = {(theta.size - 2) // 2}", kc)
    rng = np.random.default_rng(seed)
    c = (rng.standard_normal(kc) + 1j * rng.standard_normal(kc)) * math.sqrt(0.5 / n)
    return _from_coefficients(theta, np.arange(1, kc + 1), c, f"N = {n:g} token noise up to "
                              f"mode {kc}")


def _from_coefficients(theta: np.ndarray, k: np.ndarray, c: np.ndarray, what: str) -> np.ndarray:
    m = theta.size
    spec = np.zeros(m // 2 + 1, complex)
    # p = (1/2 pi) sum_k c_k e^{ik theta}, c_k = integral p e^{-ik theta}; the average over
    # cell j (centre (j + 1/2) dx) of e^{ik theta} is sinc(k dx/2) e^{ik dx/2} e^{2 pi i k j/M}
    spec[0] = m / TWO_PI
    spec[k] = (m / TWO_PI) * c * _mode_average(m, k) * np.exp(1j * k * math.pi / m)
    p = np.fft.irfft(spec, m)
    return _nonnegative(p, what, "initial.tokens", "raise initial.tokens or lower "
                        "initial.cutoff")


def mode(cells: int, k: int, amplitude: float, phase: float = 0.0) -> np.ndarray:
    """p = 1/(2 pi) + alpha cos(k theta + phi) (cell averages; mass exactly 1 for k >= 1)."""
    theta = cell_centres(cells)
    kk = check_positive(k, "initial.mode", integer=True, minimum=1, inclusive=True)
    if 2 * kk >= theta.size:
        raise InputError("initial.mode", f"must be < cells/2 = {theta.size // 2}", kk)
    alpha = check_positive(amplitude, "initial.amplitude", inclusive=True)
    if not math.isfinite(float(phase)):
        raise InputError("initial.phase", "must be a finite number", phase)
    p = 1.0 / TWO_PI + alpha * _mode_average(theta.size, kk) * np.cos(kk * theta + phase)
    return _nonnegative(p, f"mode amplitude {alpha:g}")


def von_mises_bumps(cells: int, centres: Sequence[float], masses: Sequence[float] | None = None,
                    kappa: float = 50.0) -> np.ndarray:
    """Sum of von Mises bumps m_i e^{kappa cos(theta - c_i)} / (2 pi I_0(kappa)).

    Masses default to equal shares of 1; if they sum to less than 1 the rest is spread
    uniformly. Cell averages by 8-point Gauss-Legendre quadrature per cell (overflow-safe
    through e^{kappa (cos - 1)} / ive).
    """
    theta = cell_centres(cells)
    cen = np.atleast_1d(np.asarray(centres, float))
    if cen.size == 0 or not np.all(np.isfinite(cen)):
        raise InputError("initial.centres", "must be a non-empty list of finite angles")
    mass = (np.full(cen.size, 1.0 / cen.size) if masses is None
            else np.atleast_1d(np.asarray(masses, float)))
    if mass.shape != cen.shape or np.any(mass < 0) or mass.sum() > 1 + 1e-12:
        raise InputError("initial.masses", "must be >= 0, one per centre, summing to <= 1")
    kap = check_positive(kappa, "initial.kappa")
    dx = TWO_PI / theta.size
    x, w = np.polynomial.legendre.leggauss(8)
    pts = theta[:, None] + 0.5 * dx * x[None, :]
    norm = TWO_PI * ive(0, kap)  # 2 pi I_0(kappa) e^{-kappa}
    p = np.full(theta.size, (1.0 - mass.sum()) / TWO_PI)
    for c, m_i in zip(cen, mass, strict=True):
        vals = np.exp(kap * (np.cos(pts - c) - 1.0)) / norm
        p += m_i * 0.5 * (vals @ w)
    return p


def from_particles(cells: int, angles, weights=None) -> np.ndarray:
    """Histogram density (cell averages) of particles at ``angles`` (any real values)."""
    theta = cell_centres(cells)
    a = np.mod(np.asarray(angles, float).ravel(), TWO_PI)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise InputError("angles", "must be a non-empty array of finite angles")
    w = np.full(a.size, 1.0 / a.size) if weights is None else np.asarray(weights, float)
    if w.shape != a.shape or np.any(w < 0) or w.sum() <= 0:
        raise InputError("weights", "must be >= 0, one per particle, with a positive sum")
    m = theta.size
    idx = np.minimum((a / (TWO_PI / m)).astype(int), m - 1)
    return np.bincount(idx, weights=w / w.sum(), minlength=m) / (TWO_PI / m)
