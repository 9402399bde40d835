"""Causal self-attention on the circle as a mean field over token labels (seed 002, notes-002 §5).

Label token k by s = k/n. The masked mean field is a density rho(s, theta) transported in
theta only: slice s moves with the velocity of nu^s = int_0^s rho(s', .) ds', the tokens it
attends to (Q = K = V = I):

    SA (the paper's):  v_s = d_theta(W * nu^s) / (beta W * nu^s),    W(t) = e^{beta t}/beta
    USA:               v_s = d_theta(W * nu^s)

The label axis is cut into S slices with weights w_l (sum 1); slice l holds a probability
density p_l and attends to nu_l = sum_{k<l} w_k p_k + theta_self w_l p_l (``self_weight`` =
theta_self: 1 mimics j <= k, 1/2 is the midpoint rule). One slice is full attention; n slices
of weight 1/n with point-like data are the particle system. Each nu_l is a prefix sum, and
convolution is linear: one FFT of all slices, a cumulative sum over slices, two inverse FFTs:
O(S M log M) per right-hand side. Faces use the convolution drift's form (c_{j+1} - c_j)/dx
(over Z at the face for SA), and each slice is transported by the fv2 flux of
``solvers.circle.FiniteVolume`` (the same operations, vectorised over slices), so one slice
reproduces the full-attention fv2 solver.

Hybrid (``tokens`` = K > 0): the first K tokens are exact particles of mass
``token_mass``/K each, ahead of every slice in label order. They follow the masked particle
equations among themselves (token k attends to tokens j <= k, itself included) and enter
every slice's nu_l as atoms (their kernel evaluated exactly at the cell centres). This is how
a mean-field run carries the Renyi seeds, which the continuum limit puts at s -> 0 with no
weight (notes-002 §5.3). The state is then one flat array: the S x M slice deviations, then
the K token angles; ``join`` returns the densities and ``tokens`` the angles.

General query/key/value (``B`` = Q^T K, ``V``, seed 004 eq. 2): the velocity of slice l is
that of ``solvers.drifts.attention.GeneralAttention`` for the measure nu_l, its kernel
matrices built once and applied to all S prefix sums in one BLAS product per field (O(S M^2)
per right-hand side instead of O(S M log M): the kernel is no longer a convolution). Atoms
(hybrid tokens, frozen centres) enter through the same shifted kernels, and the hybrid
tokens follow the general particle equations.

Frozen centres (cross-attention, seed 002 Thm 5.2, notes-002 §1.7): fixed angles theta_j with
masses a_j/n (``centre_mass``, the paper's weights a_j in units of one token) that every
slice and every hybrid token attends to, and that never move.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from meanfield.theory.checks import check_beta, check_model, check_positive, check_time_unit
from meanfield.theory.errors import InputError
from meanfield.theory.kernels import ExponentialKernel
from solvers.circle_grid import TWO_PI, CircleGrid, circle_multipliers

#: raw-time USA velocities ~ e^beta overflow float64 beyond beta ~ 709
RAW_BETA_LIMIT = 700.0


def fv2_divergence(q: np.ndarray, v: np.ndarray, pbar: float | np.ndarray, dx: float,
                   limiter_theta: float = 2.0) -> np.ndarray:
    """-(F_{j+1/2} - F_{j-1/2})/dx of the fv2 flux for densities pbar + q (..., M) with face
    velocities v (..., M) (face j between cells j and j + 1, periodic): generalised-minmod
    slopes, upwind face values, the uniform part pbar v exactly (``FiniteVolume.rhs``)."""
    left = q - np.roll(q, 1, axis=-1)                 # q_j - q_{j-1}
    right = np.roll(left, -1, axis=-1)                # q_{j+1} - q_j
    slope = np.minimum(np.abs(left), np.abs(right)) * limiter_theta
    slope = np.minimum(slope, 0.5 * np.abs(left + right))
    slope = np.copysign(slope, left) * (left * right > 0.0)
    half = 0.5 * slope
    vp, vm = np.maximum(v, 0.0), np.minimum(v, 0.0)
    flux = (q + half) * vp + vm * np.roll(q - half, -1, axis=-1)
    flux = flux + v * pbar
    return (flux - np.roll(flux, 1, axis=-1)) * (-1.0 / dx)


def slices_from_tokens(angles: ArrayLike, slices: int, cells: int, kappa: float = 200.0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Slice densities (S, M) and weights from token angles in label order: the tokens are
    cut into ``slices`` consecutive groups, each smoothed by a von Mises bump of concentration
    kappa (width kappa^{-1/2}, which must be << beta^{-1/2} to keep the seeds), so that the
    hybrid starts from the same tokens as a particle run (notes-002 §5.4). Weights are the
    groups' token counts (normalised by CausalCircle)."""
    a = np.mod(np.asarray(angles, float), TWO_PI)
    n_s = int(slices)
    if a.ndim != 1 or not 1 <= n_s <= a.size:
        raise InputError("slices", f"must be between 1 and the number of tokens ({a.size})",
                         slices)
    theta = (np.arange(int(cells)) + 0.5) * TWO_PI / int(cells)
    groups = np.array_split(a, n_s)
    out = np.empty((n_s, theta.size))
    for k, g in enumerate(groups):
        p = np.exp(kappa * (np.cos(theta[:, None] - g[None, :]) - 1.0)).sum(axis=1)
        out[k] = p / (p.sum() * TWO_PI / theta.size)   # cell values normalised to mass 1
    return out, np.array([g.size for g in groups], float)


