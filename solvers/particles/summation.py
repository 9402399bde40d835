"""Pairwise attention sums of N tokens, overflow-free: O(N^2) tiles or O(N K) Fourier-Bessel.

For every token i the velocity needs the row sums (s_ij = <Q x_i, K x_j>, w_ij the mask,
m_j the masses)

    sum_j w_ij m_j e^{beta s_ij} g_ij = e^{L_i} num_i,
    sum_j w_ij m_j e^{beta s_ij}      = e^{L_i} den_i,

with g_ij = V x_j on S^{d-1}, and on the circle (identity QKV, angles) g_ij = sin(th_i - th_j)
(``num``) and optionally cos(th_i - th_j) (``rad``, the radial part of the unprojected
average, for the ``euler-unprojected`` step). :class:`RowSums` holds (L, num, den, rad).

Evaluation never overflows: kernels are written e^{beta (s - M_i)} with the running row maximum
M_i of s_ij (online log-sum-exp, L_i = beta M_i); on the circle M_i = 1 (L_i = beta). Only the
final USA factor e^{L_i} is applied by the caller (it overflows only if the velocity itself
does, e.g. raw USA beyond beta ~ 709).

Summation paths (``summation`` of ``ParticleSystem``, registry ``SUMMATIONS``):

* ``direct``  O(N^2): tiles of at most (batch, block, block) entries (``block``), so an
              N x N matrix is never formed unless block >= N (the dense evaluation).
* ``fourier`` O(N K), circle with identity QKV only: the Fourier-Bessel series
              e^{beta (cos s - 1)} = ive_0(beta) + 2 sum_{k>=1} ive_k(beta) cos(ks),
              e^{beta (cos s - 1)} sin s = sum_{k>=1} a_k sin(ks),  a_k = (2k/beta) ive_k(beta),
              e^{beta (cos s - 1)} cos s = r_0 + 2 sum_{k>=1} r_k cos(ks),
                  r_0 = ive_1(beta), r_k = (ive_{k-1}(beta) + ive_{k+1}(beta))/2,
              truncated at K where the first two fall below 1e-17 (``FOURIER_CUTOFF``) of their
              largest value, and the power sums S_k = sum_j m_j e^{ik theta_j} (prefix sums for
              the causal mask):
              sum_j m_j e^{beta(cos(th_i - th_j) - 1)} sin(th_i - th_j)
                  = Im( sum_k a_k conj(S_k) e^{ik theta_i} ).
* ``auto``    ``fourier`` where it applies and N >= 4 K, else ``direct``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ive, logsumexp

from meanfield.theory.attention import AttentionMatrices
from solvers.particles.measures import fourier_coefficients

SUMMATIONS = ("auto", "fourier", "direct")
#: relative size below which Fourier-Bessel coefficients are dropped
FOURIER_CUTOFF = 1e-17


@dataclass
class RowSums:
    """Per-token row sums (batch, N): e^{L} num, e^{L} den, e^{L} rad (see module docstring).

    ``num`` has shape (batch, N, d) on vectors; fields not asked for are None.
    """

    log_scale: np.ndarray
    num: np.ndarray | None
    den: np.ndarray | None
    rad: np.ndarray | None = None


def bessel_series(beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (b_k, a_k), k = 0..K, of the scaled circle kernel:

        e^{beta (cos s - 1)}        = b_0 + 2 sum_{k>=1} b_k cos(ks),  b_k = ive(k, beta),
        e^{beta (cos s - 1)} sin s  = sum_{k>=1} a_k sin(ks),          a_k = (2k/beta) ive(k, beta)

    (from d/ds e^{beta cos s} = -beta sin s e^{beta cos s}; at beta = 0: b_0 = 1, a_1 = 1).
    K is the first degree where both fall below FOURIER_CUTOFF times their largest value.
    """
    if beta == 0:
        return np.array([1.0, 0.0]), np.array([0.0, 1.0])
    kk = np.arange(0, int(beta + 12 * math.sqrt(beta) + 60))
    b = ive(kk, beta)
    a = 2.0 * kk / beta * b
    small = (b < FOURIER_CUTOFF * b.max()) & (a < FOURIER_CUTOFF * a.max())
    k_end = int(np.argmax(small)) if small.any() else kk.size - 1
    k_end = max(k_end, 1)
    return b[: k_end + 1], a[: k_end + 1]


