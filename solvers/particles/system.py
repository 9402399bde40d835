"""Token (particle) dynamics of self-attention on the sphere S^{d-1}, any d >= 2.

N tokens x_1..x_N in S^{d-1} (``batch`` independent systems at once) move by

    dx_i/dt = P_{x_i}( (1/Z_i) sum_j w_ij m_j e^{beta <Q x_i, K x_j>} V x_j ),
    P_x y = y - <x, y> x,

* USA: Z_i = 1/a_N, a constant prefactor a_N in {1/N (default), 1, 1/N^2}
  (``normalization`` "1/N", "1", "1/N^2": the papers differ);
* SA:  Z_i = sum_j w_ij m_j e^{beta <Q x_i, K x_j>} (softmax, self term included);
* w_ij = 1 (``mask="none"``) or 1[j <= i] (``mask="causal"``, seed 002);
* m_j > 0 optional masses, rescaled to mean 1 so the empirical measure is
  mu = N^{-1} sum_j m_j delta_{x_j} (unit masses by default).

Only A = Q^T K and V enter. With Q = K = V = I and d = 2 the state is the angle vector
(:class:`~solvers.particles.representation.Angles`).

Time units (USA only, as in ``meanfield.theory.kernels``): ``raw`` (kernel e^{beta t}) or
``scaled`` (kernel e^{beta (t-1)}, time measured in units e^{-beta} of the raw one; every
velocity is e^{-beta} times the raw one and nothing overflows for any beta). Pairwise sums:
:mod:`solvers.particles.summation` (overflow-free; ``summation`` direct/fourier/auto).

Integrators (``solvers.stepping.INTEGRATORS``, the ``ode`` ones): ``euler`` (projected:
x <- (x + dt P_x f)/|x + dt P_x f|), ``euler-unprojected`` (the papers' step, seeds
000/001/004: x <- (x + dt u)/|x + dt u| with u the attention average before the tangential
projection; on angles theta <- theta + atan2(dt f_t, 1 + dt f_r), exactly the same step),
``rk4`` (classical, renormalised after each step) and ``adaptive`` (Dormand-Prince 5(4) with
error control, renormalised after each accepted step). On the circle the angles are not
wrapped. A fixed step above the explicit stability bound 2/L (L the velocity Lipschitz bound
of :meth:`ParticleSystem.stable_dt`) warns with ``CFLWarning``.

Energy (identity QKV; the same formula with <Q x_i, K x_j> for general QKV):
    E = (1/(2 beta N^2)) sum_ij m_i m_j e^{beta <x_i, x_j>},   Ebar = 2 beta e^{-beta} E in (0, 1]
(``meanfield.theory.energy`` turns the overflow-free log of the scaled energy into E and
Ebar). It is a Lyapunov function (never decreases) for identity QKV, and more generally
whenever V = Q^T K is symmetric, without mask. Along the discrete flow (derivation in
``energy_rate``)
    USA: dE/dt = (1 / (a_N N^2)) sum_i m_i |v_i|^2      (a_N = 1/N: integral |v|^2 dmu),
    SA:  dE/dt = (1/N) sum_i m_i |v_i|^2 Z_i / N          (integral |v|^2 Z dmu).
At beta = 0 the kernel is W(t) = t (constant dropped, as in ``meanfield.theory.kernels``):
E = (1/(2N^2)) sum_ij m_i m_j <x_i, A x_j> and Ebar := 2E.
"""

from __future__ import annotations

import math
import time as _time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import logsumexp

from meanfield.theory.attention import attention_matrices
from meanfield.theory.checks import (
    check_beta,
    check_dim,
    check_model,
    check_positive,
    check_time_unit,
)
from meanfield.theory.energy import energy_from_log, energy_from_scaled
from meanfield.theory.errors import InputError
from meanfield.theory.growth import mode_selection
from solvers.clusters import Clusters, detect_clusters
from solvers.particles.measures import harmonic_power
from solvers.particles.representation import (
    Representation,
    choose_representation,
    make_representation,
)
from solvers.particles.sampling import check_choice, normalised_masses, uniform_sample
from solvers.particles.summation import SUMMATIONS, FourierBessel
from solvers.stepping import (
    CFLWarning,
    StepStats,
    advance_ode,
    integrators,
    ode_step,
    output_times,
    run_outputs,
)

