"""The circle grid: M uniform cells of [0, 2 pi), its FFT plans and kernel multipliers.

Cell j is [j dx, (j+1) dx), centre (j + 1/2) dx; data are cell averages. Drifts bind to a
grid (they plan their convolutions with its FFT settings); schemes own one.
"""

from __future__ import annotations

import math

import numpy as np

from meanfield.theory.checks import check_positive
from meanfield.theory.funk_hecke import circle_coefficients
from solvers.fft import CircularConvolution, RealFFT

TWO_PI = 2.0 * math.pi


def circle_multipliers(kernel, cells: int, *, derivative: int = 0, shift: float = 0.0,
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
    lam = circle_coefficients(kernel, m // 2, samples=max(2 * m, 1024))
    dx = TWO_PI / m
    mult = lam.astype(complex) * (1j * k) ** derivative
    if shift:
        mult *= np.exp(1j * k * shift * dx)
    if cell_averages:
        mult /= np.sinc(k * dx / (2 * np.pi))  # np.sinc(x) = sin(pi x)/(pi x)
    if derivative % 2 == 1 and m % 2 == 0:
        mult[-1] = 0.0
    return mult


def powers(z: np.ndarray, n: int) -> np.ndarray:
    """z^k for k = 0..n-1 as an (len(z), n) array, by repeated products (error ~ k eps)."""
    out = np.empty((np.size(z), n), complex)
    out[:, 0] = 1.0
    if n > 1:
        out[:, 1:] = np.asarray(z, complex).reshape(-1, 1)
        np.cumprod(out[:, 1:], axis=1, out=out[:, 1:])
    return out


class CircleGrid:
    """M uniform cells of [0, 2 pi) with planned real FFTs.

    Parameters
    ----------
    cells : int
        M >= 8.
    fft_threads, fft_backend, fft_planner
        See :class:`solvers.fft.RealFFT` (``estimate`` planning is bit-reproducible across
        processes).
    """

    def __init__(self, cells: int, fft_threads: int | None = None, fft_backend: str = "auto",
                 fft_planner: str = "estimate") -> None:
        self.cells = check_positive(cells, "cells", integer=True, minimum=8, inclusive=True)
        m = self.cells
        self.dx = TWO_PI / m
        self.theta = (np.arange(m) + 0.5) * self.dx
        self._fft_options = (fft_threads, fft_backend, fft_planner)
        self.fft = RealFFT(m, *self._fft_options)
        k = np.arange(m // 2 + 1)
        #: sinc(k dx/2): the cell average of e^{ik theta} is this times its centre value
        self.sinc = np.sinc(k * self.dx / TWO_PI)

    def convolution(self, multipliers: list[np.ndarray]) -> CircularConvolution:
        """A planned circular convolution by one or several multipliers (one forward FFT)."""
        return CircularConvolution(self.cells, multipliers, *self._fft_options)

    def fourier_amplitudes(self, q: np.ndarray, background: float) -> np.ndarray:
        """|p_hat_k| = |integral p e^{-ik theta} d theta|, k = 0..M/2, of p = background + q
        (p_hat_0 = mass; the token convention c_k = N^{-1} sum_j e^{-ik theta_j})."""
        spec = np.abs(self.fft.forward(q)) * self.dx / self.sinc
        spec[0] = TWO_PI * background + self.dx * float(q.sum())
        return spec

    def at_points(self, coeffs: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Values at arbitrary angles ``x`` of the band-limited function whose grid values
        are ``irfft(coeffs, M)`` (coeffs: k = 0..M/2, e.g. multipliers times rfft(q)), by its
        Fourier series: exact at the cell centres, O(M) per point."""
        w = np.full(coeffs.size, 2.0)
        w[0] = 1.0
        if self.cells % 2 == 0:
            w[-1] = 1.0
        phase = powers(np.exp(1j * (np.asarray(x, float) - 0.5 * self.dx)), coeffs.size)
        return (phase @ (w * coeffs)).real / self.cells

    def point_coefficients(self, x: np.ndarray, masses: np.ndarray,
                           multipliers: np.ndarray) -> np.ndarray:
        """rfft-layout coefficients X (k = 0..M/2) with irfft(X, M)_j = sum_a m_a f(theta_j -
        x_a) for the periodic f with Fourier multipliers ``multipliers`` (f = (1/2 pi)
        sum_k m_k e^{iks}): the field of point masses on the grid by one inverse FFT."""
        z = powers(np.exp(-1j * np.asarray(x, float)), self.cells // 2 + 1)  # (A, K+1)
        s = masses @ z                                                      # S_k
        k = np.arange(s.size)
        return (self.cells / TWO_PI) * multipliers * s * np.exp(0.5j * k * self.dx)

    def spectrum(self, q: np.ndarray, background: float) -> np.ndarray:
        """||P_k mu||_{L2(d theta)}, k = 0..M/2: |p_hat_0|/sqrt(2 pi) and |p_hat_k|/sqrt(pi)
        (the L2 norm of the degree-k part (p_hat_k e^{ik theta} + c.c.)/(2 pi))."""
        amp = self.fourier_amplitudes(q, background)
        amp[0] /= math.sqrt(TWO_PI)
        amp[1:] /= math.sqrt(math.pi)
        return amp