class CausalCircle:
    """Slices of token labels on S^1 under causal SA/USA attention (see the module doc).

    Parameters
    ----------
    cells : int
        M cells per slice.
    slices : int or array of weights
        S equal slices, or the slice weights w_l (positive, normalised to sum 1).
    beta, model, time_unit
        As for the convolution drift (USA ``scaled``: kernel e^{beta(t-1)}/beta).
    self_weight : float in [0, 1]
        theta_self, the weight of a slice in its own attention (1: j <= k; 1/2: midpoint).
    cfl, dt, accuracy, integrator
        As for the circle schemes (adaptive dt <= cfl x positivity bound and accuracy /
        gamma_max of the full-attention theory).
    """

    name = "causal-fv2"
    positivity_factor = 0.5

    def __init__(self, cells: int, slices: int | ArrayLike = 1, beta: float = 5.0,
                 model: str = "sa", *, self_weight: float = 1.0, time_unit: str = "raw",
                 cfl: float = 0.4, dt: float | None = None, accuracy: float = 0.02,
                 integrator: str = "ssprk3", limiter_theta: float = 2.0,
                 tokens: int = 0, token_mass: float = 0.0, B: ArrayLike | None = None,
                 V: ArrayLike | None = None, centres: ArrayLike = (),
                 centre_mass: ArrayLike = ()) -> None:
        self.grid = CircleGrid(cells)
        self.cells, self.dx, self.theta = self.grid.cells, self.grid.dx, self.grid.theta
        self.beta = float(check_beta(beta))
        self.model = check_model(model)
        self.time_unit = check_time_unit(time_unit, model)
        if self.model == "usa" and self.time_unit == "raw" and self.beta > RAW_BETA_LIMIT:
            raise InputError("beta", "raw-time USA velocities ~ e^beta overflow float64 beyond "
                             "beta ~ 709: use time_unit='scaled'", self.beta)
        w = np.full(int(slices), 1.0 / int(slices)) if np.ndim(slices) == 0 else \
            np.asarray(slices, float)
        if w.ndim != 1 or w.size < 1 or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise InputError("slices", "must be a number >= 1 or positive slice weights",
                             slices)
        self.tokens = int(tokens)
        if self.tokens < 0:
            raise InputError("tokens", "must be an integer >= 0", tokens)
        tm = float(token_mass) if self.tokens else 0.0
        if self.tokens and not 0.0 < tm < 1.0:
            raise InputError("token_mass", "must be in (0, 1): the tokens' share of all "
                             "tokens (K/n)", token_mass)
        self.token_mass = tm
        self.weights = (1.0 - tm) * w / w.sum()      # the slices' shares, after the tokens
        self.slices = w.size
        self._size = self.slices * self.cells
        sw = float(self_weight)
        if not 0.0 <= sw <= 1.0:
            raise InputError("self_weight", "must be in [0, 1]", self_weight)
        if sw == 0.0 and self.model == "sa":
            raise InputError("self_weight", "must be > 0 for SA (the first slice would attend "
                             "to nothing)", self_weight)
        self.self_weight = sw
        self.cfl = check_positive(cfl, "cfl")
        self.fixed_dt = None if dt in (None, 0) else check_positive(dt, "dt")
        self.accuracy = check_positive(accuracy, "accuracy")
        if integrator not in ("ssprk3", "euler"):
            raise InputError("integrator", "must be ssprk3 or euler", integrator)
        self.integrator = integrator
        self.limiter_theta = float(limiter_theta)
        kernel = ExponentialKernel(self.beta, "scaled")
        self._conv = circle_multipliers(kernel, self.cells)       # c = W * nu at centres
        self.rate = math.exp(self.beta) if (self.model == "usa"
                                            and self.time_unit == "raw") else 1.0
        # attended mass of slice l: sum_{k<l} w_k + theta w_l (the tokens' atoms aside)
        self.attended = np.cumsum(self.weights) - (1.0 - sw) * self.weights
        self.kernel = kernel
        self.initial_tokens = np.zeros(self.tokens)
        self.centres = np.asarray(centres, float).ravel()
        cm = np.asarray(centre_mass, float).ravel()
        if not np.all(np.isfinite(self.centres)):
            raise InputError("centres", "must be finite angles", centres)
        if cm.size != self.centres.size or not np.all(np.isfinite(cm)) or np.any(cm <= 0):
            raise InputError("centre_mass", f"must be {self.centres.size} positive masses "
                             "(one per centre)", centre_mass)
        self.centre_mass = cm
        self.attention = None
        if B is not None or V is not None:
            from solvers.drifts.attention import GeneralAttention

            att = GeneralAttention(self.beta, self.model, B, V, self.time_unit)
            if not att.isotropic:
                att.bind(self.grid)
                self.attention = att
                self._centre_fields = att.atom_fields(self.centres)
        k = np.arange(self.cells // 2 + 1)
        lam = circle_multipliers(kernel, self.cells, cell_averages=False).real
        rates = self.rate * k**2 * lam / TWO_PI
        if self.model == "sa":
            rates = rates / (self.beta * lam[0] / TWO_PI if self.beta > 0 else 1.0)
        #: full-attention linear rates gamma_k (s-independent perturbations grow at these;
        #: Q = K = V = I only)
        self.growth_rates = rates
        self.gamma_max = float(rates[1:].max()) if rates.size > 1 and \
            self.attention is None else None
        self.background = 1.0 / TWO_PI          # every slice is a probability density
        self.reference_density = self.background
        self.max_speed = 0.0

    # ------------------------------------------------------------------ metadata
    @property
    def k_max(self) -> int | None:
        """Most unstable mode of the full-attention theory (s-independent perturbations)."""
        return int(np.argmax(self.growth_rates[1:]) + 1) if self.growth_rates.size > 1 \
            else None

    @property
    def step_size(self) -> float | None:
        return self.fixed_dt

    def default_modes(self) -> int:
        return max(16, 4 * (self.k_max or 4))

    def set_background(self, pbar: float) -> None:
        self.background = float(pbar)

    # ------------------------------------------------------------------ state
    def check_density(self, p0: ArrayLike) -> np.ndarray:
        p = np.array(p0, dtype=float)
        if p.ndim == 1:
            p = np.broadcast_to(p, (self.slices, p.size)).copy()
        if p.shape != (self.slices, self.cells):
            raise InputError("p0", f"must have shape ({self.slices}, {self.cells}) (slices, "
                             "cells) or ({self.cells},)", f"shape {p.shape}")
        if not np.all(np.isfinite(p)) or p.min() < 0:
            raise InputError("p0", "must be finite and non-negative")
        mass = p.sum(axis=1) * self.dx
        if np.any(np.abs(mass - 1.0) > 1e-6):
            raise InputError("p0", "every slice must be a probability density (mass 1 w.r.t. "
                             "d theta)", f"masses {mass.min():.6g}..{mass.max():.6g}")
        return p

    def set_tokens(self, angles: ArrayLike) -> None:
        """Initial angles of the K hybrid tokens (in label order), used by ``split``."""
        a = np.asarray(angles, float)
        if a.shape != (self.tokens,) or not np.all(np.isfinite(a)):
            raise InputError("tokens", f"must be {self.tokens} finite angles", a.shape)
        self.initial_tokens = a.copy()

    def split(self, p: np.ndarray) -> np.ndarray:
        q = np.asarray(p, float) - self.background
        if not self.tokens:
            return q
        return np.concatenate([q.ravel(), self.initial_tokens])

    def _parts(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.tokens:
            return state, np.zeros(0)
        return state[: self._size].reshape(self.slices, self.cells), state[self._size:]

    def join(self, q: np.ndarray) -> np.ndarray:
        """The slice densities (S, M)."""
        return self._parts(q)[0] + self.background

    def token_angles(self, state: np.ndarray) -> np.ndarray:
        """The K hybrid tokens' angles (unwrapped)."""
        return self._parts(state)[1].copy()

    def mass_of(self, p: np.ndarray) -> float:
        return float(self.weights @ np.asarray(p).sum(axis=1) * self.dx)

    # ------------------------------------------------------------------ velocity
    def potentials(self, q: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
        """c_l = (W * nu_l)(theta_j), (S, M), in the scaled kernel unit; ``x`` the hybrid
        tokens' angles (atoms of mass token_mass/K in every nu_l)."""
        spec = np.fft.rfft(q, axis=1) * self.weights[:, None]
        cum = np.cumsum(spec, axis=0) - (1.0 - self.self_weight) * spec
        c = np.fft.irfft(cum * self._conv[None, :], n=self.cells, axis=1)
        c += (self._conv[0].real * self.background) * self.attended[:, None]
        if x is not None and x.size:
            k = self.kernel(np.cos(self.theta[:, None] - x[None, :]))   # (M, K)
            c += (self.token_mass / self.tokens) * k.sum(axis=1)[None, :]
        if self.centres.size:
            k = self.kernel(np.cos(self.theta[:, None] - self.centres[None, :]))
            c += (k @ self.centre_mass)[None, :]
        return c

    def token_velocity(self, x: np.ndarray) -> np.ndarray:
        """The hybrid tokens' velocities: token k attends to tokens j <= k (itself included)
        and to the frozen centres, SA (softmax) or USA (times the masses and the rate):
        v_k = <tau_k, V sum_j m_j e^{beta <x_k, B x_j>} x_j> (/ Z_k for SA), the exponent
        shifted by s(x_k) = |B^T x_k| (1 for B = I)."""
        m = np.tril(np.full((x.size, x.size), self.token_mass / self.tokens))
        ang = np.concatenate([np.broadcast_to(x, m.shape), np.broadcast_to(
            self.centres, (x.size, self.centres.size))], axis=1)          # (K, K + C)
        m = np.concatenate([m, np.broadcast_to(self.centre_mass, (x.size,
                                                                  self.centres.size))], axis=1)
        att = self.attention
        if att is None:
            d = x[:, None] - ang
            e = m * np.exp(self.beta * (np.cos(d) - 1.0))
            num, den = -(e * np.sin(d)).sum(axis=1), e.sum(axis=1)
        else:
            xk = np.stack([np.cos(x), np.sin(x)], axis=-1)               # (K, 2)
            tau = np.stack([-np.sin(x), np.cos(x)], axis=-1)
            y = np.stack([np.cos(ang), np.sin(ang)], axis=-1)            # (K, K + C, 2)
            score = np.einsum("ki,ij,klj->kl", xk, att.B, y)
            shift = att.shift(x)
            e = m * np.exp(att.beta * (score - shift[:, None]))
            num = np.einsum("kl,ki,ij,klj->k", e, tau, att.V, y)
            den = e.sum(axis=1)
            if self.model == "usa":
                unit = 1.0 if self.time_unit == "scaled" else 0.0
                return num * np.exp(att.beta * (shift - unit))
            return num / den
        if self.model == "usa":
            return num * self.rate
        return num / den

    def _general_face_velocity(self, q: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Face velocities of every slice's nu_l through the general-attention kernels."""
        att = self.attention
        wq = q * self.weights[:, None]
        dev = np.cumsum(wq, axis=0) - (1.0 - self.self_weight) * wq
        uniform = self.background * self.attended
        angles, masses, num, z = [], [], [], []
        if x.size:
            n_x, z_x = att.atom_fields(x)
            angles.append(x)
            masses.append(np.full(x.size, self.token_mass / self.tokens))
            num.append(n_x)
            z.append(z_x)
        if self.centres.size:
            angles.append(self.centres)
            masses.append(self.centre_mass)
            num.append(self._centre_fields[0])
            z.append(self._centre_fields[1])
        atoms = None
        if angles:
            mass = np.concatenate(masses)
            atoms = (np.concatenate(angles), np.broadcast_to(mass, (self.slices, mass.size)),
                     np.concatenate(num, axis=1), np.concatenate(z, axis=1))
        return att.face_velocity_rows(dev, uniform, atoms)

    def face_velocity(self, q: np.ndarray) -> np.ndarray:
        """v_{l, j+1/2} = (c_{j+1} - c_j)/dx (USA, times the rate), over beta c_face (SA);
        general B, V: the attention drift's face velocities of each nu_l."""
        q, x = self._parts(q)
        if self.attention is not None:
            return self._general_face_velocity(q, x)
        c = self.potentials(q, x)
        dc = np.roll(c, -1, axis=1) - c
        if self.model == "usa":
            return dc * (self.rate / self.dx)
        cf = 0.5 * (c + np.roll(c, -1, axis=1))
        return dc / (self.dx * (self.beta * cf if self.beta > 0 else 1.0))

    # ------------------------------------------------------------------ scheme contract
    def rhs(self, state: np.ndarray) -> np.ndarray:
        v = self.face_velocity(state)
        self.max_speed = float(np.abs(v).max())
        q, x = self._parts(state)
        dq = fv2_divergence(q, v, self.background, self.dx, self.limiter_theta)
        if not self.tokens:
            return dq
        return np.concatenate([dq.ravel(), self.token_velocity(x)])

    def stable_dt(self) -> float:
        return math.inf if self.max_speed <= 0 else self.positivity_factor * self.dx / \
            self.max_speed

    @property
    def accuracy_dt(self) -> float:
        return self.accuracy / self.gamma_max if self.gamma_max else math.inf

    def euler_update(self, q: np.ndarray, dt: float, k: np.ndarray) -> np.ndarray:
        return q + dt * k

    def min_density(self, q: np.ndarray) -> float:
        q = self._parts(q)[0]
        return self.background + float(q.min()) if np.all(np.isfinite(q)) else -math.inf

    def advance(self, q, t: float, t_target: float, stats=None, deadline=None,
                max_steps=None):
        from solvers.stepping import StepStats, advance

        return advance(self, q, t, t_target, integrator=self.integrator,
                       fixed_dt=self.fixed_dt, stats=stats if stats is not None
                       else StepStats(), deadline=deadline, max_steps=max_steps)

    # ------------------------------------------------------------------ diagnostics
    def token_density(self, q: np.ndarray) -> np.ndarray:
        """The label-averaged density of the slices, sum_l w_l p_l / sum_l w_l (the hybrid
        tokens binned in as m/dx per cell)."""
        p = self.weights @ self.join(q)
        x = self._parts(q)[1]
        if x.size:
            cells = np.minimum((np.mod(x, TWO_PI) / self.dx).astype(int), self.cells - 1)
            np.add.at(p, cells, (self.token_mass / self.tokens) / self.dx)
        return p

    def diagnostics(self, q: np.ndarray, modes: int | None = None) -> dict:
        """mass (all slices), min/max density, max speed, the spectrum and TV distance of
        the token-averaged density, and each slice's mass."""
        p = self.token_density(q)
        pbar = float(p.mean())
        modes = self.default_modes() if modes is None else int(modes)
        spec = np.abs(np.fft.rfft(p))[: modes + 1] * self.dx / self.grid.sinc[: modes + 1]
        spec[0] = float(p.sum()) * self.dx
        amp = spec.copy()
        amp[0] /= math.sqrt(TWO_PI)
        amp[1:] /= math.sqrt(math.pi)
        v = self.face_velocity(q)
        dens = self.join(q)
        return {"mass": self.mass_of(dens) + self.token_mass,
                "min_density": self.min_density(q), "max_density": float(dens.max()),
                "max_speed": float(np.abs(v).max()), "spectrum": amp,
                "dominant_mode": int(np.argmax(amp[1:]) + 1) if amp.size > 1 else 0,
                "tv_distance": 0.5 * float(np.abs(p - pbar).sum()) * self.dx,
                "slice_mass": dens.sum(axis=1) * self.dx,
                "energy": math.nan, "ebar": math.nan}
