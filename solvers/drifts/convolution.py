"""The self-attention drift on the circle: a convolution, by FFT with Bessel multipliers.

    USA:  v = d_theta (W * mu),                 W(t) = e^{beta t}/beta
    SA:   v = beta^{-1} d_theta log Z,          Z = beta (W * mu)

The convolution is a true circular convolution of the cell averages with the Funk-Hecke
multipliers lambda_k = 2 pi I_k(beta)/beta (corrected for cell averaging), planned once per
run. It is computed with the scaled kernel e^{beta(t-1)}/beta, so nothing overflows; raw-time
USA multiplies the velocity by e^{beta} (finite up to beta ~ 700). A user kernel
(``meanfield.theory.kernels.CallableKernel``) replaces the exponential one for USA.

Velocities at faces are differences of the potential, v_{j+1/2} = (c_{j+1} - c_j)/dx (divided
by Z at the face for SA), so the fv2 scheme's discrete energy (dx/2) p.Cp never decreases;
centre velocities use the spectral derivative.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from meanfield.theory.checks import check_beta, check_model, check_time_unit
from meanfield.theory.energy import energy_from_scaled
from meanfield.theory.errors import InputError
from meanfield.theory.kernels import ExponentialKernel, Kernel
from solvers.circle_grid import TWO_PI, circle_multipliers, powers

#: raw-time USA velocities ~ e^beta overflow float64 beyond beta ~ 709
RAW_BETA_LIMIT = 700.0


class Convolution:
    """USA or SA self-attention: v = grad (W * mu), or its softmax normalisation (circle, FFT)

    Parameters
    ----------
    beta : float
        Inverse temperature (>= 0); ignored when ``kernel`` is given.
    model : {"usa", "sa"}
    time_unit : {"raw", "scaled"}
        ``scaled`` (USA): time in units where the kernel is e^{beta(t-1)}/beta.
    kernel : Kernel, optional
        A user kernel (USA only) instead of the exponential one.
    """

    name = "convolution"
    linear_rates: np.ndarray | None = None
    PARAMETERS: ClassVar[dict[str, tuple[Any, str]]] = {
        "beta": (5.0, "inverse temperature of W(t) = e^{beta t}/beta"),
        "model": ("usa", "usa (unnormalised) | sa (softmax)"),
        "time_unit": ("raw", "raw | scaled (kernel e^{beta(t-1)}/beta, USA only)"),
    }

    def __init__(self, beta: float = 5.0, model: str = "usa", time_unit: str = "raw",
                 kernel: Kernel | None = None) -> None:
        self.model = check_model(model)
        self.time_unit = check_time_unit(time_unit, model)
        if kernel is None:
            self.beta = check_beta(beta)
            if model == "usa" and time_unit == "raw" and self.beta > RAW_BETA_LIMIT:
                raise InputError("beta", "raw-time USA velocities ~ e^beta overflow float64 "
                                 "beyond beta ~ 709: use time_unit='scaled'", self.beta)
            # compute with the scaled kernel e^{beta(t-1)}/beta: no overflow for any beta;
            # USA raw multiplies velocities by e^{beta} (finite up to beta ~ 700)
            self.kernel: Kernel = ExponentialKernel(self.beta, "scaled")
            self.rate = math.exp(self.beta) if (model == "usa" and time_unit == "raw") else 1.0
        else:
            if model != "usa":
                raise InputError("model", "a user kernel supports 'usa' only", model)
            if not isinstance(kernel, Kernel):
                raise InputError("kernel", "must be a meanfield.Kernel", type(kernel).__name__)
            self.kernel, self.beta, self.rate = kernel, float("nan"), 1.0
        self.user_kernel = kernel
        self.background = 1.0 / TWO_PI
        self.linear_rates: np.ndarray | None = None
        self._atoms: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ contract
    # ------------------------------------------------------------------ atoms
    def set_atoms(self, positions: np.ndarray, masses: np.ndarray) -> None:
        """Weighted atoms sum_k m_k delta_{theta_k} that are part of the measure (besides the
        density): their potential c_a(x) = sum_k m_k W(cos(x - theta_k)) and its derivative
        enter every velocity below. Empty arrays remove them (the velocities are then
        exactly those of the density alone)."""
        m = np.array(masses, float)   # copies: the fields are computed later
        if m.size == 0:
            self._atoms = None
            return
        self._atoms = (np.array(positions, float), m)
        self._atom_cache = None   # fields computed when first needed (events set atoms often)

    def _atom_fields(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(e^{-ik x_a}, c_a, d c_a/d theta) of the atoms set last, at the cell centres."""
        if self._atom_cache is None:
            x, m = self._atoms
            # their potential and its derivative at the cell centres, spectrally (exact to
            # round-off while lambda_k is negligible beyond M/2, as for the density):
            # c_a(theta_n) = (1/2 pi) sum_k lambda_k S_k e^{ik theta_n},
            # S_k = sum_a m_a e^{-ik x_a}
            z = powers(np.exp(-1j * x), self.cells // 2 + 1)   # e^{-ik x_a}, reused below
            coef = (m @ z) * self._atom_mult
            self._atom_cache = (z, self.grid.fft.inverse(coef),
                                self.grid.fft.inverse(coef * self._ik))
        return self._atom_cache

    @property
    def _atom_powers(self) -> np.ndarray:
        return self._atom_fields()[0]

    @property
    def _atom_c(self) -> np.ndarray:
        return self._atom_fields()[1]

    @property
    def _atom_g(self) -> np.ndarray:
        return self._atom_fields()[2]

    def _pair_potential(self, at: np.ndarray, x: np.ndarray, m: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """(sum_k m_k W(cos(a - x_k)), d/da of it) at the angles ``a`` (scaled kernel)."""
        d = at[:, None] - x[None, :]
        cd = np.cos(d)
        c = self.kernel(cd) @ m
        g = (self.kernel.derivative(cd) * -np.sin(d)) @ m
        return c, g

    def atom_velocity(self, q: np.ndarray) -> np.ndarray:
        """The exact velocity at the atoms of the measure pbar + q + atoms: the density's
        potential and its derivative by their Fourier series at the atoms' positions, the
        atoms' own by the kernel (a self term has sin 0 = 0). Run's time unit."""
        x, m = self._atoms
        # e^{ik (x_a - dx/2)}: the conjugated powers of set_atoms times the half-cell shift
        phase = np.conj(self._atom_powers) * self._half_shift
        spec = self.grid.fft.forward(q)
        g = (phase @ (self._point_weights * self._grad * spec)).real / self.cells
        c_aa, g_aa = self._pair_potential(x, x, m)
        g += g_aa
        if self.model == "usa":
            return g * self.rate
        c = (phase @ (self._point_weights * self._conv * spec)).real / self.cells
        c += self._conv[0].real * self.background + c_aa
        return g / self._partition(c)

    def bind(self, grid) -> None:
        """Multipliers and FFT plans, once per run: c alone, v alone (USA), or c and v from
        one forward transform (SA); the linear growth rates gamma_k of the grid."""
        m = grid.cells
        self.grid = grid
        self.dx = grid.dx
        self.cells = m
        self._conv = circle_multipliers(self.kernel, m)              # c = W*mu at centres
        self._grad = circle_multipliers(self.kernel, m, derivative=1)  # d/dtheta W*mu
        self._conv_op = grid.convolution([self._conv])
        self._grad_op = grid.convolution([self._grad])
        self._both_op = grid.convolution([self._conv, self._grad])
        k = np.arange(m // 2 + 1)
        lam = circle_multipliers(self.kernel, m, cell_averages=False).real
        self._ik = 1j * k
        if m % 2 == 0:
            self._ik[-1] = 0.0  # the Nyquist derivative (its sign is undefined)
        # atoms: grid coefficients of point masses, and point evaluation of the density's
        # fields (see CircleGrid.point_coefficients and at_points)
        self._atom_mult = (m / TWO_PI) * lam * np.exp(0.5j * k * self.dx)
        self._half_shift = np.exp(-0.5j * k * self.dx)
        self._point_weights = np.full(k.size, 2.0)
        self._point_weights[0] = 1.0
        if m % 2 == 0:
            self._point_weights[-1] = 1.0
        rates = self.rate * (k**2 * lam / TWO_PI)     # gamma_k (USA, mass 1), d = 2
        if self.model == "sa":
            rates = rates / self._z_uniform(lam[0])
        self.linear_rates = rates

    def set_background(self, pbar: float) -> None:
        self.background = float(pbar)

    def _z_uniform(self, lam0: float) -> float:
        return self.beta * lam0 / TWO_PI if self.beta > 0 else 1.0

    def _partition(self, c: np.ndarray) -> np.ndarray:
        return self.beta * c if self.beta > 0 else np.ones_like(c)

    # The state is the deviation q = p - pbar from the uniform density of the same mass
    # (pbar = ``background``). Fluxes are split as (pbar + q) v = pbar v + q v, so a
    # perturbation of 1e-8 keeps full relative precision.
    def potential(self, q: np.ndarray) -> np.ndarray:
        """c - lambda_0 pbar, c = (W * mu)(theta_j), in the internal (scaled) kernel unit."""
        return self._conv_op(q)[0]

    def centre_velocity(self, q: np.ndarray) -> np.ndarray:
        """v(theta_j) at cell centres (spectral derivative), in the run's time unit."""
        if self.model == "usa":
            v = self._grad_op(q)[0]
            if self._atoms is not None:
                v += self._atom_g
            v *= self.rate
            return v
        c, g = self._both_op(q)
        c += self._conv[0].real * self.background
        if self._atoms is not None:
            c += self._atom_c
            g += self._atom_g
        return g / self._partition(c)

    def face_velocity(self, q: np.ndarray) -> np.ndarray:
        """v_{j+1/2} = (c_{j+1} - c_j)/dx (USA), divided by Z at the face (SA)."""
        c = self.potential(q)
        if self._atoms is not None:
            c = c + self._atom_c
        dc = np.empty_like(c)
        np.subtract(c[1:], c[:-1], out=dc[:-1])
        dc[-1] = c[0] - c[-1]
        if self.model == "usa":
            return dc * (self.rate / self.dx)
        cf = np.empty_like(c)
        np.add(c[1:], c[:-1], out=cf[:-1])
        cf[-1] = c[0] + c[-1]
        cf = 0.5 * cf + self._conv[0].real * self.background
        return dc / (self.dx * self._partition(cf))

    def energy(self, q: np.ndarray) -> tuple[float, float]:
        """(E, Ebar) of the discrete energy (dx/2) p.Cp (C the convolution on cell averages),
        plus the density-atom and atom-atom terms when atoms are set.

        Per Fourier mode it is sinc(k dx/2) = 1 - O((k dx)^2) times the continuous energy of
        the band-limited density; it is the quantity fv2 keeps non-decreasing. With
        p = pbar + q, sum q = 0 and C pbar = lambda_0 pbar.
        """
        pbar = self.background
        e_scaled = 0.5 * self.dx * (self.cells * self._conv[0].real * pbar * pbar
                                    + float(np.dot(q, self.potential(q))))
        if self._atoms is not None:
            # + sum_k m_k (W * density)(theta_k) + (1/2) sum_jk m_j m_k W(cos(theta_j - theta_k))
            x, m = self._atoms
            c_p = self.grid.at_points(self._conv * self.grid.fft.forward(q), x)
            c_p += self._conv[0].real * pbar
            c_aa, _ = self._pair_potential(x, x, m)
            e_scaled += float(m @ c_p) + 0.5 * float(m @ c_aa)
        return energy_from_scaled(e_scaled, self.beta, self.model, self.time_unit)

    def describe(self) -> dict[str, Any]:
        if self.user_kernel is not None:
            kern = self.user_kernel.describe()
        else:
            kern = ExponentialKernel(self.beta, self.time_unit).name
        return {"drift": self.name, "kernel": kern, "model": self.model,
                "time_unit": self.time_unit,
                "velocity": "USA v = d_theta (W*mu); SA v = d_theta log Z / beta, "
                            "Z = beta W*mu"}