def radial_series(beta: float, cos_coef: np.ndarray) -> np.ndarray:
    """r_k, k = 0..K, of e^{beta (cos s - 1)} cos s = r_0 + 2 sum_{k>=1} r_k cos(ks).

    cos s (b_0 + 2 sum_k b_k cos ks) = b_1 + sum_{k>=1} (b_{k-1} + b_{k+1}) cos(ks), so
    r_0 = b_1, r_k = (b_{k-1} + b_{k+1})/2 with b_k = ive(k, beta) (``cos_coef``, K = its last
    degree; b_{K+1} is computed). The dropped r_{K+1} = b_K/2 is below the cutoff.
    """
    kk = cos_coef.size - 1
    b = np.append(cos_coef, ive(kk + 1, beta))
    r = np.empty(kk + 1)
    r[0] = b[1]
    r[1:] = 0.5 * (b[:-2] + b[2:])
    return r


class FourierBessel:
    """The O(N K) circle sums at one beta (identity QKV, angles).

    ``cos_coef`` b_k, ``sin_coef`` a_k, ``rad_coef`` r_k (k = 0..``terms``); see the module
    docstring.
    """

    def __init__(self, beta: float) -> None:
        self.beta = beta
        # Fourier-Bessel coefficients (scaled by e^{-beta})
        self.cos_coef, self.sin_coef = bessel_series(beta)
        self.terms = self.sin_coef.size - 1
        self.rad_coef = radial_series(beta, self.cos_coef)

    def row_sums(self, th: np.ndarray, w: np.ndarray, *, causal: bool, need_num: bool,
                 need_den: bool, need_rad: bool = False, unit_masses: bool = False) -> RowSums:
        """Row sums of angles ``th`` (batch, N) with masses ``w`` (1 or batch, N).

        ``unit_masses`` skips the products with w = 1 (bitwise the same result).
        """
        if not causal:
            return self._chunked(th, w, need_num, need_den, need_rad, unit_masses)
        bsz, n = th.shape
        z = np.exp(1j * th)
        zk = np.ones_like(z)
        a_coef, b_coef, r_coef = self.sin_coef, self.cos_coef, self.rad_coef
        acc_num = np.zeros((bsz, n), complex) if need_num else None
        acc_den = acc_rad = None
        s0 = np.cumsum(np.broadcast_to(w, th.shape), axis=-1).astype(complex)
        if need_den:
            acc_den = b_coef[0] * s0
        if need_rad:
            acc_rad = r_coef[0] * s0
        for k in range(1, self.terms + 1):
            zk *= z
            wz = zk if unit_masses else w * zk
            s = np.conj(np.cumsum(wz, axis=-1))
            # with d = th_i - th_j: sum_j m_j sin(kd) = Im(e^{ik th_i} conj(S_k)), cos: Re
            if need_num:
                acc_num += (a_coef[k] * s) * zk
            if need_den:
                acc_den += (2.0 * b_coef[k] * s) * zk
            if need_rad:
                acc_rad += (2.0 * r_coef[k] * s) * zk
        return RowSums(np.full((bsz, n), self.beta),
                       acc_num.imag if need_num else None,
                       acc_den.real if need_den else None,
                       acc_rad.real if need_rad else None)

    def _chunked(self, th: np.ndarray, w: np.ndarray, need_num: bool, need_den: bool,
                 need_rad: bool, unit_masses: bool) -> RowSums:
        """Unmasked Fourier sums in two passes over particle chunks.

        Pass 1 accumulates S_k = sum_j m_j z_j^k (k = 1..K) from a (batch, K, chunk) table of
        powers; pass 2 rebuilds the table and accumulates sum_k c_k z_i^k. The table stays in
        cache, ~2x faster than K sweeps over all N tokens, and rebuilding it is cheaper than
        storing K x N complex numbers. No BLAS call: OpenBLAS threads on these small products
        slow down ~10x when the cores are shared.
        """
        bsz, n = th.shape
        w = np.broadcast_to(w, th.shape)
        kk = self.terms
        chunk = max(64, 8192 // bsz)
        z = np.exp(1j * th)

        def powers(c0: int, c1: int) -> np.ndarray:
            zc = z[:, c0:c1]
            tab = np.empty((bsz, kk, c1 - c0), complex)
            tab[:, 0] = zc
            for k in range(1, kk):  # repeated products: relative error ~ k eps
                np.multiply(tab[:, k - 1], zc, out=tab[:, k])
            return tab

        sums = np.zeros((bsz, kk), complex)
        for c0 in range(0, n, chunk):
            c1 = min(n, c0 + chunk)
            tab = powers(c0, c1)
            sums += tab.sum(axis=-1) if unit_masses else \
                np.einsum("bkc,bc->bk", tab, w[:, c0:c1])
        conj = np.conj(sums)
        # Im part: sum_j m_j sin(k d)-series; Re part: cos(k d)-series (d = th_i - th_j)
        series = []  # (coefficients c_k, output, take the imaginary part)
        if need_num:
            series.append((self.sin_coef[1:] * conj, np.empty((bsz, n)), True))
        if need_den:
            series.append((2.0 * self.cos_coef[1:] * conj, np.empty((bsz, n)), False))
        if need_rad:
            series.append((2.0 * self.rad_coef[1:] * conj, np.empty((bsz, n)), False))
        acc = np.empty((bsz, min(chunk, n)), complex)
        tmp = np.empty_like(acc)
        for c0 in range(0, n, chunk):
            c1 = min(n, c0 + chunk)
            tab = powers(c0, c1)
            for coef, out, imag in series:
                a, t = acc[:, : c1 - c0], tmp[:, : c1 - c0]
                np.multiply(tab[:, 0], coef[:, 0, None], out=a)
                for k in range(1, kk):
                    np.multiply(tab[:, k], coef[:, k, None], out=t)
                    a += t
                out[:, c0:c1] = a.imag if imag else a.real
        outs = iter(out for _, out, _ in series)
        num = next(outs) if need_num else None
        den = next(outs) if need_den else None
        rad = next(outs) if need_rad else None
        total = w.sum(axis=-1, keepdims=True)
        if need_den:
            den += self.cos_coef[0] * total
        if need_rad:
            rad += self.rad_coef[0] * total
        return RowSums(np.full((bsz, n), self.beta), num, den, rad)

    def log_pair_sum(self, th: np.ndarray, w: np.ndarray) -> np.ndarray:
        """log sum_ij m_i m_j e^{beta (cos(th_i - th_j) - 1)} = log(N^2 sum_k mult_k b_k |c_k|^2)
        (mult_0 = 1, mult_k = 2), shape (batch,)."""
        c = fourier_coefficients(th, self.terms, w)  # c_k = S_k^*/N
        mult = np.where(np.arange(c.shape[1]) == 0, 1.0, 2.0)
        tot = (np.abs(c) ** 2 * (mult * self.cos_coef)).sum(axis=-1) * th.shape[1] ** 2
        return np.log(tot)


def direct_angle_sums(th: np.ndarray, w: np.ndarray, beta: float, block: int, *,
                      causal: bool, need_num: bool, need_rad: bool = False) -> RowSums:
    """O(N^2) circle sums in tiles of (batch, block, block); den is always computed."""
    bsz, n = th.shape
    bs = block
    num = np.zeros((bsz, n)) if need_num else None
    den = np.zeros((bsz, n))
    rad = np.zeros((bsz, n)) if need_rad else None
    for r0 in range(0, n, bs):
        r1 = min(n, r0 + bs)
        for c0 in range(0, r1 if causal else n, bs):
            c1 = min(n, c0 + bs)
            d = th[:, r0:r1, None] - th[:, None, c0:c1]
            e = np.cos(d)
            if beta > 0:
                e -= 1.0
                e *= beta
                np.exp(e, out=e)  # e^{beta (cos d - 1)} <= 1: the row maximum is 1
            else:
                e.fill(1.0)
            e *= w[:, None, c0:c1]
            if causal and c1 > r0 + 1:
                e *= np.arange(c0, c1)[None, :] <= np.arange(r0, r1)[:, None]
            den[:, r0:r1] += e.sum(axis=-1)
            if need_num:
                num[:, r0:r1] += np.einsum("bij,bij->bi", e, np.sin(d))
            if need_rad:
                rad[:, r0:r1] += np.einsum("bij,bij->bi", e, np.cos(d))
    return RowSums(np.full((bsz, n), beta), num, den, rad)


def direct_vector_sums(x: np.ndarray, w: np.ndarray, attention: AttentionMatrices, beta: float,
                       block: int, *, causal: bool, need_num: bool) -> RowSums:
    """O(N^2) sums on S^{d-1} in tiles of (batch, block, block), online log-sum-exp per row.

    Rescaling the partial sums by e^{beta (M_old - M_new)} when the running row maximum grows
    is exact up to one rounding per tile. ``num`` is sum_j w_ij m_j e^{beta(s_ij - M_i)} V x_j
    (batch, N, d); den is always computed.
    """
    bsz, n, d = x.shape
    at = attention
    xa = x if at.identity else x @ at.A       # row i: x_i^T A, so s_ij = <xa_i, x_j>
    vx = x if at.identity else x @ at.V.T     # row j: V x_j
    xt = x.transpose(0, 2, 1)
    bs = block
    big_l = np.zeros((bsz, n))
    num = np.zeros((bsz, n, d)) if need_num else None
    den = np.zeros((bsz, n))
    for r0 in range(0, n, bs):
        r1 = min(n, r0 + bs)
        m_run = np.full((bsz, r1 - r0), -np.inf if beta > 0 else 0.0)
        num_r = np.zeros((bsz, r1 - r0, d)) if need_num else None
        den_r = np.zeros((bsz, r1 - r0))
        for c0 in range(0, r1 if causal else n, bs):
            c1 = min(n, c0 + bs)
            s = xa[:, r0:r1] @ xt[:, :, c0:c1]
            valid = None
            if causal and c1 > r0 + 1:
                valid = np.arange(c0, c1)[None, :] <= np.arange(r0, r1)[:, None]
                s[:, ~valid] = -np.inf
            if beta > 0:
                # online log-sum-exp: rescale the partial sums to the new row maximum
                new = np.maximum(m_run, s.max(axis=-1))
                with np.errstate(invalid="ignore"):
                    alpha = np.exp(beta * (m_run - new))
                alpha[~np.isfinite(m_run)] = 0.0
                den_r *= alpha
                if need_num:
                    num_r *= alpha[..., None]
                s -= new[..., None]
                s *= beta
                np.exp(s, out=s)
                m_run = new
            else:
                s = np.ones_like(s) if valid is None else \
                    np.broadcast_to(valid, s.shape).astype(float)
            s *= w[:, None, c0:c1]
            den_r += s.sum(axis=-1)
            if need_num:
                num_r += s @ vx[:, c0:c1]
        big_l[:, r0:r1] = beta * m_run
        den[:, r0:r1] = den_r
        if need_num:
            num[:, r0:r1] = num_r
    return RowSums(big_l, num, den)


def log_pair_sum_from_rows(rows: RowSums, w: np.ndarray, beta: float) -> np.ndarray:
    """log sum_ij m_i m_j e^{beta s_ij} - beta from unmasked row sums (log-sum-exp over i)."""
    return logsumexp(np.log(w) + rows.log_scale + np.log(rows.den), axis=-1) - beta
