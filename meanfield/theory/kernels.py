"""Interaction kernels W(t), t = <x, y> in [-1, 1].

The exponential kernel W(t) = e^{beta t}/beta drives USA; SA divides the same convolution
by Z(x) = integral e^{beta <x,y>} dmu(y) = beta (W * mu)(x).  Two time units:

* ``raw``:    W(t) = e^{beta t} / beta (docs/conventions.md);
* ``scaled``: W(t) = e^{beta (t-1)} / beta, i.e. time rescaled by e^{beta}; every USA rate
  in this unit is the raw rate times e^{-beta}, and nothing overflows for any beta.

beta = 0 is the Kuramoto-like limit: W(t) = (e^{beta t} - 1)/beta -> t.  The dropped
constant 1/beta does not move anything (only grad W*mu enters), so at beta = 0 the kernel
is W(t) = t, lambda_0 = 0, lambda_1 = |S^{d-1}|/d, lambda_k = 0 for k >= 2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln, ive

from meanfield.theory.checks import check_beta, check_dim, check_time_unit
from meanfield.theory.errors import InputError
from meanfield.theory.funk_hecke import funk_hecke_quadrature
from meanfield.theory.geometry import gegenbauer_index, log_sphere_area


class Kernel:
    """Base class. Subclasses give W, its derivatives and (optionally) closed-form lambda_k."""

    #: the kernel is e^{log_scale} times what __call__ returns in the raw unit
    log_scale: float = 0.0
    name: str = "kernel"

    def __call__(self, t):
        raise NotImplementedError

    def derivative(self, t, order: int = 1):
        """d^n W / dt^n at t (n = ``order``)."""
        raise NotImplementedError

    def funk_hecke(self, k, dim: int = 2):
        """Funk-Hecke coefficients lambda_k on S^{d-1} (default: quadrature)."""
        return funk_hecke_quadrature(self, k, dim)

    def log_funk_hecke(self, k, dim: int = 2):
        with np.errstate(divide="ignore"):
            return np.log(np.abs(self.funk_hecke(k, dim)))

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class ExponentialKernel(Kernel):
    """W(t) = e^{beta t}/beta (raw) or e^{beta (t-1)}/beta (scaled); W(t) = t at beta = 0.

    Parameters
    ----------
    beta : float
        Inverse temperature, finite and >= 0.
    time_unit : {"raw", "scaled"}
        ``scaled`` multiplies the kernel by e^{-beta} (time measured in units of e^{-beta}).
    """

    beta: float
    time_unit: str = "raw"

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", check_beta(self.beta))
        check_time_unit(self.time_unit, "usa")

    @property
    def log_scale(self) -> float:  # type: ignore[override]
        return self.beta if self.time_unit == "scaled" else 0.0

    @property
    def name(self) -> str:  # type: ignore[override]
        if self.beta == 0:
            return "W(t) = t (beta = 0 limit of e^{beta t}/beta, constant dropped)"
        if self.time_unit == "scaled":
            return f"W(t) = exp(beta (t - 1)) / beta, beta = {self.beta:g}"
        return f"W(t) = exp(beta t) / beta, beta = {self.beta:g}"

    def __call__(self, t):
        t = np.asarray(t, dtype=float)
        if self.beta == 0:
            return t.copy()
        return np.exp(self.beta * t - self.log_scale) / self.beta

    def derivative(self, t, order: int = 1):
        """W^{(n)}(t) = beta^{n-1} e^{beta t - log_scale}; at beta = 0: 1 for n = 1, else 0."""
        t = np.asarray(t, dtype=float)
        if order == 0:
            return self(t)
        if self.beta == 0:
            return np.full_like(t, 1.0 if order == 1 else 0.0)
        return np.exp((order - 1) * np.log(self.beta) + self.beta * t - self.log_scale)

    def log_derivative(self, t, order: int):
        """log W^{(n)}(t) (n >= 1, beta > 0): overflow-free for any beta."""
        t = np.asarray(t, dtype=float)
        return (order - 1) * np.log(self.beta) + self.beta * t - self.log_scale

    def log_funk_hecke(self, k, dim: int = 2):
        """log lambda_k in this kernel's time unit (closed form, never overflows).

        lambda_k = |S^{d-1}| beta^{-1} Gamma(d/2) (2/beta)^{nu} I_{k+nu}(beta), nu = (d-2)/2.
        k may be real (>= 0) and broadcasts against nothing else; -inf where lambda_k = 0.
        """
        d = check_dim(dim)
        k = np.asarray(k, dtype=float)
        nu = gegenbauer_index(d)
        b = self.beta
        if b == 0:
            with np.errstate(divide="ignore"):
                return np.where(k == 1, log_sphere_area(d) - np.log(d), -np.inf)
        with np.errstate(divide="ignore"):
            log_i = np.log(ive(k + nu, b)) + b  # log I_{k+nu}(b)
        return (log_sphere_area(d) - np.log(b) + gammaln(0.5 * d) + nu * np.log(2.0 / b)
                + log_i - self.log_scale)

    def funk_hecke(self, k, dim: int = 2):
        """lambda_k (closed form via scipy.special.ive); inf only if it exceeds float64."""
        with np.errstate(over="ignore"):
            return np.exp(self.log_funk_hecke(k, dim))

    def log_partition_uniform(self, dim: int = 2) -> float:
        """log Z_inf, Z_inf = int e^{beta<x,y>} p_inf dsigma = Gamma(d/2)(2/beta)^nu I_nu(beta).

        In the kernel's time unit (scaled: times e^{-beta}); 0 at beta = 0.
        """
        d = check_dim(dim)
        b = self.beta
        if b == 0:
            return 0.0
        nu = gegenbauer_index(d)
        return float(gammaln(0.5 * d) + nu * np.log(2.0 / b) + np.log(ive(nu, b)) + b
                     - self.log_scale)

    def partition(self, conv):
        """Z = beta (W * mu) for the SA normalisation (Z = 1 at beta = 0)."""
        if self.beta == 0:
            return np.ones_like(conv)
        return self.beta * conv


class CallableKernel(Kernel):
    """A user kernel W(t) on [-1, 1] given as a vectorised Python callable (USA only).

    ``derivative`` may be given as a callable dW/dt. Otherwise derivatives come from a
    Chebyshev interpolant of W whose degree doubles (up to 2048) until its trailing
    coefficients fall below 1e-14 of the largest: spectrally accurate for analytic kernels,
    exact for polynomials.
    """

    def __init__(self, func: Callable, derivative: Callable | None = None,
                 name: str = "user kernel") -> None:
        if not callable(func):
            raise InputError("kernel", "must be a callable W(t) on [-1, 1]", type(func).__name__)
        probe = np.asarray(func(np.linspace(-1.0, 1.0, 5)), dtype=float)
        if probe.shape != (5,) or not np.all(np.isfinite(probe)):
            raise InputError("kernel", "must map an array of t in [-1, 1] to finite values of "
                             "the same shape")
        self._func = func
        self._dfunc = derivative
        self._cheb = None
        self.name = name

    def __call__(self, t):
        return np.asarray(self._func(np.asarray(t, dtype=float)), dtype=float)

    def chebyshev(self) -> np.polynomial.Chebyshev:
        """The adaptive Chebyshev interpolant of W on [-1, 1] (built once)."""
        if self._cheb is None:
            deg = 16
            while True:
                cheb = np.polynomial.Chebyshev.interpolate(self, deg)
                c = np.abs(cheb.coef)
                if np.max(c[-4:]) <= 1e-14 * np.max(c) or deg >= 2048:
                    break
                deg *= 2
            self._cheb = cheb.trim(1e-17 * np.max(c))
        return self._cheb

    def derivative(self, t, order: int = 1):
        t = np.asarray(t, dtype=float)
        if order == 0:
            return self(t)
        if order == 1 and self._dfunc is not None:
            return np.asarray(self._dfunc(t), dtype=float)
        return self.chebyshev().deriv(order)(t)


def exponential_kernel(beta: float, time_unit: str = "raw") -> ExponentialKernel:
    """Shorthand for :class:`ExponentialKernel`."""
    return ExponentialKernel(beta, time_unit)


def ring_average(beta: float, theta, theta_ring, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The exponential kernel averaged over a ring of S^{d-1}, and its polar derivative.

    A ring is the (d-2)-sphere of the points y at polar angle theta' from the pole e, with
    its normalised uniform measure (d = 2: the two points +-theta'; theta' = 0 or pi: the
    pole itself). For x at polar angle theta, <x, y> = cos(theta) cos(theta') +
    sin(theta) sin(theta') w_1 with w uniform on S^{d-2}, and E e^{z w_1} =
    Gamma(nu+1) (2/z)^nu I_nu(z), nu = (d-3)/2. Returns, for z = beta sin(theta) sin(theta'),

        a = avg_ring e^{beta(<x,y> - 1)}
          = e^{beta (cos(theta - theta') - 1)} Gamma(nu+1) (2/z)^nu ive(nu, z),
        g = d/dtheta avg_ring W_scaled(<x,y>),   W_scaled(t) = e^{beta(t-1)}/beta,
          = e^{beta (cos(theta - theta') - 1)} Gamma(nu+1) (2/z)^nu
            [cos(theta) sin(theta') ive(nu+1, z) - sin(theta) cos(theta') ive(nu, z)]

    (d/dz z^-nu I_nu = z^-nu I_{nu+1}); every factor is <= 1, so nothing overflows for any
    beta, and at beta = 0 g is the derivative of avg <x, y> = cos(theta) cos(theta').
    d = 2 uses ive(-1/2, z) (2/z)^{-1/2} Gamma(1/2) = (1 + e^{-2z})/2, and its derivative
    (1 - e^{-2z})/2, directly. Broadcasts over theta and theta_ring.
    """
    beta = check_beta(beta)
    dim = check_dim(dim)
    th, tr = np.broadcast_arrays(np.asarray(theta, float), np.asarray(theta_ring, float))
    z = beta * np.sin(th) * np.sin(tr)
    z = np.maximum(z, 0.0)  # rounding at the poles
    if dim == 2:
        e2 = np.exp(-2.0 * z)
        lam, dlam = 0.5 * (1.0 + e2), 0.5 * (1.0 - e2)
    else:
        nu = 0.5 * (dim - 3)
        small = z < 1e-8  # series: Lambda = 1 + O(z^2), Lambda' = z/(2(nu+1)) + O(z^3)
        zs = np.where(small, 1.0, z)
        logc = gammaln(nu + 1.0) + nu * np.log(2.0 / zs)
        lam = np.where(small, 1.0 - z, np.exp(logc) * ive(nu, zs))
        dlam = np.where(small, z / (2.0 * (nu + 1.0)), np.exp(logc) * ive(nu + 1.0, zs))
    envelope = np.exp(beta * (np.cos(th - tr) - 1.0))
    a = envelope * lam
    g = envelope * (np.cos(th) * np.sin(tr) * dlam - np.sin(th) * np.cos(tr) * lam)
    return a, g
