"""Finite-volume schemes for the continuity equation on the circle S^1, with any drift.

    d_t p + d_theta(p v) = 0,   v = v[mu] from a drift (``solvers.drifts``; default: the
                                USA/SA self-attention convolution)

p is the density w.r.t. d theta stored as averages over M uniform cells of [0, 2 pi)
(``solvers.circle_grid.CircleGrid``). The drift gives the velocity at cell faces (fv2) or
centres (rusanov, lf); the scheme turns it into a flux and a conservative update.

Schemes (registry ``SCHEMES``):

* ``fv2``     second-order positivity-preserving upwind finite volume (Carrillo-Chertock-
              Huang 2015 type): face velocities v_{j+1/2} from the drift, generalised-minmod
              piecewise-linear reconstruction, upwind flux v+ p^E_j + v- p^W_{j+1}. Mass
              exact; positivity for dt max|v| <= dx/2 per Euler stage; with the convolution
              drift (v_{j+1/2} a difference of the potential) d/dt of the discrete energy
              (dx/2) p.Cp is dx sum_j F_{j+1/2} v_{j+1/2} >= 0 (C a symmetric circulant).
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

from meanfield.theory.checks import check_positive
from meanfield.theory.errors import InputError
from meanfield.theory.kernels import Kernel
from solvers.base import DensityScheme, InMemory
from solvers.circle_grid import TWO_PI, CircleGrid
from solvers.drifts import Convolution
from solvers.stepping import (
    SolverError,
    StepStats,
    advance,
    integrators,
    output_times,
    run_outputs,
)


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
    """Common machinery: grid, drift, diagnostics, time stepping.

    Parameters
    ----------
    cells : int
        Number of uniform cells M (>= 8).
    beta, model, time_unit, kernel
        Parameters of the default drift, :class:`solvers.drifts.Convolution` (USA/SA
        self-attention; ``time_unit="scaled"`` measures time in units where the kernel is
        e^{beta(t-1)}/beta; ``kernel`` a user kernel, USA only). Ignored with ``drift``.
    drift : a drift (``solvers.contracts.Drift``), optional
        Any velocity field of ``solvers.drifts`` instead of the default convolution.
    cfl : float in (0, 1]
        Fraction of the scheme's positivity/CFL bound used by the adaptive step.
    dt : float, optional
        Fixed time step (a CFL violation warns; negative density stops the run).
    accuracy : float
        Adaptive steps also satisfy dt <= accuracy / gamma_max (the drift's linear theory, when
        it has one) so the linear phase is resolved.
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
                 time_unit: str = "raw", kernel: Kernel | None = None, drift=None,
                 cfl: float = 0.4, dt: float | None = None, accuracy: float = 0.02,
                 integrator: str | None = None, fft_threads: int | None = None,
                 fft_backend: str = "auto", fft_planner: str = "estimate") -> None:
        self.grid = CircleGrid(cells, fft_threads, fft_backend, fft_planner)
        self.cells = self.grid.cells
        self.cfl = check_positive(cfl, "cfl")
        if self.cfl > 1:
            raise InputError("cfl", "must be in (0, 1] (fraction of the positivity bound)",
                             cfl)
        self.fixed_dt = None if dt in (None, 0) else check_positive(dt, "dt")
        self.accuracy = check_positive(accuracy, "accuracy")
        integ = integrator or self.default_integrator
        allowed = integrators("grid")
        if integ not in allowed:
            raise InputError("integrator", f"must be one of {', '.join(allowed)}", integ)
        self.integrator = integ
        self.drift = drift if drift is not None else Convolution(beta, model, time_unit,
                                                                 kernel)
        self.drift.bind(self.grid)
        self.dx = self.grid.dx
        self.theta = self.grid.theta
        self.fft = self.grid.fft
        self.max_degree = self.cells // 2
        self.reference_density = 1.0 / TWO_PI
        self.max_speed = 0.0
        self.lf_dt_per_dx: float | None = None
        self.set_background(1.0 / TWO_PI)

    # ------------------------------------------------------------------ drift
    @property
    def growth_rates(self) -> np.ndarray | None:  # type: ignore[override]
        """gamma_k of the drift's linearisation on this grid (None if it has none)."""
        return self.drift.linear_rates

    @property
    def beta(self) -> float:
        return getattr(self.drift, "beta", math.nan)

    @property
    def model(self) -> str | None:
        return getattr(self.drift, "model", None)

    @property
    def time_unit(self) -> str:
        return getattr(self.drift, "time_unit", "raw")

    def set_background(self, pbar: float) -> None:
        self.background = float(pbar)
        self.drift.set_background(self.background)

    def face_velocity(self, q: np.ndarray) -> np.ndarray:
        return self.drift.face_velocity(q)

    def centre_velocity(self, q: np.ndarray) -> np.ndarray:
        return self.drift.centre_velocity(q)

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
        spec = self.grid.fourier_amplitudes(q, self.background)
        return spec if kmax is None else spec[: kmax + 1]

    def diagnostics(self, q: np.ndarray, modes: int | None = None) -> dict[str, np.ndarray | float]:
        """mass, min/max density, energy E and Ebar, angular momentum, spectrum, dominant mode.

        energy/ebar: the drift's interaction energy (``Convolution.energy``: the discrete
        (dx/2) p.Cp, non-decreasing under fv2) in the run's time unit, NaN for drifts without
        one. angular_momentum = integral v p d theta (zero for USA); max_speed = max |v| at
        cell centres; tv_distance = (1/2) integral |p - pbar| (total variation to the
        uniform density of the same mass); spectrum = ||P_k mu||_{L2(d theta)} =
        |p_hat_k|/sqrt(pi) (k >= 1; |p_hat_0|/sqrt(2 pi)) for k = 0..modes; dominant_mode =
        argmax_{1 <= k <= modes} of it (modes defaults to max(16, 4 k_max)).
        """
        modes = self.default_modes() if modes is None else int(modes)
        pbar = self.background
        en = self.drift.energy(q)
        energy, ebar = en if en is not None else (math.nan, math.nan)
        v = self.centre_velocity(q)
        spec = self.grid.spectrum(q, pbar)
        return {
            "mass": self.dx * (self.cells * pbar + float(q.sum())),
            "min_density": pbar + float(q.min()),
            "max_density": pbar + float(q.max()),
            "energy": float(energy),
            "ebar": float(ebar),
            "angular_momentum": self.dx * (pbar * float(v.sum()) + float(np.dot(v, q))),
            "max_speed": float(np.abs(v).max()),
            "dominant_mode": int(np.argmax(spec[1 : modes + 1]) + 1),
            "tv_distance": 0.5 * self.dx * float(np.abs(q).sum()),
            "spectrum": spec[: modes + 1].copy(),
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

    def mass_of(self, p: np.ndarray) -> float:
        """integral p d theta = dx sum_j p_j of a density of cell averages."""
        return self.dx * float(np.sum(p))

    def split(self, p: np.ndarray) -> np.ndarray:
        """Set the background pbar = mean(p) and return the deviation q = p - pbar."""
        self.set_background(float(np.mean(p)))
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
                       fixed_dt=self.step_size, stats=stats, deadline=deadline,
                       max_steps=max_steps)

    @property
    def step_size(self) -> float | None:
        """The fixed time step (None: adaptive)."""
        return self.fixed_dt

    def run(self, p0, t_end: float, times: Sequence[float] | None = None, *,
            observer: Callable | None = None, modes: int | None = None,
            progress: bool = False) -> CircleResult:
        """Integrate from t = 0 to ``t_end``; store density and diagnostics at ``times``.

        ``times`` (default: 0 and t_end) are landed on exactly; ``observer(t, p, diag)`` is
        called at each. Raises :class:`~solvers.stepping.SolverError` on a negative or
        non-finite density.
        """
        q = self.split(self.check_density(p0))
        t_end, out_times = output_times(times, t_end)
        r = run_outputs(InMemory(self, modes), q, out_times, progress=progress, snapshot=self.join,
                        observer=observer)
        return CircleResult(self.theta.copy(), r["times"], r["snapshots"], r["diagnostics"],
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

    @property
    def step_size(self) -> float | None:
        """The fixed time step: dt_per_dx * dx (the paper's), else ``dt`` (None: adaptive)."""
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
