"""Funk-Hecke coefficients of zonal kernels on S^{d-1} and circle Fourier multipliers.

Funk-Hecke: for every degree-k spherical harmonic Y_k,
    integral W(<x,y>) Y_k(y) dsigma(y) = lambda_k Y_k(x),
    lambda_k = |S^{d-2}| integral_{-1}^{1} W(t) C_k^a(t)/C_k^a(1) (1-t^2)^{a-1/2} dt,  a = (d-2)/2.
On the circle (d = 2) this is lambda_k = integral_0^{2 pi} W(cos s) cos(k s) ds.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.special import eval_jacobi, gammaln, logsumexp, roots_jacobi

from meanfield.checks import check_dim, check_positive
from meanfield.kernels import ExponentialKernel, Kernel


def _log_area_sd2(d: int) -> float:
    """log |S^{d-2}| (|S^0| = 2 for d = 2)."""
    m = d - 1  # S^{d-2} sits in R^{d-1}
    return float(np.log(2.0) + 0.5 * m * np.log(np.pi) - gammaln(0.5 * m))


@lru_cache(maxsize=256)
def _gauss_jacobi(n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    t, w = roots_jacobi(n, alpha, alpha)
    return t, w


def _default_nodes(kernel: Kernel, kmax: int) -> int:
    if isinstance(kernel, ExponentialKernel):
        return int(48 + kmax + 1.5 * kernel.beta)
    cheb = getattr(kernel, "chebyshev", None)
    deg = len(cheb().coef) if cheb is not None else 128
    return int(32 + (deg + kmax) // 2 + 1)


def funk_hecke_quadrature(kernel: Kernel, k, dim: int = 2, *, method: str = "auto",
                          nodes: int | None = None):
    """Funk-Hecke coefficients lambda_k of ``kernel`` on S^{d-1} by Gauss-Jacobi quadrature.

    Parameters
    ----------
    kernel : Kernel
        Any kernel; ``method="rodrigues"`` needs its derivatives of every order.
    k : int or array of int
        Degrees (>= 0).
    dim : int
        Ambient dimension d >= 2.
    method : {"auto", "projection", "rodrigues"}
        ``projection`` integrates W(t) P_k(t) (1-t^2)^{a-1/2} directly: its error is about
        1e-16 max|W| in absolute terms, so tiny lambda_k (small beta, large k) lose relative
        accuracy. ``rodrigues`` integrates by parts k times (Rodrigues' formula),
            lambda_k = |S^{d-2}| Gamma(a+1/2) / (2^k Gamma(k+a+1/2))
                       * integral W^{(k)}(t) (1-t^2)^{k+a-1/2} dt,
        a positive integrand for the exponential kernel, hence full relative accuracy; it is
        evaluated in log space (log-sum-exp), so it never overflows. ``auto`` takes
        ``rodrigues`` for the exponential kernel and ``projection`` otherwise.
    nodes : int, optional
        Number of Gauss-Jacobi nodes (default from beta, k, and the kernel's smoothness).

    Returns
    -------
    ndarray or float
        lambda_k in the kernel's time unit.
    """
    d = check_dim(dim)
    k_arr = np.atleast_1d(np.asarray(k))
    if np.any(k_arr < 0) or np.any(k_arr % 1 != 0):
        raise ValueError("k: must be integers >= 0")
    k_arr = k_arr.astype(int)
    if method == "auto":
        method = "rodrigues" if isinstance(kernel, ExponentialKernel) else "projection"
    if method not in ("projection", "rodrigues"):
        raise ValueError(f"method: must be auto, projection or rodrigues (got {method!r})")
    n = nodes if nodes is not None else _default_nodes(kernel, int(k_arr.max()))
    n = int(check_positive(n, "nodes", integer=True))
    alpha = 0.5 * (d - 3)
    log_area = _log_area_sd2(d)
    if method == "projection":
        t, w = _gauss_jacobi(n, alpha)
        wk = w * kernel(t)
        pk = eval_jacobi(k_arr[:, None], alpha, alpha, t[None, :])
        pk1 = eval_jacobi(k_arr, alpha, alpha, 1.0)
        out = np.exp(log_area) * (pk @ wk) / pk1
    else:
        out = np.empty(k_arr.shape)
        exp_kernel = isinstance(kernel, ExponentialKernel) and kernel.beta > 0
        for i, kk in enumerate(k_arr):
            t, w = _gauss_jacobi(n, kk + alpha)
            log_pref = (log_area + gammaln(alpha + 1) - kk * np.log(2.0)
                        - gammaln(kk + alpha + 1))
            if exp_kernel:
                out[i] = np.exp(log_pref + logsumexp(np.log(w) + kernel.log_derivative(t, kk)))
            else:
                out[i] = np.exp(log_pref) * np.dot(w, kernel.derivative(t, kk))
    return out if np.ndim(k) else float(out[0])


def funk_hecke(kernel: Kernel, k, dim: int = 2):
    """lambda_k of ``kernel`` on S^{d-1}: closed form when the kernel has one, else quadrature."""
    return kernel.funk_hecke(k, dim)


def circle_multipliers(kernel: Kernel, cells: int, *, derivative: int = 0, shift: float = 0.0,
                       cell_averages: bool = True) -> np.ndarray:
    """Fourier multipliers m_k (k = 0..M/2) for ``numpy.fft.rfft`` / ``irfft`` on M cells.

    For a density p on M uniform cells of [0, 2 pi) (w.r.t. d theta),
        irfft(m * rfft(p))_j = d^n/dtheta^n (W * mu)(theta_j + shift * dx),   n = ``derivative``,
    with m_k = (i k)^n lambda_k e^{i k shift dx} / s_k, lambda_k = integral W(cos s) e^{-iks} ds
    (the d = 2 Funk-Hecke coefficient) and s_k = sinc(k dx / 2) when the data are cell
    averages (this undoes the averaging so the convolution is exact for the band-limited
    interpolant), s_k = 1 for point values. A true circular convolution: sine and cosine
    modes get the same multiplier. ``shift = 0.5`` evaluates at the right cell faces.
    The Nyquist multiplier of an odd derivative is zero (its sign is undefined).
    """
    m = int(check_positive(cells, "cells", integer=True, minimum=2, inclusive=True))
    k = np.arange(m // 2 + 1)
    if isinstance(kernel, ExponentialKernel):
        lam = kernel.funk_hecke(k, 2)
    else:  # trapezoid rule on a finer grid: spectrally accurate for smooth periodic W(cos s)
        fine = max(2 * m, 1024)
        s = 2 * np.pi * np.arange(fine) / fine
        lam = (2 * np.pi / fine) * np.fft.rfft(kernel(np.cos(s))).real[: k.size]
    dx = 2 * np.pi / m
    mult = lam.astype(complex) * (1j * k) ** derivative
    if shift:
        mult *= np.exp(1j * k * shift * dx)
    if cell_averages:
        mult /= np.sinc(k * dx / (2 * np.pi))  # np.sinc(x) = sin(pi x)/(pi x)
    if derivative % 2 == 1 and m % 2 == 0:
        mult[-1] = 0.0
    return mult