MASKS = ("none", "causal")
NORMALIZATIONS = ("1/N", "1", "1/N^2")
PARTICLE_INTEGRATORS = integrators("ode")
#: relative decrease of Ebar between outputs beyond round-off (Lyapunov check of ``run``)
ENERGY_DROP_TOLERANCE = 1e-12


@dataclass
class ParticleResult:
    """What :meth:`ParticleSystem.run` returns.

    ``positions`` has shape (n_times, batch, N) (angles) or (n_times, batch, N, d) (unit
    vectors); every diagnostic has leading shape (n_times, batch) (``spectrum``:
    (n_times, batch, modes+1), always on the circle, on S^{d-1} when ``modes`` was given).
    """

    times: np.ndarray
    positions: np.ndarray
    diagnostics: dict[str, np.ndarray]
    steps: int
    rejected: int
    representation: str
    meta: dict = field(default_factory=dict)


class ParticleSystem:
    """N tokens of (masked) self-attention on S^{d-1}, ``batch`` independent systems at once.

    Parameters
    ----------
    count : int
        Number of tokens N (>= 1).
    dim : int
        Ambient dimension d (tokens on S^{d-1}), >= 2.
    beta : float
        Inverse temperature >= 0.
    model : {"usa", "sa"}
        Unnormalised (Z_i = 1/a_N) or softmax (Z_i = sum_j w_ij m_j e^{beta s_ij}) attention.
    mask : {"none", "causal"}
        w_ij = 1, or 1[j <= i] (token i attends to tokens 1..i; the order is the token index).
    qkv : str or (Q, K, V)
        See :func:`~meanfield.theory.attention.attention_matrices` (ensembles drawn once from
        ``seed``, shared by the batch); ``qkv_scale`` is its ``scale``.
    normalization : {"1/N", "1", "1/N^2"}
        USA prefactor a_N (default "1/N"); SA accepts only the default.
    time_unit : {"raw", "scaled"}
        ``scaled`` (USA): kernel e^{beta (s - 1)}, time in units of e^{-beta} raw time.
    masses : array (N,) or (batch, N), optional
        Token masses m_j > 0, rescaled to mean 1 (mu = N^{-1} sum_j m_j delta_{x_j}).
    integrator : {"euler", "euler-unprojected", "rk4", "adaptive"}
        See the module docstring (``PARTICLE_INTEGRATORS``).
    dt : float, optional
        Fixed step (euler, euler-unprojected, rk4) or first trial step (adaptive; default:
        the starting-step rule of Hairer, Norsett & Wanner from the initial velocity).
        Default for fixed steps: min(0.1 / L, 0.02 / gamma_max) with the velocity Lipschitz
        bound L = r a_N N ||V|| e^{beta(||A|| - 1)} (1 + beta | ||A|| - 1 |) (USA;
        r = e^{beta} raw, 1 scaled; L = e^{beta} for identity QKV) or ||V|| (1 + 2 beta ||A||)
        (SA), and gamma_max of ``meanfield.theory.growth`` (identity QKV, no mask). A fixed
        step above 2/L (:meth:`stable_dt`) warns with ``CFLWarning``.
    rtol, atol : float
        Adaptive error control: the error of a step, divided by atol + rtol componentwise
        (positions are O(1): unit vectors or angles in radians), must have RMS norm <= 1 in
        every system of the batch (one common step for the batch).
    batch : int
        Number of systems drawn by :meth:`uniform_sample`; ``run`` accepts any batch.
    seed : int, optional
        Seeds the QKV ensemble and :meth:`uniform_sample` (independent streams).
    summation : {"auto", "fourier", "direct"}
        See :mod:`solvers.particles.summation`; ``block`` is the tile side of the direct sums.
    representation : {"auto", "angles", "vectors"}
        ``auto``: angles when d = 2 and QKV is the identity, unit vectors otherwise. The
        string is ``representation``; the strategy object (:mod:`.representation`) ``rep``.
    max_steps : int, optional
        Safety limit on the steps of one ``run`` (SolverError beyond it).
    frozen : int
        The first ``frozen`` tokens are frozen keys (cross-attention centres, seed 002 Thm 5.2,
        notes-002 §1.7): every token attends to them (they come first, so a causal mask keeps
        them) with their masses (the paper's weights a_j), and they never move.
    """

    def __init__(self, count: int, dim: int = 2, beta: float = 1.0, model: str = "usa", *,
                 mask: str = "none", qkv: str | Sequence[ArrayLike] = "identity",
                 qkv_scale: float = 1.0, normalization: str | None = None,
                 time_unit: str = "raw", masses: ArrayLike | None = None,
                 integrator: str = "adaptive", dt: float | None = None, rtol: float = 1e-8,
                 atol: float = 1e-10, batch: int = 1, seed: int | None = None,
                 summation: str = "auto", block: int = 1024, representation: str = "auto",
                 max_steps: int | None = None, frozen: int = 0) -> None:
        self.count = check_positive(count, "count", integer=True, minimum=1, inclusive=True)
        self.dim = check_dim(dim)
        self.beta = float(check_beta(beta))
        self.model = check_model(model)
        self.time_unit = check_time_unit(time_unit, model)
        self.mask = check_choice(mask, MASKS, "mask")
        self.frozen = int(frozen)
        if not 0 <= self.frozen < self.count:
            raise InputError("frozen", "must be an integer in [0, count)", frozen)
        norm = "1/N" if normalization is None else normalization
        check_choice(norm, NORMALIZATIONS, "normalization")
        if self.model == "sa" and norm != "1/N":
            raise InputError("normalization", "applies to model 'usa' only (SA divides by Z_i)",
                             normalization)
        self.normalization = norm
        n = self.count
        self.prefactor = {"1/N": 1.0 / n, "1": 1.0, "1/N^2": 1.0 / (n * n)}[norm]
        if self.model == "usa" and self.time_unit == "raw" and self.beta > 700:
            raise InputError("beta", "raw USA velocities ~ e^beta overflow float64 beyond "
                             "beta ~ 709: use time_unit='scaled'", self.beta)
        #: log of the factor turning a scaled kernel e^{beta (s - 1)} into the run's unit
        self.log_rate = self.beta if (self.model == "usa" and self.time_unit == "raw") else 0.0
        self.batch = check_positive(batch, "batch", integer=True, minimum=1, inclusive=True)
        seq = np.random.SeedSequence(seed)
        qkv_seq, sample_seq = seq.spawn(2)
        self._sample_rng = np.random.default_rng(sample_seq)
        self.attention = attention_matrices(qkv, self.dim, qkv_scale,
                                            np.random.default_rng(qkv_seq))
        self.representation = choose_representation(representation, self.dim,
                                                    self.attention.identity)
        # (1 or B', N): a 2-d array fixes the batch of the systems it applies to
        self.masses = normalised_masses(
            masses, np.shape(masses)[0] if np.ndim(masses) == 2 else 1, n)
        self._unit_masses = masses is None
        self.integrator = check_choice(integrator, PARTICLE_INTEGRATORS, "integrator")
        self.rtol = check_positive(rtol, "rtol")
        self.atol = check_positive(atol, "atol")
        self.block = check_positive(block, "block", integer=True, minimum=1, inclusive=True)
        self.max_steps = None if max_steps is None else check_positive(
            max_steps, "max_steps", integer=True, minimum=1, inclusive=True)
        # Fourier-Bessel coefficients (scaled by e^{-beta}) for the circle fast path
        self._fourier = FourierBessel(self.beta)
        self.fourier_terms = self._fourier.terms
        #: the representation strategy (:class:`Angles` or :class:`Vectors`)
        self.rep: Representation = make_representation(
            self.representation, n, self.dim, self.beta, self.block, attention=self.attention,
            summation=check_choice(summation, SUMMATIONS, "summation"),
            fourier=self._fourier, unit_masses=self._unit_masses)
        #: the summation path after resolving "auto"
        self.summation = self.rep.summation
        self.gamma_max = self._gamma_max()
        #: the step given by the user (None: default for fixed steps, automatic if adaptive)
        self.dt_given = None if dt is None else check_positive(dt, "dt")
        self.dt = self._default_dt() if dt is None else self.dt_given

    # ------------------------------------------------------------------ set-up helpers
    def _gamma_max(self) -> float | None:
        """Largest linear growth rate of the uniform state (identity QKV, no mask)."""
        if not self.attention.identity or self.mask != "none" or self.frozen:
            return None
        sel = mode_selection(self.beta, self.dim, self.model, self.time_unit)
        g = math.exp(sel.log_gamma_max)
        return g * self.prefactor * self.count if self.model == "usa" else g

    def _log_lipschitz(self) -> float:
        """log L, L the velocity Lipschitz bound of the class docstring (see ``dt``)."""
        at = self.attention
        na = float(np.linalg.norm(at.A, 2))
        nv = float(np.linalg.norm(at.V, 2))
        if self.model == "usa":  # in logs: e^{beta(||A|| - 1)} may overflow
            return (self.log_rate + self.beta * (na - 1.0)
                    + math.log(self.prefactor * self.count) + math.log(max(nv, 1e-300))
                    + math.log1p(self.beta * abs(na - 1.0)))
        return math.log(max(nv, 1e-300)) + math.log1p(2.0 * self.beta * na)

    def _default_dt(self) -> float:
        dt = 0.1 * math.exp(-min(self._log_lipschitz(), 690.0))
        if self.gamma_max:
            dt = min(dt, 0.02 / self.gamma_max)
        return dt

    def stable_dt(self) -> float:
        """The explicit stability bound 2/L of a fixed step (L the velocity Lipschitz bound
        used for the default dt, which is 0.1/L): forward Euler on a mode with rate -L is
        stable only for dt <= 2/L. Independent of the state."""
        return 2.0 * math.exp(-min(self._log_lipschitz(), 690.0))

    def default_modes(self) -> int:
        """Degrees recorded by :meth:`diagnostics` on the circle: max(16, 4 k_max)."""
        k = mode_selection(self.beta, 2).k_max if self.beta > 0 else 1
        return max(16, 4 * k)

    def _weights(self, batch: int) -> np.ndarray:
        if self.masses.shape[0] not in (1, batch):
            raise InputError("x", f"batch size {batch} does not match the masses' batch "
                             f"{self.masses.shape[0]}")
        return self.masses

    def check_state(self, x: ArrayLike, name: str = "x0") -> np.ndarray:
        """A validated copy with a batch axis: angles (batch, N) or unit vectors (batch, N, d).

        Vectors must have norms within 1e-6 of 1 and are renormalised exactly.
        """
        xb = self.rep.check_state(x, name)
        self._weights(xb.shape[0])
        return xb

    def uniform_sample(self, batch: int | None = None, seed: int | None = None) -> np.ndarray:
        """i.i.d. uniform tokens in this system's representation, shape (batch, N[, d]).

        ``seed`` None draws from the system's own stream (fixed by its ``seed``).
        """
        rng = self._sample_rng if seed is None else np.random.default_rng(seed)
        return uniform_sample(self.count, self.dim, self.batch if batch is None else batch, rng,
                              representation=self.representation)

    # ------------------------------------------------------------------ velocity
    def velocity(self, x: ArrayLike) -> np.ndarray:
        """dx_i/dt (vectors: tangent vectors; angles: dtheta_i/dt), same shape as ``x``.

        USA: v_i = P_{x_i}( a_N sum_j w_ij m_j e^{beta s_ij} V x_j ) (times e^{-beta} in the
        scaled unit); SA: v_i = P_{x_i}( sum_j w_ij m_j e^{beta s_ij} V x_j / Z_i ).
        On angles: dtheta_i/dt = -(1/Z_i) sum_j w_ij m_j e^{beta cos(th_i - th_j)}
        sin(th_i - th_j). No check of the input beyond its shape (stages of RK methods are
        slightly off the sphere; the extended field keeps |x| = 1 invariant).
        """
        arr = np.asarray(x, dtype=float)
        single = arr.ndim == self.rep.point_ndim
        xb = arr[None] if single else arr
        v = self._velocity(xb)
        return v[0] if single else v

    def _attention_rows(self, x: np.ndarray, need_rad: bool = False):
        """Masked row sums and the factor fac_i turning them into the attention average:
        a_N e^{L_i} (USA, in the run's time unit) or 1/den_i (SA)."""
        rows = self.rep.row_sums(x, self._weights(x.shape[0]), causal=self.mask != "none",
                                 need_num=True, need_den=self.model == "sa",
                                 need_rad=need_rad)
        if self.model == "usa":
            with np.errstate(over="ignore"):  # overflows only if the velocity itself does
                fac = self.prefactor * np.exp(rows.log_scale - self.beta + self.log_rate)
        else:
            fac = 1.0 / rows.den
        return rows, fac

    def _velocity(self, x: np.ndarray) -> np.ndarray:
        rows, fac = self._attention_rows(x)
        v = self.rep.tangential(fac, rows, x)
        if self.frozen:
            v[:, : self.frozen] = 0.0
        return v

    def unprojected_velocity(self, x: ArrayLike):
        """The attention average before the tangential projection (``euler-unprojected``).

        Vectors: u_i = a_N sum_j w_ij m_j e^{beta s_ij} V x_j (USA, times e^{-beta} scaled) or
        that sum over Z_i (SA), shape of ``x`` (batched). Angles: the pair (f_t, f_r) of its
        components along x_i^perp and x_i, f_t = dtheta_i/dt and
        f_r = (1/Z_i) sum_j w_ij m_j e^{beta cos(th_i - th_j)} cos(th_i - th_j).
        """
        arr = np.asarray(x, dtype=float)
        single = arr.ndim == self.rep.point_ndim
        u = self._unprojected(arr[None] if single else arr)
        if not single:
            return u
        return tuple(c[0] for c in u) if isinstance(u, tuple) else u[0]

    def _unprojected(self, x: np.ndarray):
        rows, fac = self._attention_rows(x, need_rad=True)
        u = self.rep.unprojected(fac, rows, x)
        if self.frozen:  # angles: (f_t, f_r) with atan2(0, 1 + h f_r) = 0; vectors: x + 0
            (u[0] if isinstance(u, tuple) else u)[:, : self.frozen] = 0.0
        return u

    def unprojected_step(self, x: np.ndarray, h: float) -> np.ndarray:
        """One ``euler-unprojected`` step x <- (x + h u)/|x + h u| (angles: the same step,
        theta <- theta + atan2(h f_t, 1 + h f_r)); called by ``solvers.stepping.ode_step``."""
        return self.rep.unprojected_step(x, h, self._unprojected(x))

    # ------------------------------------------------------------------ ODE system contract
    @property
    def projects(self) -> bool:
        return self.rep.projects

    def project(self, x: np.ndarray) -> np.ndarray:
        """Back onto the sphere (renormalise the vectors; identity on angles)."""
        return self.rep.project(x)

    @property
    def nonfinite_hint(self) -> str:
        return " (raw USA at large beta: use time_unit='scaled')" if self.log_rate > 0 else ""

    # ------------------------------------------------------------------ energy
    def log_pair_sum(self, x: ArrayLike) -> np.ndarray:
        """log sum_ij m_i m_j e^{beta <Q x_i, K x_j>} - beta, shape (batch,), overflow-free.

        On the circle with the Fourier path: log(ive_0 |S_0|^2 + 2 sum_k ive_k |S_k|^2).
        """
        xb = self.check_state(x, "x")
        return self._log_pair_sum(xb)

    def _log_pair_sum(self, x: np.ndarray) -> np.ndarray:
        return self.rep.log_pair_sum(x, self._weights(x.shape[0]))

    def _energies(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(E, Ebar) through ``meanfield.theory.energy`` (log E_s = log_pair_sum - log(2 beta)
        - 2 log N; at beta = 0 E_s = E = (1/2) <m, A m>, m the mean)."""
        if self.beta == 0:
            return energy_from_scaled(self._energy_beta0(x), 0.0)
        log_e = self._log_pair_sum(x) - math.log(2.0 * self.beta) - 2.0 * math.log(self.count)
        return energy_from_log(log_e, self.beta, self.model, self.time_unit)

    def _energy_beta0(self, x: np.ndarray) -> np.ndarray:
        mean = self.rep.mean(x, self._weights(x.shape[0]))
        return 0.5 * np.einsum("bd,de,be->b", mean, self.attention.A, mean)

    def ebar(self, x: ArrayLike) -> np.ndarray:
        """Ebar = 2 beta e^{-beta} E = (1/N^2) sum_ij m_i m_j e^{beta(<Qx_i, Kx_j> - 1)}.

        In (0, 1] for identity QKV (1 = one cluster). At beta = 0: Ebar = 2E with
        E = (1/(2N^2)) sum_ij m_i m_j <x_i, A x_j> (|mean|^2 for identity QKV). Shape (batch,).
        """
        return self._energies(self.check_state(x, "x"))[1]

    def energy(self, x: ArrayLike) -> np.ndarray:
        """E = (1/(2 beta N^2)) sum_ij m_i m_j e^{beta <Q x_i, K x_j>} in the run's time unit.

        ``scaled`` (USA) reports e^{-beta} E (the kernel e^{beta(t-1)}/beta); raw values
        beyond float64 are inf (Ebar never overflows). Shape (batch,).
        """
        return self._energies(self.check_state(x, "x"))[0]

    def energy_rate(self, x: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(dE/dt, dEbar/dt) predicted by the dissipation identity, shapes (batch,).

        Derivation for the discrete system (identity QKV, or V = Q^T K symmetric; no mask).
        The spherical gradient of E with respect to x_i is
            grad_i E = (m_i / N^2) sum_j m_j e^{beta s_ij} P_{x_i}(A x_j)
        (the factor 2 of the symmetric double sum cancels 1/2). USA: v_i equals a_N times the
        sum, so grad_i E = m_i v_i / (a_N N^2) and
            dE/dt = sum_i <grad_i E, v_i> = (1/(a_N N^2)) sum_i m_i |v_i|^2,
        i.e. (1/N) sum_i m_i |v_i|^2 = integral |v|^2 dmu for a_N = 1/N; the same formula holds
        in the scaled unit (E and t both rescaled). SA: v_i is the sum over Z_i, so
            dE/dt = (1/N^2) sum_i m_i Z_i |v_i|^2 = (1/N) sum_i m_i |v_i|^2 (Z_i / N),
        with Z_i = sum_j m_j e^{beta s_ij} (unmasked), integral |v|^2 Z dmu. Ebar = 2 beta
        e^{-beta} E (raw; 2 beta E in the scaled unit; 2E at beta = 0), so dEbar/dt follows and is
        computed overflow-free. For masked or non-gradient dynamics this is only the formula.
        """
        xb = self.check_state(x, "x")
        return self._energy_rate(xb, self._velocity(xb))

    def _energy_rate(self, x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = self._weights(x.shape[0])
        n = self.count
        sq = self.rep.sq_speed(v)
        if self.beta == 0:
            ebar_factor_log = math.log(2.0)
        elif self.model == "usa" and self.time_unit == "scaled":
            ebar_factor_log = math.log(2.0 * self.beta)
        else:
            ebar_factor_log = math.log(2.0 * self.beta) - self.beta
        if self.model == "usa":
            rate = (w * sq).sum(axis=-1) / (self.prefactor * n * n)
            return rate, rate * math.exp(ebar_factor_log)
        rows = self.rep.row_sums(x, w, causal=False, need_num=False, need_den=True)
        # log of sum_i m_i Z_i |v_i|^2 / N^2 with Z_i = e^{L_i} den_i
        with np.errstate(divide="ignore"):
            log_s = logsumexp(np.log(w) + rows.log_scale + np.log(rows.den) + np.log(sq),
                              axis=-1) - 2.0 * math.log(n)
        with np.errstate(over="ignore"):
            return np.exp(log_s), np.exp(log_s + ebar_factor_log)

    # ------------------------------------------------------------------ other diagnostics
    def fourier(self, x: ArrayLike, kmax: int) -> np.ndarray:
        """c_k = N^{-1} sum_j m_j e^{-ik theta_j}, k = 0..kmax (angles only), (batch, kmax+1)."""
        xb = self.check_state(x, "x")
        return self.rep.fourier(xb, kmax, self._weights(xb.shape[0]))

    def harmonic_power(self, x: ArrayLike, kmax: int) -> np.ndarray:
        """||P_k mu||^2_{L^2(sigma)}, k = 0..kmax (see :func:`harmonic_power`)."""
        xb = self.check_state(x, "x")
        return harmonic_power(xb, kmax, self._weights(xb.shape[0]),
                              representation=self.representation, block=self.block)

    def clusters(self, x: ArrayLike, **kw) -> list[Clusters]:
        """:func:`~solvers.clusters.detect_clusters` with this system's masses and
        representation."""
        xb = self.check_state(x, "x")
        return detect_clusters(xb, masses=self._weights(xb.shape[0]),
                               representation=self.representation,
                               block=kw.pop("block", self.block), **kw)

    def diagnostics(self, x: ArrayLike, modes: int | None = None) -> dict[str, np.ndarray]:
        """Per-system diagnostics, each of shape (batch,) unless stated.

        * energy, ebar, energy_rate, ebar_rate (see :meth:`energy_rate`), max_speed;
        * spectrum (batch, modes+1): ||P_k mu||_{L2(sigma)}, k = 0..modes (on angles always,
          modes default :meth:`default_modes`, = |c_k|/sqrt(pi) for k >= 1; on vectors only
          when ``modes`` is given, cost O(N^2 modes)), and dominant_mode = argmax_{k>=1} of it;
        * on angles: tv_distance, the total variation (1/2) integral |p_hist - 1/(2 pi)| of the
          100-bin histogram to the uniform density (seed 003; noise floor ~0.399 sqrt(100/N),
          see :func:`~solvers.particles.measures.histogram_tv`), and tv_fourier_proxy =
          (2/pi) max_{k>=1} |c_k|, the total variation of a single-mode density
          (1 + 2|c_k| cos(k theta))/(2 pi) with that amplitude: a noise-free proxy of the
          departure from uniform in the linear phase, not a bound of tv_distance.
        """
        return self._diagnostics(self.check_state(x, "x"), modes)

    def _diagnostics(self, x: np.ndarray, modes: int | None) -> dict[str, np.ndarray]:
        v = self._velocity(x)
        rate, ebar_rate = self._energy_rate(x, v)
        energy, ebar = self._energies(x)
        out = {"energy": energy, "ebar": ebar, "energy_rate": rate,
               "ebar_rate": ebar_rate, "max_speed": self.rep.speed(v).max(axis=-1)}
        spec = self.rep.spectral_diagnostics(x, self._weights(x.shape[0]), modes,
                                             self.default_modes())
        if "spectrum" in spec:
            out["spectrum"] = spec.pop("spectrum")
            if out["spectrum"].shape[-1] > 1:
                out["dominant_mode"] = np.argmax(out["spectrum"][:, 1:], axis=-1) + 1
        out.update(spec)
        return out

    # ------------------------------------------------------------------ time stepping
    @property
    def step_size(self) -> float | None:
        """The fixed time step of ``euler``, ``euler-unprojected`` and ``rk4`` (None:
        ``adaptive``)."""
        return None if self.integrator == "adaptive" else self.dt

    @property
    def energy_is_lyapunov(self) -> bool:
        """E never decreases along the exact flow: no mask and V = Q^T K symmetric."""
        return self.mask == "none" and not self.frozen and self.attention.gradient_flow

    def step(self, x: ArrayLike, dt: float) -> np.ndarray:
        """One fixed step of size dt with the ``euler``, ``euler-unprojected`` or ``rk4`` rule
        (``rk4`` for an ``adaptive`` system; renormalised)."""
        xb = self.check_state(x, "x")
        h = check_positive(dt, "dt")
        rule = "rk4" if self.integrator == "adaptive" else self.integrator
        return ode_step(self, xb, h, rule)

    def advance(self, x: np.ndarray, t: float, t_target: float, stats: StepStats,
                deadline: float | None = None, max_steps: int | None = None
                ) -> tuple[np.ndarray, float]:
        """Step a checked state (see :meth:`check_state`) from t to exactly ``t_target``.

        ``solvers.stepping.advance_ode`` with this system's integrator and dt; returns earlier
        if ``deadline`` (time.monotonic) passes or ``stats.steps`` reaches ``max_steps``.
        A fixed step above :meth:`stable_dt` warns with ``CFLWarning`` once per ``stats``
        (``stats.cfl_violations`` counts the steps taken with it, ``stats.max_courant`` is
        dt / stable_dt). Raises ``SolverError`` on non-finite positions or ``max_steps`` of
        the system.
        """
        fixed = self.integrator != "adaptive"
        moving = t < t_target
        if fixed and moving:
            bound = self.stable_dt()
            ratio = self.dt / bound
            if ratio > 1.0 + 1e-12 and stats.cfl_violations == 0:
                what = ("the tokens stay bounded but the effective step dt/(1 + dt f_r) "
                        "distorts the time axis" if self.integrator == "euler-unprojected"
                        else "the run may be unstable and the energy may decrease")
                warnings.warn(
                    f"fixed dt = {self.dt:.3e} exceeds the explicit stability bound 2/L = "
                    f"{bound:.3e} of {self.integrator} (ratio {ratio:.3g}, L the velocity "
                    f"Lipschitz bound): {what}", CFLWarning, stacklevel=2)
        before = stats.steps
        x, t = advance_ode(self, x, t, t_target, stats, integrator=self.integrator, dt=self.dt,
                           first_dt=self.dt_given, deadline=deadline, max_steps=max_steps)
        if fixed and moving:
            stats.max_courant = max(stats.max_courant, ratio)
            if ratio > 1.0 + 1e-12:
                stats.cfl_violations += max(1, stats.steps - before)
        return x, t

    def run(self, x0: ArrayLike, t_end: float, times: ArrayLike | None = None, *,
            observer: Callable | None = None, modes: int | None = None,
            diagnostics: bool = True, progress: bool = False) -> ParticleResult:
        """Integrate from t = 0 to ``t_end``, storing positions and diagnostics at ``times``.

        ``times`` (default 0 and t_end) are landed on exactly; ``observer(t, x, diag)`` is
        called at each. Diagnostics: see :meth:`diagnostics` plus ``dt`` (last step); with
        ``diagnostics=False`` only ``dt``. With a fixed step and an energy that is a Lyapunov
        function (:attr:`energy_is_lyapunov`), a decrease of Ebar between consecutive outputs
        beyond round-off (relative ``ENERGY_DROP_TOLERANCE``) warns once with ``CFLWarning``:
        the step is too large (Ebar is then evaluated at every output even with
        ``diagnostics=False``). Raises :class:`~solvers.stepping.SolverError` on non-finite
        positions.
        """
        x = self.check_state(x0, "x0")
        t_end, out_times = output_times(times, t_end)
        start = _time.perf_counter()
        view = _InMemory(self, modes, diagnostics,
                         watch_energy=self.integrator != "adaptive" and self.energy_is_lyapunov)
        r = run_outputs(view, x, out_times, observer=observer, progress=progress)
        stats = r["stats"]
        meta = {"wall_seconds": _time.perf_counter() - start, "model": self.model,
                "beta": self.beta, "dim": self.dim, "mask": self.mask,
                "qkv": self.attention.name, "normalization": self.normalization,
                "time_unit": self.time_unit, "integrator": self.integrator,
                "summation": self.summation, "dt": self.dt,
                "energy_is_lyapunov": self.energy_is_lyapunov,
                "stable_dt": self.stable_dt(), "cfl_violations": stats.cfl_violations}
        return ParticleResult(r["times"], r["snapshots"], r["diagnostics"], stats.steps,
                              stats.rejected, self.representation, meta)


class _InMemory:
    """A particle system seen by ``solvers.stepping.march`` in :meth:`ParticleSystem.run`:
    its diagnostics (or none) plus the last dt per system, and the Lyapunov check of Ebar."""

    def __init__(self, system: ParticleSystem, modes: int | None, diagnostics: bool, *,
                 watch_energy: bool) -> None:
        self.system, self.modes, self.full = system, modes, diagnostics
        self.watch_energy = watch_energy
        self.t = 0.0
        self.step_size = system.step_size
        self._last = None  # (t, ebar) at the previous output
        self._warned = False

    def advance(self, x, t, t_target, stats, deadline=None, max_steps=None):
        x, self.t = self.system.advance(x, t, t_target, stats, deadline, max_steps)
        return x, self.t

    def diagnostics(self, x: np.ndarray, stats: StepStats) -> dict[str, np.ndarray]:
        d = self.system._diagnostics(x, self.modes) if self.full else {}
        d["dt"] = np.full(x.shape[0], stats.last_dt)
        if self.watch_energy and not self._warned:
            ebar = d["ebar"] if "ebar" in d else self.system._energies(x)[1]
            self._check_energy(ebar)
        return d

    def _check_energy(self, ebar: np.ndarray) -> None:
        last, self._last = self._last, (self.t, ebar)
        if last is None:
            return
        t0, e0 = last
        bad = (e0 - ebar) > ENERGY_DROP_TOLERANCE * np.abs(e0)
        if np.any(bad):
            s = self.system
            with np.errstate(divide="ignore", invalid="ignore"):
                drop = np.where(bad, (e0 - ebar) / np.abs(e0), -np.inf)
            worst = int(np.argmax(drop))
            self._warned = True
            warnings.warn(
                f"energy decreased between the outputs at t = {t0:.6g} and t = {self.t:.6g} "
                f"(Ebar {e0[worst]:.12g} -> {ebar[worst]:.12g}, relative {drop[worst]:.3g}, "
                f"system {worst}) although it is a Lyapunov function of these dynamics: the step "
                f"is too large (fixed dt = {s.dt:.3e}, stability bound 2/L = "
                f"{s.stable_dt():.3e})", CFLWarning, stacklevel=2)
