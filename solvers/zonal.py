"""Finite-volume solver for zonal (axisymmetric) solutions on S^{d-1}, any d >= 2.

A zonal density depends only on the angle theta in [0, pi] to a pole e. With the weight
w(theta) = |S^{d-2}| sin^{d-2}(theta) (the area of the sphere at angle theta; |S^0| = 2), the
mass is integral_0^pi p w dtheta and the equation is one-dimensional:

    d_t (w p) + d_theta (w p v) = 0,   v = d_theta (W * mu)       (USA)
                                       v = d_theta (W * mu) / Z    (SA, Z = beta W * mu),

with zero flux at both poles. d = 2 is the circle restricted to even functions.

Discretisation (M uniform cells of [0, pi], cell j = [j h, (j+1) h], h = pi/M):

* State: averages p_j = m_j / W_j of p over the cells in the weighted measure,
  m_j = integral_cell p w dtheta, W_j = integral_cell w dtheta (Gauss-Legendre, 16 nodes per
  cell), stored as the deviation q = p - pbar from the uniform density of the same mass.
* Convolution by the Gegenbauer (Funk-Hecke) expansion: with the zonal harmonics
  Z_k(cos theta) = C_k^a(cos theta) normalised to integral Z_k^2 dsigma = 1 (a = (d-2)/2;
  orthonormal three-term recurrence, no overflow), A_jk = cell average of Z_k and
  D = diag(W_j), the coefficients of p are fitted by weighted least squares,
  a = (A^T D A)^{-1} A^T D p (exact for cell averages of any expansion of degree <= K), and
  the potential's cell averages are c = A diag(lambda_k) a, lambda_k from
  ``ExponentialKernel(beta, "scaled").funk_hecke(k, d)`` (USA raw multiplies by e^beta).
  The operator C = A Lambda (A^T D A)^{-1} A^T D is self-adjoint and >= 0 in the D inner
  product; it is precomputed as two (K+1) x M factors (cost O(M K) per evaluation).
* Face velocity v_{j+1/2} = (c_{j+1} - c_j)/h (SA: divided by Z = beta (c_j + c_{j+1})/2),
  upwind flux F = w_{j+1/2} (v+ p^E_j + v- p^W_{j+1}) with the generalised-minmod
  reconstruction of circle.py's fv2 (reflection at the poles), F = 0 at the poles,
  d m_j/dt = -(F_{j+1/2} - F_{j-1/2}). Hence: mass exact (telescoping), positivity for
  dt <= W_j / (2 max(outflow w |v|)) per Euler stage (``stable_dt``), and the discrete energy
  E_h = (1/2) sum_j W_j p_j c_j satisfies dE_h/dt = h sum_f F_f v_f (Z_f) >= 0, as the PDE.
  Second order: a degree-k mode grows at gamma_k (1 - k(k+d-2) h^2/12 + O(h^4)) (the
  difference quotient of cell averages; d = 2: exactly sinc^2(k h/2)).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from meanfield.theory.checks import (
    check_beta,
    check_dim,
    check_model,
    check_positive,
    check_time_unit,
)
from meanfield.theory.energy import energy_from_scaled
from meanfield.theory.errors import InputError
from meanfield.theory.geometry import log_area_sd2, zonal_harmonics
from meanfield.theory.kernels import ExponentialKernel
from solvers.base import DensityScheme, InMemory
from solvers.stepping import StepStats, advance, integrators, output_times, run_outputs

#: Gauss-Legendre nodes per cell for the cell integrals of w and of w Z_k
CELL_NODES = 16
#: Gegenbauer terms with lambda_k below this fraction of max lambda are dropped (default degree)
KERNEL_TAIL = 1e-17
#: largest beta for raw-time USA: the velocity scale e^beta must stay finite
RAW_BETA_LIMIT = 700.0


@dataclass
class ZonalResult:
    """What ``run`` returns: cell centres theta (radians from the pole), output times,
    densities (n_times, M) (cell averages, w.r.t. the surface measure) and diagnostics."""

    theta: np.ndarray
    edges: np.ndarray
    dim: int
    times: np.ndarray
    density: np.ndarray
    diagnostics: dict[str, np.ndarray]
    steps: int
    max_courant: float
    scheme: str
    meta: dict = field(default_factory=dict)


class Zonal(DensityScheme):
    """Zonal finite-volume scheme on S^{d-1} (see module doc for the formulas).

    Parameters
    ----------
    cells : int
        Number M of uniform cells of [0, pi] (>= 8).
    dim : int
        Ambient dimension d >= 2 (the sphere S^{d-1}).
    beta : float
        Inverse temperature (>= 0) of W(t) = e^{beta t}/beta.
    model : {"usa", "sa"}
    time_unit : {"raw", "scaled"}
        ``scaled`` (USA): time in units where the kernel is e^{beta(t-1)}/beta. Raw USA needs
        beta <= 700.
    degree : int, optional
        Gegenbauer truncation K (1 <= K <= M/2). Default: the smallest K beyond which
        lambda_k < 1e-17 max lambda, capped at M/2.
    cfl : float in (0, 1]
        Fraction of the positivity bound used by the adaptive step.
    dt : float, optional
        Fixed time step (a violation of the positivity bound warns).
    accuracy : float
        Adaptive steps also satisfy dt <= accuracy / gamma_max.
    integrator : {"ssprk3", "euler"}
    limiter_theta : float in [1, 2]
        Generalised-minmod parameter (2 = MC limiter).
    """

    name = "zonal-fv2"

    def __init__(self, cells: int, dim: int, beta: float = 5.0, model: str = "usa", *,
                 time_unit: str = "raw", degree: int | None = None, cfl: float = 0.4,
                 dt: float | None = None, accuracy: float = 0.02, integrator: str = "ssprk3",
                 limiter_theta: float = 2.0) -> None:
        self.cells = check_positive(cells, "cells", integer=True, minimum=8, inclusive=True)
        self.dim = check_dim(dim)
        self.beta = float(check_beta(beta))
        self.model = check_model(model)
        self.time_unit = check_time_unit(time_unit, model)
        self.cfl = check_positive(cfl, "cfl")
        if self.cfl > 1:
            raise InputError("cfl", "must be in (0, 1] (fraction of the positivity bound)", cfl)
        self.fixed_dt = None if dt in (None, 0) else check_positive(dt, "dt")
        self.accuracy = check_positive(accuracy, "accuracy")
        if integrator not in integrators("grid"):
            raise InputError("integrator", f"must be one of {', '.join(integrators('grid'))}",
                             integrator)
        self.integrator = integrator
        if not 1.0 <= float(limiter_theta) <= 2.0:
            raise InputError("limiter_theta", "must be in [1, 2]", limiter_theta)
        self.limiter_theta = float(limiter_theta)
        if model == "usa" and time_unit == "raw" and self.beta > RAW_BETA_LIMIT:
            raise InputError("time_unit", f"'raw' USA needs beta <= {RAW_BETA_LIMIT:g} (the "
                             "velocity scale e^beta overflows): use 'scaled'", time_unit)
        m, d = self.cells, self.dim
        self.kernel = ExponentialKernel(self.beta, "scaled")
        self.rate = math.exp(self.beta) if (model == "usa" and time_unit == "raw") else 1.0
        self._sa = model == "sa" and self.beta > 0  # SA at beta = 0 has Z = 1: same as USA
        kmax_allowed = m // 2
        if degree is None:
            self.degree = self._default_degree(kmax_allowed)
        else:
            self.degree = check_positive(degree, "degree", integer=True, minimum=1,
                                         inclusive=True)
            if self.degree > kmax_allowed:
                raise InputError("degree", f"must be <= cells/2 = {kmax_allowed}", degree)
        self.h = math.pi / m
        self.edges = np.arange(m + 1) * self.h
        self.theta = (np.arange(m) + 0.5) * self.h
        self.log_area_sd2 = log_area_sd2(d)
        area_sd2 = math.exp(self.log_area_sd2)
        # face weights w(theta_{j+1/2}); the poles carry no flux
        self.face_weight = area_sd2 * np.sin(self.edges) ** (d - 2)
        self.face_weight[[0, -1]] = 0.0
        # cell integrals by Gauss-Legendre: W_j and A_jk = (1/W_j) integral_cell Z_k w
        xg, wg = np.polynomial.legendre.leggauss(CELL_NODES)
        nodes = self.theta[:, None] + 0.5 * self.h * xg[None, :]
        wq = (0.5 * self.h) * wg[None, :] * area_sd2 * np.sin(nodes) ** (d - 2)
        self.cell_weight = wq.sum(axis=1)
        self._nodes, self._wq = nodes, wq
        self._amat = self.cell_average_matrix(self.degree)
        # weighted least squares a = (A^T D A)^{-1} A^T D p  (Cholesky of a K+1 Gram matrix)
        ad = self._amat.T * self.cell_weight[None, :]
        gram = ad @ self._amat
        chol = np.linalg.cholesky(gram)
        self._proj = np.linalg.solve(chol.T, np.linalg.solve(chol, ad))   # (K+1, M)
        ks = np.arange(self.degree + 1)
        self.lam = np.asarray(self.kernel.funk_hecke(ks, d), dtype=float)  # scaled unit
        self._synth = self._amat * self.lam[None, :]                      # (M, K+1)
        self.area = float(self.cell_weight.sum())
        self.reference_density = 1.0 / self.area
        self.max_speed = 0.0
        self.max_degree = self.degree
        self._outflow_rate = np.zeros(m)
        self.set_background(1.0 / self.area)

    def _default_degree(self, cap: int) -> int:
        """Smallest K with lambda_k < KERNEL_TAIL max lambda for all k > K (capped)."""
        ks = np.arange(0, cap + 2)
        with np.errstate(divide="ignore"):
            lg = self.kernel.log_funk_hecke(ks, self.dim)
        top = np.max(lg)
        above = np.nonzero(lg[1:] >= top + math.log(KERNEL_TAIL))[0]
        k = int(above[-1] + 1) if above.size else 1
        return int(min(max(k, 1), cap))

    # ------------------------------------------------------------------ geometry, bases
    def cell_average_matrix(self, degree: int) -> np.ndarray:
        """A_jk = (1/W_j) integral_cell Z_k(cos theta) w dtheta, k = 0..degree (M x (K+1)).

        Cell averages of an expansion sum_k a_k Z_k are A @ a (e.g. a sphere solution's m = 0
        coefficients for d = 3).
        """
        z = zonal_harmonics(np.cos(self._nodes), int(degree), self.dim)   # (K+1, M, nodes)
        return np.einsum("kjn,jn->jk", z, self._wq) / self.cell_weight[:, None]

    def cell_average(self, func: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """p_j = (1/W_j) integral_cell f(theta) w(theta) dtheta for a vectorised f(theta)."""
        vals = np.asarray(func(self._nodes), dtype=float)
        return (vals * self._wq).sum(axis=1) / self.cell_weight

    def uniform(self) -> np.ndarray:
        """p = 1/|S^{d-1}| (discrete area: the cell weights sum to |S^{d-1}| to round-off)."""
        return np.full(self.cells, 1.0 / self.area)

    def mode(self, k: int, amplitude: float) -> np.ndarray:
        """Cell averages of 1/|S^{d-1}| + alpha Z_k(cos theta) (mass exactly 1 for k >= 1)."""
        kk = check_positive(k, "initial.mode", integer=True, minimum=1, inclusive=True)
        alpha = float(amplitude)
        if not math.isfinite(alpha):
            raise InputError("initial.amplitude", "must be a finite number", amplitude)
        p = self.uniform() + alpha * self.cell_average_matrix(kk)[:, kk]
        if p.min() < 0:
            raise InputError("initial.amplitude", f"mode amplitude {alpha:g} makes the density "
                             "negative; lower the amplitude")
        return p

    # ------------------------------------------------------------------ background, rates
    def set_background(self, pbar: float) -> None:
        """Uniform part pbar = mass/|S^{d-1}|; fixes Z_inf and the growth rates.

        gamma_k = rate pbar k (k+d-2) lambda_k (USA), / Z_inf with Z_inf = beta lambda_0 pbar
        (SA), the rates of ``meanfield.theory.growth`` for mass 1.
        """
        self.background = float(pbar)
        self.c_uniform = self.lam[0] * pbar                 # W * pbar (scaled unit)
        self.z_uniform = self.beta * self.c_uniform if self._sa else 1.0
        k = np.arange(self.degree + 1)
        self.growth_rates = self.rate * pbar * k * (k + self.dim - 2) * self.lam / self.z_uniform

    # ------------------------------------------------------------------ operators
    def coefficients(self, q: np.ndarray) -> np.ndarray:
        """Least-squares Gegenbauer coefficients a_k = integral p Z_k dsigma of p = pbar + q."""
        a = self._proj @ q
        a[0] = self.mass(q) / math.sqrt(self.area)  # Z_0 = 1/sqrt(|S^{d-1}|)
        return a

    def potential(self, q: np.ndarray) -> np.ndarray:
        """Cell averages of W * (p - pbar) (scaled unit); add ``c_uniform`` for W * mu."""
        return self._synth @ (self._proj @ q)

    def face_velocity(self, q: np.ndarray) -> np.ndarray:
        """v_{j+1/2} at the M - 1 interior faces, in the run's time unit."""
        c = self.potential(q)
        dc = np.diff(c)
        if not self._sa:
            return dc * (self.rate / self.h)
        z = self.beta * (0.5 * (c[1:] + c[:-1]) + self.c_uniform)
        return dc / (self.h * z)

    def rhs(self, q: np.ndarray) -> np.ndarray:
        """d q_j/dt = -(F_{j+1/2} - F_{j-1/2}) / W_j (module doc)."""
        v = self.face_velocity(q)
        m = self.cells
        # generalised minmod slopes with reflection at the poles (zero slope in pole cells)
        d = np.diff(q)
        left = np.concatenate([[0.0], d])
        right = np.concatenate([d, [0.0]])
        slope = np.minimum(np.minimum(np.abs(left), np.abs(right)) * self.limiter_theta,
                           0.5 * np.abs(left + right))
        slope = np.copysign(slope, left) * (left * right > 0.0)
        half = 0.5 * slope
        vp = np.maximum(v, 0.0)
        vm = np.minimum(v, 0.0)
        wf = self.face_weight[1:-1]
        # F_{j+1/2} = w (v+ p^E_j + v- p^W_{j+1}), p = pbar + q
        flux = np.zeros(m + 1)
        flux[1:-1] = wf * (vp * (q[:-1] + half[:-1]) + vm * (q[1:] - half[1:])
                           + self.background * v)
        # positivity: outflow rate of cell j through its right (v+) and left (v-) faces
        out_r = wf * vp
        out_l = -wf * vm
        rate = self._outflow_rate
        rate[:] = 0.0
        np.maximum(rate[:-1], out_r, out=rate[:-1])
        np.maximum(rate[1:], out_l, out=rate[1:])
        self.max_speed = float(np.max(np.abs(v))) if v.size else 0.0
        return -np.diff(flux) / self.cell_weight

    def stable_dt(self) -> float:
        """Positivity bound min_j W_j / (2 max outflow w |v|) for the last ``rhs`` state."""
        r = self._outflow_rate
        pos = r > 0
        if not np.any(pos):
            return math.inf
        return 0.5 * float(np.min(self.cell_weight[pos] / r[pos]))

    @property
    def step_size(self) -> float | None:
        """The fixed time step (None: adaptive)."""
        return self.fixed_dt

    def euler_update(self, q: np.ndarray, dt: float, k: np.ndarray) -> np.ndarray:
        return q + dt * k

    def min_density(self, q: np.ndarray) -> float:
        return self.background + float(q.min())

    # ------------------------------------------------------------------ diagnostics
    def mass(self, q: np.ndarray) -> float:
        """integral p w dtheta = sum_j W_j p_j."""
        return self.background * self.area + float(self.cell_weight @ q)

    def diagnostics(self, q: np.ndarray, modes: int | None = None) -> dict:
        """mass, min/max density, energy, ebar, spectrum, dominant mode, max speed.

        E = (1/2) sum_j W_j p_j (W*mu)_j in the run's unit (``meanfield.theory.energy``),
        Ebar = 2 beta e^{-beta} E; ``spectrum`` = |a_k| = ||P_k mu||_{L2(sigma)} of the zonal
        part, a_k = integral p Z_k dsigma (k = 0..modes; ``coefficients`` gives the signed
        a_k); dominant_mode = argmax_{1 <= k <= modes} |a_k|; max_speed = max |v| over faces;
        tv_distance = (1/2) integral |p - pbar| dsigma.
        """
        modes = self.default_modes() if modes is None else min(int(modes), self.degree)
        pbar = self.background
        # p^T D C p with C pbar = lambda_0 pbar and sum_j W_j q_j = 0
        e_scaled = 0.5 * (self.c_uniform * pbar * self.area
                          + float(np.dot(self.cell_weight * q, self.potential(q))))
        energy, ebar = energy_from_scaled(e_scaled, self.beta, self.model, self.time_unit)
        a = self.coefficients(q)
        v = self.face_velocity(q)
        return {
            "mass": self.mass(q),
            "min_density": pbar + float(q.min()),
            "max_density": pbar + float(q.max()),
            "energy": float(energy),
            "ebar": float(ebar),
            "max_speed": float(np.max(np.abs(v))),
            "dominant_mode": int(np.argmax(np.abs(a[1: modes + 1])) + 1),
            "tv_distance": 0.5 * float(self.cell_weight @ np.abs(q)),
            "spectrum": np.abs(a[: modes + 1]),
        }

    # ------------------------------------------------------------------ driving
    def check_density(self, p0) -> np.ndarray:
        p = np.asarray(p0, dtype=float)
        if p.ndim != 1:
            raise InputError("p0", "must be a 1-D array of cell averages p(theta_j) (zonal "
                             "data depend on the polar angle only)", f"shape {p.shape}")
        if p.shape != (self.cells,):
            raise InputError("p0", f"must be an array of length cells = {self.cells}",
                             f"shape {p.shape}")
        if not np.all(np.isfinite(p)) or p.min() < 0:
            raise InputError("p0", "must be finite and >= 0 everywhere")
        if not float(self.cell_weight @ p) > 0:
            raise InputError("p0", "must have positive mass")
        return p.copy()

    def mass_of(self, p: np.ndarray) -> float:
        """integral p dsigma = sum_j W_j p_j of a density of weighted cell averages."""
        return float(self.cell_weight @ p)

    def split(self, p: np.ndarray) -> np.ndarray:
        """Set pbar = mass/area and return q = p - pbar (sum_j W_j q_j = 0 to round-off)."""
        self.set_background(float(self.cell_weight @ p) / self.area)
        return p - self.background

    def join(self, q: np.ndarray) -> np.ndarray:
        return self.background + q

    def advance(self, q: np.ndarray, t: float, t_target: float, stats: StepStats | None = None,
                deadline: float | None = None,
                max_steps: int | None = None) -> tuple[np.ndarray, float]:
        """Step q from t to exactly ``t_target`` (earlier if ``deadline`` passes or
        ``stats.steps`` reaches ``max_steps``)."""
        return advance(self, q, t, t_target, integrator=self.integrator,
                       fixed_dt=self.fixed_dt, stats=stats, deadline=deadline,
                       max_steps=max_steps)

    def run(self, p0, t_end: float, times: Sequence[float] | None = None, *,
            observer: Callable | None = None, modes: int | None = None,
            progress: bool = False) -> ZonalResult:
        """Integrate from t = 0 to ``t_end``; store density and diagnostics at ``times``.

        ``p0``: cell averages (length M) w.r.t. the surface measure (see ``cell_average``,
        ``mode``). ``times`` (default: 0 and t_end) are landed on exactly;
        ``observer(t, p, diag)`` is called at each. Raises
        :class:`~solvers.stepping.SolverError` on a negative or non-finite density.
        """
        q = self.split(self.check_density(p0))
        t_end, out_times = output_times(times, t_end)
        r = run_outputs(InMemory(self, modes), q, out_times, progress=progress, snapshot=self.join,
                        observer=observer)
        return ZonalResult(self.theta.copy(), self.edges.copy(), self.dim, r["times"],
                           r["snapshots"], r["diagnostics"], r["stats"].steps,
                           r["stats"].max_courant, self.name,
                           {"wall_seconds": r["wall_seconds"], "degree": self.degree})


__all__ = ["Zonal", "ZonalResult", "log_area_sd2", "zonal_harmonics"]
