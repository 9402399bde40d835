"""Finite-volume schemes for the mean-field equation on the circle S^1.

    d_t p + d_theta(p v) = 0,   v = d_theta (W * mu)           (USA)
                                v = beta^{-1} d_theta log Z    (SA, Z = beta W * mu)

p is the density w.r.t. d theta stored as averages over M uniform cells of [0, 2 pi)
(cell j is [j dx, (j+1) dx), centre (j + 1/2) dx). The convolution is a true circular
convolution by FFT with the Funk-Hecke multipliers lambda_k = 2 pi I_k(beta)/beta of the
theory toolkit, corrected for cell averaging, so it is spectrally accurate.

Schemes (registry ``SCHEMES``):

* ``fv2``     second-order positivity-preserving upwind finite volume (Carrillo-Chertock-
              Huang 2015 type): face velocity v_{j+1/2} = (c_{j+1} - c_j)/dx of the potential
              c = W * mu at cell centres, generalised-minmod piecewise-linear reconstruction,
              upwind flux v+ p^E_j + v- p^W_{j+1}. Mass exact; positivity for dt max|v| <=
              dx/2 per Euler stage; d/dt of the discrete energy (dx/2) p.Cp is
              dx sum_j F_{j+1/2} v_{j+1/2} >= 0 (C is a symmetric circulant).
* ``rusanov`` first-order local Lax-Friedrichs: cell-centre velocities, flux
              (f_j + f_{j+1})/2 - a (p_{j+1} - p_j)/2 with a = max(|v_j|, |v_{j+1}|); its
              diffusion a dx/2 vanishes with the velocity near the uniform state.
* ``lf``      classical Lax-Friedrichs (seed 003): p_j <- (p_{j-1} + p_{j+1})/2
              - dt/(2 dx) (f_{j+1} - f_{j-1}), forward Euler by construction. Its numerical
              diffusion is nu = dx^2 / (2 dt), so mode k grows at gamma_k - nu k^2 to leading
              order. ``dt_per_dx = c`` reproduces the paper's fixed dt = c dx.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from meanfield.checks import check_beta, check_model, check_positive, check_time_unit
from meanfield.coefficients import circle_multipliers
from meanfield.errors import InputError
from meanfield.kernels import ExponentialKernel, Kernel
from solvers.base import DensityScheme
from solvers.fft import CircularConvolution, RealFFT
from solvers.integrators import (
    INTEGRATORS,
    SolverError,
    StepStats,
    advance,
    output_times,
    run_outputs,
)

TWO_PI = 2.0 * math.pi


@dataclass
class CircleResult:
    """What ``run`` returns: output times, densities (n_times, M) and diagnostics."""

    theta: np.ndarray
    times: np.ndarray
    density: np.ndarray
    diagnostics: dict[str, np.ndarray]
    steps: int
    max_courant: float
    scheme: str
    meta: dict = field(default_factory=dict)


class CircleScheme(DensityScheme):
    """Common machinery: grid, kernel multipliers, FFT plans, diagnostics, time stepping.

    Parameters
    ----------
    cells : int
        Number of uniform cells M (>= 8).
    beta : float
        Inverse temperature (>= 0) of the exponential kernel; ignored if ``kernel`` given.
    model : {"usa", "sa"}
    time_unit : {"raw", "scaled"}
        ``scaled`` (USA): time in units where the kernel is e^{beta(t-1)}/beta.
    kernel : Kernel, optional
        A user kernel (USA only) instead of the exponential one.
    cfl : float in (0, 1]
        Fraction of the scheme's positivity/CFL bound used by the adaptive step.
    dt : float, optional
        Fixed time step (a CFL violation warns; negative density stops the run).
    accuracy : float
        Adaptive steps also satisfy dt <= accuracy / gamma_max so the linear phase is
        resolved (DESIGN.md section 2).
    integrator : {"ssprk3", "euler"}
    fft_threads : int, optional
    fft_planner : {"estimate", "measure"}
        See :class:`solvers.fft.RealFFT`: ``estimate`` is bit-reproducible across processes.
    """

    name = "base"
    #: dt <= stable_dt() keeps a forward-Euler stage positivity preserving
    positivity_factor = 1.0
    default_integrator = "ssprk3"

    def __init__(self, cells: int, beta: float = 5.0, model: str = "usa", *,
                 time_unit: str = "raw", kernel: Kernel | None = None, cfl: float = 0.4,
                 dt: float | None = None, accuracy: float = 0.02,
                 integrator: str | None = None, fft_threads: int | None = None,
                 fft_backend: str = "auto", fft_planner: str = "estimate") -> None:
        self.cells = check_positive(cells, "cells", integer=True, minimum=8, inclusive=True)
        self.model = check_model(model)
        self.time_unit = check_time_unit(time_unit, model)
        self.cfl = check_positive(cfl, "cfl")
        if self.cfl > 1:
            raise InputError("cfl", "must be in (0, 1] (fraction of the positivity bound)",
                             cfl)
        self.fixed_dt = None if dt in (None, 0) else check_positive(dt, "dt")
        self.accuracy = check_positive(accuracy, "accuracy")
        integ = integrator or self.default_integrator
        if integ not in INTEGRATORS:
            raise InputError("integrator", f"must be one of {', '.join(INTEGRATORS)}", integ)
        self.integrator = integ
        if kernel is None:
            self.beta = check_beta(beta)
            if model == "usa" and time_unit == "raw" and self.beta > 700:
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
        m = self.cells
        self.dx = TWO_PI / m
        self.theta = (np.arange(m) + 0.5) * self.dx
        self.fft = RealFFT(m, fft_threads, fft_backend, fft_planner)
        self._conv = circle_multipliers(self.kernel, m)             # c = W*mu at centres
        self._grad = circle_multipliers(self.kernel, m, derivative=1)  # d/dtheta W*mu
        # planned once per run: c alone, v alone (USA), or c and v from one transform (SA)
        ops = (fft_threads, fft_backend, fft_planner)
        self._conv_op = CircularConvolution(m, [self._conv], *ops)
        self._grad_op = CircularConvolution(m, [self._grad], *ops)
        self._both_op = CircularConvolution(m, [self._conv, self._grad], *ops)
        k = np.arange(m // 2 + 1)
        self._sinc = np.sinc(k * self.dx / TWO_PI)
        lam = circle_multipliers(self.kernel, m, cell_averages=False).real
        self.growth_rates = self.rate * (k**2 * lam / TWO_PI)     # gamma_k (USA), d = 2
        if model == "sa":
            self.growth_rates = self.growth_rates / self._z_uniform(lam[0])
        self.gamma_max = float(self.growth_rates[1:].max())
        self.reference_density = 1.0 / TWO_PI
        self.background = 1.0 / TWO_PI
        self.max_speed = 0.0
        self.lf_dt_per_dx: float | None = None

    # ------------------------------------------------------------------ velocity helpers
    def _z_uniform(self, lam0: float) -> float:
        return self.beta * lam0 / TWO_PI if self.beta > 0 else 1.0

    def _partition(self, c: np.ndarray) -> np.ndarray:
        return self.beta * c if self.beta > 0 else np.ones_like(c)

    # The state is the deviation q = p - pbar from the uniform density of the same mass
    # (pbar = ``self.background``, constant since mass is conserved). Fluxes are split as
    # (pbar + q) v = pbar v + q v, so a perturbation of 1e-8 keeps full relative precision
    # instead of the ~8 digits it has when added to 1/(2 pi).
    def potential(self, q: np.ndarray) -> np.ndarray:
        """c - lambda_0 pbar, c = (W * mu)(theta_j), in the internal (scaled) kernel unit."""
        return self._conv_op(q)[0]

    def centre_velocity(self, q: np.ndarray) -> np.ndarray:
        """v(theta_j) at cell centres (spectral derivative), in the run's time unit."""
        if self.model == "usa":
            v = self._grad_op(q)[0]
            v *= self.rate
            return v
        c, g = self._both_op(q)
        c += self._conv[0].real * self.background
        return g / self._partition(c)

    def face_velocity(self, q: np.ndarray) -> np.ndarray:
        """v_{j+1/2} = (c_{j+1} - c_j)/dx (USA), divided by Z at the face (SA)."""
        c = self.potential(q)
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

    # ------------------------------------------------------------------ scheme interface
    def rhs(self, p: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def stable_dt(self) -> float:
        """Positivity/CFL bound for the state of the last ``rhs`` call."""
        if self.max_speed <= 0:
            return math.inf
        return self.positivity_factor * self.dx / self.max_speed

    def euler_update(self, p: np.ndarray, dt: float, k: np.ndarray) -> np.ndarray:
        return p + dt * k

    # ------------------------------------------------------------------ diagnostics
    def fourier_amplitudes(self, q: np.ndarray, kmax: int | None = None) -> np.ndarray:
        """|p_hat_k| = |integral p e^{-ik theta} d theta|, k = 0..kmax (p_hat_0 = mass).

        Same convention as c_k = N^{-1} sum_j e^{-ik theta_j} for N tokens.
        """
        spec = np.abs(self.fft.forward(q)) * self.dx / self._sinc
        spec[0] = TWO_PI * self.background + self.dx * float(q.sum())
        return spec if kmax is None else spec[: kmax + 1]

    def default_modes(self) -> int:
        return int(min(self.cells // 2, max(16, 4 * self.k_max)))

    def diagnostics(self, q: np.ndarray, modes: int | None = None) -> dict[str, np.ndarray | float]:
        """mass, min/max density, energy E and Ebar, angular momentum, |p_hat_k|, dominant mode.

        E = (1/2) iint W dmu dmu in the run's time unit, evaluated as the scheme's discrete
        energy (dx/2) p.Cp (C the convolution on cell averages): the quantity fv2 keeps
        non-decreasing; per Fourier mode it is sinc(k dx/2) = 1 - O((k dx)^2) times the
        continuous energy of the band-limited density (raw USA/SA: overflows to inf only
        beyond beta ~ 709; Ebar never does). Ebar = 2 beta e^{-beta} E (at beta = 0, where
        W(t) = t, Ebar = |integral x dmu|^2). angular_momentum = integral v p d theta, zero for
        USA; max_speed = max |v| at cell centres; tv_distance = (1/2) integral |p - pbar|
        (total variation to the uniform density of the same mass); dominant_mode =
        argmax_{1 <= k <= modes} |p_hat_k| (modes defaults to max(16, 4 k_max): beyond that
        a cluster's spectrum is flat and the arg max would pick noise).
        """
        modes = self.default_modes() if modes is None else int(modes)
        # (dx/2) p.Cp with p = pbar + q, sum q = 0 and C pbar = lambda_0 pbar
        pbar = self.background
        e_scaled = 0.5 * self.dx * (self.cells * self._conv[0].real * pbar * pbar
                                    + float(np.dot(q, self.potential(q))))
        if math.isnan(self.beta):  # user kernel: no Ebar
            ebar, energy = float("nan"), e_scaled
        elif self.beta == 0:  # W(t) = t: E = |m|^2 / 2, Ebar := |m|^2
            ebar, energy = 2.0 * e_scaled, e_scaled
        else:
            ebar = 2.0 * self.beta * e_scaled
            raw = self.model == "sa" or self.time_unit == "raw"
            energy = math.exp(math.log(e_scaled) + self.beta) if raw and \
                math.log(e_scaled) + self.beta < 709.0 else (math.inf if raw else e_scaled)
        v = self.centre_velocity(q)
        amps = self.fourier_amplitudes(q)
        return {
            "mass": self.dx * (self.cells * pbar + float(q.sum())),
            "min_density": pbar + float(q.min()),
            "max_density": pbar + float(q.max()),
            "energy": float(energy),
            "ebar": float(ebar),
            "angular_momentum": self.dx * (pbar * float(v.sum()) + float(np.dot(v, q))),
            "max_speed": float(np.abs(v).max()),
            "dominant_mode": int(np.argmax(amps[1 : modes + 1]) + 1),
            "tv_distance": 0.5 * self.dx * float(np.abs(q).sum()),
            "fourier": amps[: modes + 1].copy(),
        }

    # ------------------------------------------------------------------ driving
    def check_density(self, p0) -> np.ndarray:
        p = np.asarray(p0, dtype=float)
        if p.shape != (self.cells,):
            raise InputError("p0", f"must be an array of length cells = {self.cells}",
                             f"shape {p.shape}")
        if not np.all(np.isfinite(p)) or p.min() < 0:
            raise InputError("p0", "must be finite and >= 0 everywhere")
        return p.copy()

    def split(self, p: np.ndarray) -> np.ndarray:
        """Set the background pbar = mean(p) and return the deviation q = p - pbar."""
        self.background = float(np.mean(p))
        return p - self.background

    def join(self, q: np.ndarray) -> np.ndarray:
        """The density p = pbar + q."""
        return self.background + q

    def min_density(self, q: np.ndarray) -> float:
        return self.background + float(q.min())

    def advance(self, q: np.ndarray, t: float, t_target: float, stats: StepStats | None = None,
                deadline: float | None = None,
                max_steps: int | None = None) -> tuple[np.ndarray, float]:
        """Step the deviation q (see ``split``) from t to exactly ``t_target``.

        Returns earlier if ``deadline`` (time.monotonic) passes or ``stats.steps`` reaches
        ``max_steps``.
        """
        return advance(self, q, t, t_target, integrator=self.integrator,
                       fixed_dt=self._fixed_dt(), stats=stats, deadline=deadline,
                       max_steps=max_steps)

    def _fixed_dt(self) -> float | None:
        return self.fixed_dt

    def run(self, p0, t_end: float, times: Sequence[float] | None = None, *,
            observer: Callable | None = None, modes: int | None = None) -> CircleResult:
        """Integrate from t = 0 to ``t_end``; store density and diagnostics at ``times``.

        ``times`` (default: 0 and t_end) are landed on exactly; ``observer(t, p, diag)`` is
        called at each. Raises :class:`~solvers.integrators.SolverError` on a negative or
        non-finite density.
        """
        q = self.split(self.check_density(p0))
        t_end, out_times = output_times(times, t_end)
        r = run_outputs(self, q, t_end, out_times, observer=observer, modes=modes)
        return CircleResult(self.theta.copy(), out_times, r["density"], r["diagnostics"],
                            r["stats"].steps, r["stats"].max_courant, self.name,
                            {"wall_seconds": r["wall_seconds"]})


class FiniteVolume(CircleScheme):
    """``fv2``: second-order positivity-preserving upwind finite volume (see module doc).

    ``theta`` in [1, 2] is the generalised-minmod parameter (2 = MC limiter); any value in
    that range keeps the reconstructed face values non-negative.
    """

    name = "fv2"
    positivity_factor = 0.5

    def __init__(self, cells: int, beta: float = 5.0, model: str = "usa", *,
                 limiter_theta: float = 2.0, **kw) -> None:
        super().__init__(cells, beta, model, **kw)
        if not 1.0 <= float(limiter_theta) <= 2.0:
            raise InputError("limiter_theta", "must be in [1, 2]", limiter_theta)
        self.limiter_theta = float(limiter_theta)

    def rhs(self, q: np.ndarray) -> np.ndarray:
        v = self.face_velocity(q)  # v[j] at face j + 1/2
        m = self.cells
        b = self._buffers()
        d, b1, b2, vp, vm = b["d"], b["b1"], b["b2"], b["vp"], b["vm"]
        np.subtract(q[1:], q[:-1], out=d[1:m])  # d[i] = q_i - q_{i-1}, periodic
        d[0] = q[0] - q[-1]
        d[m] = d[0]
        left, right = d[:m], d[1:]
        # generalised minmod: slope = minmod(th*left, (left+right)/2, th*right) (undivided)
        np.abs(left, out=b1)
        np.abs(right, out=b2)
        np.minimum(b1, b2, out=b1)
        b1 *= self.limiter_theta
        np.add(left, right, out=b2)
        np.abs(b2, out=b2)
        b2 *= 0.5
        np.minimum(b1, b2, out=b1)
        np.copysign(b1, left, out=b1)
        np.multiply(left, right, out=b2)
        b1 *= b2 > 0.0                           # b1 = slope_j
        # F_{j+1/2} = v+ (q_j + s_j/2) + v- (q_{j+1} - s_{j+1}/2) + pbar v
        np.maximum(v, 0.0, out=vp)
        np.minimum(v, 0.0, out=vm)
        self.max_speed = max(float(vp.max()), -float(vm.min()))
        b1 *= 0.5
        np.add(q, b1, out=b2)                    # east face value of cell j (minus pbar)
        b2 *= vp
        np.subtract(q, b1, out=b1)               # west face value of cell j (minus pbar)
        vm[:-1] *= b1[1:]
        vm[-1] *= b1[0]
        b2 += vm
        v *= self.background
        b2 += v                                  # b2 = flux at face j + 1/2
        out = np.empty(m)
        np.subtract(b2[1:], b2[:-1], out=out[1:])
        out[0] = b2[0] - b2[-1]
        out *= -1.0 / self.dx
        return out

    def _buffers(self) -> dict[str, np.ndarray]:
        buf = getattr(self, "_buf", None)
        if buf is None:
            m = self.cells
            buf = self._buf = {"d": np.empty(m + 1), "b1": np.empty(m), "b2": np.empty(m),
                               "vp": np.empty(m), "vm": np.empty(m)}
        return buf


class Rusanov(CircleScheme):
    """``rusanov``: first-order local Lax-Friedrichs with spectral cell-centre velocities."""

    name = "rusanov"

    def rhs(self, q: np.ndarray) -> np.ndarray:
        v = self.centre_velocity(q)
        a = np.abs(v)
        self.max_speed = float(a.max())
        f = (q + self.background) * v
        m = self.cells
        # face j+1/2 between cells j and j+1 (periodic); p_{j+1} - p_j = q_{j+1} - q_j
        f_r = np.empty(m)
        f_r[:-1], f_r[-1] = f[1:], f[0]
        dq = np.empty(m)
        np.subtract(q[1:], q[:-1], out=dq[:-1])
        dq[-1] = q[0] - q[-1]
        a_r = np.empty(m)
        a_r[:-1], a_r[-1] = a[1:], a[0]
        flux = 0.5 * (f + f_r) - 0.5 * np.maximum(a, a_r) * dq
        out = np.empty(m)
        np.subtract(flux[1:], flux[:-1], out=out[1:])
        out[0] = flux[0] - flux[-1]
        out *= -1.0 / self.dx
        return out


class LaxFriedrichs(CircleScheme):
    """``lf``: classical Lax-Friedrichs, forward Euler (numerical diffusion dx^2/(2 dt)).

    ``dt_per_dx = c`` fixes dt = c dx as in seed 003 (0.05 in the paper, 0.02 in its code);
    otherwise ``dt`` or the adaptive step are used.
    """

    name = "lf"
    default_integrator = "euler"

    def __init__(self, cells: int, beta: float = 5.0, model: str = "usa", *,
                 dt_per_dx: float | None = None, **kw) -> None:
        if kw.get("integrator") not in (None, "euler"):
            raise InputError("integrator", "Lax-Friedrichs is a forward-Euler scheme: use "
                             "'euler'", kw["integrator"])
        super().__init__(cells, beta, model, **kw)
        self.lf_dt_per_dx = None if dt_per_dx in (None, 0) else check_positive(
            dt_per_dx, "dt_per_dx")

    def _fixed_dt(self) -> float | None:
        if self.lf_dt_per_dx is not None:
            return self.lf_dt_per_dx * self.dx
        return self.fixed_dt

    def numerical_diffusion(self, dt: float) -> float:
        """nu = dx^2 / (2 dt): mode k is damped by nu k^2 to leading order."""
        return self.dx**2 / (2.0 * dt)

    def rhs(self, q: np.ndarray) -> np.ndarray:
        """Central flux difference -(f_{j+1} - f_{j-1})/(2 dx) (the averaging is separate)."""
        v = self.centre_velocity(q)
        self.max_speed = max(float(v.max()), -float(v.min()))  # no |v| temporary
        f = q + self.background
        f *= v
        out = np.empty_like(q)
        np.subtract(f[:-2], f[2:], out=out[1:-1])
        out[0] = f[-1] - f[1]
        out[-1] = f[-2] - f[0]
        out *= 0.5 / self.dx
        return out

    def euler_update(self, p: np.ndarray, dt: float, k: np.ndarray) -> np.ndarray:
        avg = k * dt
        avg[1:-1] += 0.5 * p[2:]
        avg[1:-1] += 0.5 * p[:-2]
        avg[0] += 0.5 * (p[1] + p[-1])
        avg[-1] += 0.5 * (p[0] + p[-2])
        return avg


SCHEMES: dict[str, type[CircleScheme]] = {
    "fv2": FiniteVolume,
    "rusanov": Rusanov,
    "lf": LaxFriedrichs,
}


def make_scheme(scheme: str, cells: int, beta: float = 5.0, model: str = "usa",
                **kw) -> CircleScheme:
    """Build a circle scheme by registry name (``fv2``, ``rusanov``, ``lf``)."""
    if scheme not in SCHEMES:
        raise InputError("scheme", f"must be one of {', '.join(SCHEMES)}", scheme)
    return SCHEMES[scheme](cells, beta, model, **kw)


__all__ = ["SCHEMES", "CircleResult", "CircleScheme", "FiniteVolume", "LaxFriedrichs",
           "Rusanov", "SolverError", "make_scheme"]
