"""Measures of empirical token distributions mu = N^{-1} sum_j m_j delta_{x_j}.

* :func:`fourier_coefficients` c_k of angles; :func:`harmonic_power` ||P_k mu||^2 on
  S^{d-1}; :func:`spectrum` its square root ||P_k mu||_{L2(sigma)}, the package-wide
  "spectrum" diagnostic (the grid schemes report the same quantity of a density);
* :func:`histogram_tv`: total-variation distance of the angle histogram to the uniform
  density (seed 003's exit criterion); :func:`circle_w1`: exact Wasserstein-1 distance on the
  circle between tokens and a density on uniform cells.

Masses are rescaled to mean 1 per system (see :mod:`solvers.particles.sampling`).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from meanfield.theory.checks import check_positive
from meanfield.theory.geometry import harmonic_multiplicity, log_sphere_area
from solvers.particles.sampling import (
    TWO_PI,
    batch_angles,
    batch_vectors,
    check_choice,
    check_density,
    normalised_masses,
)


# ---------------------------------------------------------------------------------------------
# Spectra
# ---------------------------------------------------------------------------------------------
def fourier_coefficients(angles: ArrayLike, kmax: int, masses: ArrayLike | None = None
                         ) -> np.ndarray:
    """c_k = N^{-1} sum_j m_j e^{-ik theta_j}, k = 0..kmax, complex of shape (batch, kmax+1).

    Masses are rescaled to mean 1 (c_0 = 1). For i.i.d. uniform angles E|c_k|^2 = 1/N (k >= 1);
    the same convention as ``CircleScheme.fourier_amplitudes`` for a density.
    """
    th = batch_angles(angles)
    kk = check_positive(kmax, "kmax", integer=True, minimum=0, inclusive=True)
    w = normalised_masses(masses, th.shape[0], th.shape[1])
    z = np.exp(-1j * th)
    out = np.empty((th.shape[0], kk + 1), complex)
    zk = np.broadcast_to(w, th.shape).astype(complex)
    for k in range(kk + 1):  # repeated products: relative error ~ k eps
        out[:, k] = zk.mean(axis=-1)
        zk = zk * z
    return out


def harmonic_power(x: ArrayLike, kmax: int, masses: ArrayLike | None = None, *,
                   representation: str = "vectors", block: int = 1024) -> np.ndarray:
    """Squared L^2(sigma) norm of the degree-k part of mu = N^{-1} sum_j m_j delta_{x_j}.

        ||P_k mu||^2 = (1/N^2) sum_ij m_i m_j (dim H_k / |S^{d-1}|) C_k^a(<x_i,x_j>)/C_k^a(1),
        a = (d-2)/2 (Chebyshev T_k for d = 2, Legendre P_k for d = 3),

    for k = 0..kmax, shape (batch, kmax+1); ||P_0 mu||^2 = 1/|S^{d-1}|. The normalised
    Gegenbauer polynomials obey P_{k+1} = (2(k+a) t P_k - k P_{k-1})/(k+2a), P_0 = 1,
    P_1 = t; the double sum is done in tiles of at most (batch, block, block) entries.
    ``representation="angles"`` takes angles (batch, N) and uses the closed form
    (dim H_k/(2 pi)) |c_k|^2 (dim H_0 = 1, dim H_k = 2).
    """
    kk = check_positive(kmax, "kmax", integer=True, minimum=0, inclusive=True)
    rep = check_choice(representation, ("angles", "vectors"), "representation")
    if rep == "angles":
        c = fourier_coefficients(x, kk, masses)
        mult = np.where(np.arange(kk + 1) == 0, 1.0, 2.0)
        return mult * np.abs(c) ** 2 / TWO_PI
    v = batch_vectors(x)
    bsz, n, d = v.shape
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    w = np.broadcast_to(normalised_masses(masses, bsz, n), (bsz, n))
    bs = check_positive(block, "block", integer=True, minimum=1, inclusive=True)
    a = 0.5 * (d - 2)
    total = np.zeros((bsz, kk + 1))
    for r0 in range(0, n, bs):
        r1 = min(n, r0 + bs)
        for c0 in range(0, n, bs):
            c1 = min(n, c0 + bs)
            t = np.clip(v[:, r0:r1] @ v[:, c0:c1].transpose(0, 2, 1), -1.0, 1.0)
            ww = w[:, r0:r1, None] * w[:, None, c0:c1]
            p_prev, p_cur = np.ones_like(t), t
            total[:, 0] += ww.sum(axis=(1, 2))
            if kk >= 1:
                total[:, 1] += np.einsum("bij,bij->b", ww, t)
            for k in range(1, kk):
                p_next = (2.0 * (k + a) * t * p_cur - k * p_prev) / (k + 2.0 * a)
                total[:, k + 1] += np.einsum("bij,bij->b", ww, p_next)
                p_prev, p_cur = p_cur, p_next
    mult = np.asarray(harmonic_multiplicity(np.arange(kk + 1), d), dtype=float)
    return total * mult * math.exp(-log_sphere_area(d)) / (n * n)


def spectrum(x: ArrayLike, kmax: int, masses: ArrayLike | None = None, *,
             representation: str = "vectors", block: int = 1024) -> np.ndarray:
    """The spectrum ||P_k mu||_{L2(sigma)} = sqrt(:func:`harmonic_power`), k = 0..kmax.

    Shape (batch, kmax+1). On angles (``representation="angles"``) it is computed from the
    Fourier coefficients: |c_k|/sqrt(pi) for k >= 1 and |c_0|/sqrt(2 pi) (= 1/sqrt(2 pi)), the
    convention of the grid schemes' ``spectrum`` for a density (|p_hat_k|/sqrt(pi)). For i.i.d.
    uniform tokens E spectrum_k^2 = dim H_k/(N |S^{d-1}|) (k >= 1): the noise floor. On vectors
    the round-off of the Gegenbauer double sum can make a vanishing power slightly negative;
    it is clipped at 0.
    """
    kk = check_positive(kmax, "kmax", integer=True, minimum=0, inclusive=True)
    rep = check_choice(representation, ("angles", "vectors"), "representation")
    if rep == "angles":
        return spectrum_from_coefficients(fourier_coefficients(x, kk, masses))
    return np.sqrt(np.maximum(harmonic_power(x, kk, masses, block=block), 0.0))


def spectrum_from_coefficients(c: np.ndarray) -> np.ndarray:
    """||P_k mu||_{L2(d theta)} from Fourier coefficients c_k (k = 0..K along the last axis):
    |c_0|/sqrt(2 pi), |c_k|/sqrt(pi) (k >= 1)."""
    scale = np.where(np.arange(c.shape[-1]) == 0, 1.0 / math.sqrt(TWO_PI),
                     1.0 / math.sqrt(math.pi))
    return np.abs(c) * scale


# ---------------------------------------------------------------------------------------------
# Distances to densities
# ---------------------------------------------------------------------------------------------
def histogram_tv(angles: ArrayLike, bins: int = 100, masses: ArrayLike | None = None
                 ) -> np.ndarray:
    """Total-variation distance between the angle histogram and the uniform density.

        TV = (1/2) integral_0^{2 pi} |p_hist(theta) - 1/(2 pi)| d theta
           = (1/2) sum_b |mu(bin b) - 1/bins|,

    p_hist the normalised histogram of the angles (mod 2 pi) on ``bins`` equal bins of
    [0, 2 pi) (mu(bin b) = count_b/N, or the mass fraction in the bin with masses). This is
    seed 003's exit criterion (Fig. 3: the state has left the uniform one when TV exceeds a
    threshold, with 100 bins). Shape (batch,).

    Noise floor: for N i.i.d. uniform tokens count_b ~ Binomial(N, 1/bins), so
    E TV ~ (1/2) bins sqrt(2/pi) sqrt((1 - 1/bins)/(N bins)) ~ 0.399 sqrt(bins/N) (0.126 at
    N = 10^3, 100 bins): thresholds must sit well above it.
    """
    th = batch_angles(angles)
    nb = check_positive(bins, "bins", integer=True, minimum=1, inclusive=True)
    bsz, n = th.shape
    w = np.broadcast_to(normalised_masses(masses, bsz, n), th.shape)
    idx = np.minimum(np.floor(np.mod(th, TWO_PI) * (nb / TWO_PI)).astype(np.int64), nb - 1)
    idx += nb * np.arange(bsz)[:, None]
    mass = np.bincount(idx.ravel(), weights=w.ravel(), minlength=bsz * nb).reshape(bsz, nb)
    mass /= w.sum(axis=-1, keepdims=True)
    return 0.5 * np.abs(mass - 1.0 / nb).sum(axis=-1)


def circle_w1(angles: ArrayLike, density: ArrayLike, masses: ArrayLike | None = None
              ) -> np.ndarray:
    """Exact Wasserstein-1 distance on the circle between tokens and a cell-average density.

    W_1(mu, nu) = min_c integral_0^{2 pi} |F(theta) - G(theta) - c| d theta (the minimiser c is
    the median of F - G w.r.t. d theta), F, G the CDFs of mu = sum_j m_j delta_{theta_j}
    (masses normalised to 1) and of the density p (averages over M uniform cells
    [j dx, (j+1) dx), taken piecewise constant and normalised to mass 1). F - G is piecewise
    linear between the cell edges and the token angles, so the integral and the median are
    evaluated exactly (O((N + M) log(N + M)) per system). Returns shape (batch,).
    """
    th = batch_angles(angles)
    p = check_density(density)
    w = np.broadcast_to(normalised_masses(masses, th.shape[0], th.shape[1]), th.shape)
    m = p.size
    dx = TWO_PI / m
    p = p / (p.sum() * dx)
    edges = np.arange(m + 1) * dx
    edges[-1] = TWO_PI
    cum_p = np.concatenate(([0.0], np.cumsum(p) * dx))
    out = np.empty(th.shape[0])
    for b in range(th.shape[0]):
        a = np.mod(th[b], TWO_PI)
        order = np.argsort(a)
        a = a[order]
        cw = np.concatenate(([0.0], np.cumsum(w[b][order]) / w[b].sum()))
        s = np.sort(np.concatenate((edges, a)))
        lo_s, hi_s = s[:-1], s[1:]
        length = hi_s - lo_s
        f = cw[np.searchsorted(a, lo_s, side="right")]  # F on (s_k, s_{k+1})
        j = np.clip(np.floor(0.5 * (lo_s + hi_s) / dx).astype(int), 0, m - 1)
        h0 = f - (cum_p[j] + p[j] * (lo_s - edges[j]))
        h1 = f - (cum_p[j] + p[j] * (hi_s - edges[j]))
        c = _uniform_median(np.minimum(h0, h1), np.maximum(h0, h1), length)
        out[b] = _abs_integral(np.minimum(h0, h1), np.maximum(h0, h1), length, c)
    return out


def _uniform_median(lo: np.ndarray, hi: np.ndarray, length: np.ndarray) -> float:
    """Median of a function that is linear from lo to hi on pieces of the given lengths.

    Phi(c) = measure{H <= c} = sum_k L_k clip((c - lo_k)/(hi_k - lo_k), 0, 1) is piecewise
    linear in c; sweep its breakpoints and solve Phi(c) = total/2.
    """
    flat = hi - lo <= 0
    slope = np.where(flat, 0.0, length / np.where(flat, 1.0, hi - lo))
    pos = np.concatenate((lo, hi))
    dslope = np.concatenate((slope, -slope))
    jump = np.concatenate((np.where(flat, length, 0.0), np.zeros_like(length)))
    order = np.argsort(pos, kind="stable")
    pos, dslope, jump = pos[order], dslope[order], jump[order]
    s_after = np.cumsum(dslope)  # slope of Phi right after each event
    gaps = np.diff(pos)
    phi = np.cumsum(jump) + np.concatenate(([0.0], np.cumsum(s_after[:-1] * gaps)))
    half = 0.5 * float(length.sum())
    m = int(np.searchsorted(phi, half, side="left"))
    if m == 0:
        return float(pos[0])
    m = min(m, pos.size - 1)
    left_limit = phi[m - 1] + s_after[m - 1] * (pos[m] - pos[m - 1])
    if left_limit >= half and s_after[m - 1] > 0:
        return float(pos[m - 1] + (half - phi[m - 1]) / s_after[m - 1])
    return float(pos[m])


def _abs_integral(lo, hi, length, c: float) -> float:
    """sum_k integral over piece k of |H - c| (H linear from lo_k to hi_k over length L_k)."""
    width = hi - lo
    mid = 0.5 * (lo + hi)
    inside = (lo < c) & (c < hi)
    safe = np.where(inside, width, 1.0)
    val = np.where(inside, ((hi - c) ** 2 + (c - lo) ** 2) / (2.0 * safe), np.abs(mid - c))
    return float(np.dot(length, val))
