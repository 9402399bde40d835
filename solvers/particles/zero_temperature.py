"""Tokens at zero temperature (beta = inf, seed 004 eq. 3): no interaction, a fixed field

    dx_i/dt = P_{x_i}( V B^T x_i / |B^T x_i| ),      B = Q^T K invertible,

stepped like any particle system (``euler`` is seed 004's Algorithm 2: the projected Euler
step followed by the retraction x <- x/|x|; ``rk4``, ``adaptive``), or along the exact
characteristics (``integrator="exact"``): with A = V B^T and the time change dt = |B^T x| ds
the flow is the Oja flow dx/ds = P_x(A x), solved by x(s) = e^{sA} x_0 / |e^{sA} x_0|
(notes-004 §1.3), so every token stays on its characteristic to round-off; the time change
is inverted per token by Newton's method on t(s) = int_0^s |B^T x(s')| ds' (Gauss-Legendre).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from meanfield.theory.errors import InputError
from solvers.particles.system import ParticleSystem
from solvers.stepping import StepStats, expired

#: Gauss-Legendre nodes for t(s) over one sub-interval of the exact integrator
_GL_NODES = 16


class ZeroTemperatureSystem(ParticleSystem):
    """N tokens on S^{d-1} under the beta = inf field; same interface as ParticleSystem.

    ``qkv`` gives Q, K (B = Q^T K must be invertible) and V; ``integrator`` adds ``exact``
    (characteristics, see the module docstring) to euler | euler-unprojected | rk4 |
    adaptive. Positions are unit vectors (representation ``vectors``). There is no
    interaction energy: energies are NaN.
    """

    def __init__(self, count: int, dim: int = 2, *, qkv="identity", qkv_scale: float = 1.0,
                 integrator: str = "exact", dt: float | None = None, rtol: float = 1e-8,
                 atol: float = 1e-10, batch: int = 1, seed: int | None = None,
                 masses: ArrayLike | None = None, max_steps: int | None = None) -> None:
        self.exact = integrator == "exact"
        super().__init__(count, dim, 0.0, "sa", qkv=qkv, qkv_scale=qkv_scale,
                         integrator="rk4" if self.exact else integrator, dt=dt, rtol=rtol,
                         atol=atol, batch=batch, seed=seed, masses=masses,
                         representation="vectors", max_steps=max_steps)
        self.beta = math.inf
        if self.exact:
            self.integrator = "exact"
        b = self.attention.A             # B = Q^T K
        sv = np.linalg.svd(b, compute_uv=False)
        if sv[-1] <= 1e-12 * max(sv[0], 1.0):
            raise InputError("attention", "B = Q^T K must be invertible at beta = inf (the "
                             "maximiser B^T x/|B^T x| is undefined where B^T x = 0)",
                             f"sigma_min(B) = {sv[-1]:.3g}")
        self.sigma_max, self.sigma_min = float(sv[0]), float(sv[-1])
        self.B, self.V = b, self.attention.V
        self.A = self.V @ b.T
        w, vecs = np.linalg.eig(self.A)
        if np.linalg.cond(vecs) > 1e10:
            if self.exact:
                raise InputError("integrator", "'exact' needs A = V B^T diagonalisable "
                                 "(use rk4 or adaptive)")
        self._eig = (w, vecs, np.linalg.inv(vecs) if np.linalg.cond(vecs) <= 1e10 else None)
        self.gamma_max = None
        if dt is None:
            # exact: sub-steps only keep e^{sA} moderate (|A| s <= 1/2) and t(s) smooth
            self.dt = (0.5 * self.sigma_min / max(np.abs(w).max(), 1e-300) if self.exact
                       else self._default_dt())

    # ------------------------------------------------------------------ velocity
    def _log_lipschitz(self) -> float:
        """log of 2 sigma_max(V) (1 + sigma_max(B)/sigma_min(B)) (notes-004 eq. 25)."""
        b = np.linalg.svd(self.attention.A, compute_uv=False)
        nv = float(np.linalg.norm(self.attention.V, 2))
        return math.log(max(2.0 * nv * (1.0 + b[0] / max(b[-1], 1e-300)), 1e-300))

    def _field(self, x: np.ndarray) -> np.ndarray:
        """V B^T x / |B^T x| (unprojected), batched (batch, N, d)."""
        y = x @ self.B                                    # rows (B^T x)^T
        y /= np.linalg.norm(y, axis=-1, keepdims=True)
        return y @ self.V.T

    def _velocity(self, x: np.ndarray) -> np.ndarray:
        u = self._field(x)
        return u - np.sum(u * x, axis=-1, keepdims=True) * x

    def _unprojected(self, x: np.ndarray):
        return self._field(x)

    def unprojected_step(self, x: np.ndarray, h: float) -> np.ndarray:
        y = x + h * self._field(x)
        return y / np.linalg.norm(y, axis=-1, keepdims=True)

    def _diagnostics(self, x: np.ndarray, modes: int | None) -> dict[str, np.ndarray]:
        v = self._velocity(x)
        nan = np.full(x.shape[0], np.nan)
        return {"energy": nan, "ebar": nan.copy(), "energy_rate": nan.copy(),
                "ebar_rate": nan.copy(), "max_speed": np.linalg.norm(v, axis=-1).max(axis=-1)}

    def _energies(self, x: np.ndarray):
        nan = np.full(x.shape[0], np.nan)
        return nan, nan.copy()

    @property
    def energy_is_lyapunov(self) -> bool:
        return False

    # ------------------------------------------------------------------ characteristics
    def flow(self, x: np.ndarray, s: np.ndarray) -> np.ndarray:
        """e^{sA} x / |e^{sA} x| per token (s broadcast over the last axis of x)."""
        w, vecs, inv = self._eig
        c = np.einsum("ij,...j->...i", inv, x.astype(complex))     # coordinates
        shift = np.max(w.real)                                      # no overflow
        c = c * np.exp(np.asarray(s)[..., None] * (w - shift))
        y = np.einsum("ij,...j->...i", vecs, c).real
        return y / np.linalg.norm(y, axis=-1, keepdims=True)

    def _elapsed(self, x: np.ndarray, s: np.ndarray) -> np.ndarray:
        """t(s) = int_0^s |B^T x(s')| ds' from x (Gauss-Legendre on [0, s] per token)."""
        g, wts = np.polynomial.legendre.leggauss(_GL_NODES)
        nodes = 0.5 * (g + 1.0)[:, None, None] * s[None]           # (n, batch, N)
        y = self.flow(x[None], nodes)
        speed = np.linalg.norm(y @ self.B, axis=-1)
        return 0.5 * s * np.tensordot(wts, speed, axes=1)

    def exact_step(self, x: np.ndarray, h: float) -> np.ndarray:
        """Move every token by time h along its characteristic (Newton on t(s) = h)."""
        s = h / np.linalg.norm(x @ self.B, axis=-1)                 # first guess
        for _ in range(30):
            f = self._elapsed(x, s) - h
            if np.max(np.abs(f)) <= 4e-16 * h:
                break
            s = np.maximum(s - f / np.linalg.norm(self.flow(x, s) @ self.B, axis=-1), 0.0)
        return self.flow(x, s)

    def advance(self, x: np.ndarray, t: float, t_target: float, stats: StepStats,
                deadline: float | None = None, max_steps: int | None = None
                ) -> tuple[np.ndarray, float]:
        if not self.exact:
            return super().advance(x, t, t_target, stats, deadline, max_steps)
        # sub-steps of at most dt keep e^{sA} moderate and the quadrature of t(s) exact
        while t < t_target:
            if expired(deadline):
                break
            if max_steps is not None and stats.steps >= max_steps:
                break
            h = min(self.dt, t_target - t)
            x = self.exact_step(x, h)
            t = t_target if t + h >= t_target - 1e-15 * max(1.0, abs(t_target)) else t + h
            stats.steps += 1
            stats.last_dt = h
        return x, t
