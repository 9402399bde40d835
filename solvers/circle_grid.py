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
        k = np.arange(coeffs.size)
        w = np.full(coeffs.size, 2.0)
        w[0] = 1.0
        if self.cells % 2 == 0:
            w[-1] = 1.0
        phase = np.exp(1j * np.outer(np.asarray(x, float) - 0.5 * self.dx, k))
        return (phase @ (w * coeffs)).real / self.cells

    def spectrum(self, q: np.ndarray, background: float) -> np.ndarray:
        """||P_k mu||_{L2(d theta)}, k = 0..M/2: |p_hat_0|/sqrt(2 pi) and |p_hat_k|/sqrt(pi)
        (the L2 norm of the degree-k part (p_hat_k e^{ik theta} + c.c.)/(2 pi))."""
        amp = self.fourier_amplitudes(q, background)
        amp[0] /= math.sqrt(TWO_PI)
        amp[1:] /= math.sqrt(math.pi)
        return amp
