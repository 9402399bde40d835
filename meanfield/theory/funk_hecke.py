"""Funk-Hecke coefficients of zonal kernels on S^{d-1} (and on the circle, d = 2).

Funk-Hecke: for every degree-k spherical harmonic Y_k,
    integral W(<x,y>) Y_k(y) dsigma(y) = lambda_k Y_k(x),
    lambda_k = |S^{d-2}| integral_{-1}^{1} W(t) C_k^a(t)/C_k^a(1) (1-t^2)^{a-1/2} dt,  a = (d-2)/2.
On the circle (d = 2) this is lambda_k = integral_0^{2 pi} W(cos s) cos(k s) ds.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.special import eval_jacobi, gammaln, logsumexp, roots_jacobi

from meanfield.theory.checks import check_dim, check_positive


def _log_area_sd2(d: int) -> float:
    """log |S^{d-2}| (|S^0| = 2 for d = 2)."""
    m = d - 1  # S^{d-2} sits in R^{d-1}
    return float(np.log(2.0) + 0.5 * m * np.log(np.pi) - gammaln(0.5 * m))


@lru_cache(maxsize=256)
def _gauss_jacobi(n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    t, w = roots_jacobi(n, alpha, alpha)
    return t, w


def _log_space(kernel) -> bool:
    """Exponential kernels (beta > 0) give log W^{(k)} in closed form: Rodrigues in log space.

    Duck-typed so that this module needs nothing from ``kernels`` (which imports it)."""
    return hasattr(kernel, "log_derivative") and getattr(kernel, "beta", 0) > 0


def _default_nodes(kernel, kmax: int) -> int:
    beta = getattr(kernel, "beta", None)
    if beta is not None:
        return int(48 + kmax + 1.5 * beta)
    cheb = getattr(kernel, "chebyshev", None)
    deg = len(cheb().coef) if cheb is not None else 128
    return int(32 + (deg + kmax) // 2 + 1)


def funk_hecke_quadrature(kernel, k, dim: int = 2, *, method: str = "auto",
                          nodes: int | None = None):
    """Funk-Hecke coefficients lambda_k of ``kernel`` on S^{d-1} by Gauss-Jacobi quadrature.

    Parameters
    ----------
    kernel : meanfield.theory.kernels.Kernel
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
        method = "rodrigues" if getattr(kernel, "beta", None) is not None else "projection"
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
        exp_kernel = _log_space(kernel)
        for i, kk in enumerate(k_arr):
            t, w = _gauss_jacobi(n, kk + alpha)
            log_pref = (log_area + gammaln(alpha + 1) - kk * np.log(2.0)
                        - gammaln(kk + alpha + 1))
            if exp_kernel:
                out[i] = np.exp(log_pref + logsumexp(np.log(w) + kernel.log_derivative(t, kk)))
            else:
                out[i] = np.exp(log_pref) * np.dot(w, kernel.derivative(t, kk))
    return out if np.ndim(k) else float(out[0])


def funk_hecke(kernel, k, dim: int = 2):
    """lambda_k of ``kernel`` on S^{d-1}: closed form when the kernel has one, else quadrature."""
    return kernel.funk_hecke(k, dim)


def circle_coefficients(kernel, kmax: int, samples: int = 1024) -> np.ndarray:
    """lambda_k = integral_0^{2 pi} W(cos s) cos(k s) ds, k = 0..kmax (the d = 2 Funk-Hecke
    coefficients, i.e. the Fourier coefficients of s -> W(cos s)).

    Closed form for kernels that have one (exponential: 2 pi I_k(beta)/beta); otherwise the
    trapezoid rule on max(``samples``, 2 kmax + 2) equispaced points, spectrally accurate for
    smooth periodic W(cos s).
    """
    k = np.arange(int(kmax) + 1)
    if getattr(kernel, "beta", None) is not None:
        return np.asarray(kernel.funk_hecke(k, 2), dtype=float)
    fine = max(int(samples), 2 * k.size)
    s = 2 * np.pi * np.arange(fine) / fine
    return (2 * np.pi / fine) * np.fft.rfft(kernel(np.cos(s))).real[: k.size]
