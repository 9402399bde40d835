"""How a particle state is stored: one strategy object per representation.

* :class:`Angles`: the circle S^1 with Q = K = V = I, state theta of shape (batch, N). With
  d = 2 the dynamics of ``solvers.particles.system`` reduce to
      dtheta_i/dt = -(1/Z_i) sum_j w_ij m_j e^{beta cos(theta_i - theta_j)} sin(theta_i - theta_j)
  ((USA, 1/N): Z_i = N). The angles are not wrapped (``project`` is the identity); pairwise
  sums use the O(N K) Fourier-Bessel path or direct O(N^2) tiles
  (:mod:`solvers.particles.summation`).
* :class:`Vectors`: unit vectors of shape (batch, N, d) on S^{d-1}, any Q, K, V; tiled O(N^2)
  sums with online log-sum-exp; ``project`` renormalises each row.

Both give the system what depends on the storage: state checks, the projection back onto
the sphere, the row sums, the tangential velocity from the attention average and the
unprojected Euler step, speeds, the mean (energy at beta = 0) and the spectral diagnostics.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from meanfield.theory.attention import AttentionMatrices
from meanfield.theory.errors import InputError
from solvers.particles.measures import (
    fourier_coefficients,
    histogram_tv,
    spectrum,
    spectrum_from_coefficients,
)
from solvers.particles.sampling import REPRESENTATIONS, check_choice
from solvers.particles.summation import (
    FourierBessel,
    RowSums,
    direct_angle_sums,
    direct_vector_sums,
    log_pair_sum_from_rows,
)

#: bins of the histogram behind the ``tv_distance`` diagnostic (seed 003, Fig. 3)
TV_BINS = 100


def choose_representation(requested: str, dim: int, identity_qkv: bool) -> str:
    """"angles" or "vectors" for ``requested`` in REPRESENTATIONS: ``auto`` takes angles when
    d = 2 and QKV is the identity; ``angles`` needs both."""
    rep = check_choice(requested, REPRESENTATIONS, "representation")
    circle_ok = dim == 2 and identity_qkv
    if rep == "angles" and not circle_ok:
        raise InputError("representation", "'angles' needs dim = 2 and qkv = identity",
                         requested)
    return "angles" if (rep == "auto" and circle_ok) or rep == "angles" else "vectors"


def make_representation(name: str, count: int, dim: int, beta: float, block: int, *,
                        attention: AttentionMatrices, summation: str, fourier: FourierBessel,
                        unit_masses: bool) -> Representation:
    """The strategy object for ``name`` ("angles" or "vectors"); ``summation`` (one of
    ``SUMMATIONS``) is resolved by it (its ``summation`` attribute)."""
    if name == "angles":
        return Angles(count, beta, block, summation, fourier, unit_masses)
    return Vectors(count, dim, beta, block, attention, summation)


class Representation:
    """Common part of :class:`Angles` and :class:`Vectors`."""

    #: "angles" or "vectors" (``ParticleSystem.representation``)
    name: str
    #: whether ``project`` changes anything (the ODE contract of ``solvers.stepping``)
    projects: bool
    #: number of axes of one system's state ((N,) or (N, d))
    point_ndim: int
    #: the pairwise summation path, "fourier" or "direct"
    summation: str

    def __init__(self, count: int, dim: int, beta: float, block: int) -> None:
        self.count, self.dim, self.beta, self.block = count, dim, beta, block

    def log_pair_sum(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """log sum_ij m_i m_j e^{beta <Q x_i, K x_j>} - beta (unmasked), shape (batch,)."""
        rows = self.row_sums(x, w, causal=False, need_num=False, need_den=True)
        return log_pair_sum_from_rows(rows, w, self.beta)

    def row_sums(self, x: np.ndarray, w: np.ndarray, *, causal: bool, need_num: bool,
                 need_den: bool, need_rad: bool = False) -> RowSums:
        raise NotImplementedError


class Angles(Representation):
    """Angles theta (batch, N) on the circle, identity QKV.

    ``summation`` is "fourier" (O(N K), coefficients of ``fourier``), "direct" or "auto"
    (fourier when N >= 4 K).
    """

    name = "angles"
    projects = False
    point_ndim = 1

    def __init__(self, count: int, beta: float, block: int, summation: str,
                 fourier: FourierBessel, unit_masses: bool) -> None:
        super().__init__(count, 2, beta, block)
        if summation == "auto":
            summation = "fourier" if count >= 4 * fourier.terms else "direct"
        self.summation = summation
        self.fourier_sums = fourier
        self.unit_masses = unit_masses

    def check_state(self, x: ArrayLike, name: str) -> np.ndarray:
        """A finite copy of shape (batch, N)."""
        n = self.count
        th = np.array(x, dtype=float, copy=True)
        if th.ndim == 1:
            th = th[None]
        if th.ndim != 2 or th.shape[1] != n or not np.all(np.isfinite(th)):
            raise InputError(name, f"must be finite angles of shape ({n},) or (batch, {n})",
                             f"shape {np.shape(x)}")
        return th

    def project(self, x: np.ndarray) -> np.ndarray:
        return x

    # ---------------------------------------------------------------- sums and velocities
    def row_sums(self, x: np.ndarray, w: np.ndarray, *, causal: bool, need_num: bool,
                 need_den: bool, need_rad: bool = False) -> RowSums:
        """num: sin(th_i - th_j) sums, den: kernel sums, rad: cos(th_i - th_j) sums."""
        if self.summation == "fourier":
            return self.fourier_sums.row_sums(x, w, causal=causal, need_num=need_num,
                                              need_den=need_den, need_rad=need_rad,
                                              unit_masses=self.unit_masses)
        return direct_angle_sums(x, w, self.beta, self.block, causal=causal,
                                 need_num=need_num, need_rad=need_rad)

    def log_pair_sum(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """With the Fourier path: log(ive_0 |S_0|^2 + 2 sum_k ive_k |S_k|^2)."""
        if self.summation == "fourier":
            return self.fourier_sums.log_pair_sum(x, w)
        return super().log_pair_sum(x, w)

    def tangential(self, fac: np.ndarray, rows: RowSums, x: np.ndarray) -> np.ndarray:
        """dtheta_i/dt = -fac_i num_i (fac = 1/Z_i, or the USA prefactor)."""
        return -fac * rows.num

    def unprojected(self, fac: np.ndarray, rows: RowSums, x: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(f_t, f_r): the attention average u_i = (1/Z_i) sum_j w_ij m_j e^{beta cos} x_j in the
        frame of x_i, u_i = f_r x_i + f_t x_i^perp (f_t = dtheta_i/dt,
        f_r = (1/Z_i) sum_j w_ij m_j e^{beta cos(th_i - th_j)} cos(th_i - th_j))."""
        return -fac * rows.num, fac * rows.rad

    def unprojected_step(self, x: np.ndarray, h: float, u) -> np.ndarray:
        """theta <- theta + atan2(h f_t, 1 + h f_r): the angle of x + h u, exactly."""
        f_t, f_r = u
        return x + np.arctan2(h * f_t, 1.0 + h * f_r)

    def sq_speed(self, v: np.ndarray) -> np.ndarray:
        return v * v

    def speed(self, v: np.ndarray) -> np.ndarray:
        return np.abs(v)

    def mean(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """integral x dmu = N^{-1} sum_j m_j (cos th_j, sin th_j), shape (batch, 2)."""
        return np.stack([(w * np.cos(x)).mean(-1), (w * np.sin(x)).mean(-1)], axis=-1)

    # ---------------------------------------------------------------- diagnostics
    def fourier(self, x: np.ndarray, kmax: int, w: np.ndarray) -> np.ndarray:
        return fourier_coefficients(x, kmax, w)

    def spectral_diagnostics(self, x: np.ndarray, w: np.ndarray, modes: int | None,
                             default_modes: int) -> dict[str, np.ndarray]:
        """spectrum (k = 0..modes, default ``default_modes``), tv_distance (histogram of
        ``TV_BINS`` bins) and tv_fourier_proxy = (2/pi) max_{k>=1} |c_k|."""
        km = default_modes if modes is None else modes
        c = fourier_coefficients(x, km, w)
        return {"spectrum": spectrum_from_coefficients(c),
                "tv_distance": histogram_tv(x, TV_BINS, w),
                "tv_fourier_proxy": (2.0 / math.pi) * np.abs(c[:, 1:]).max(axis=-1,
                                                                            initial=0.0)}


class Vectors(Representation):
    """Unit vectors (batch, N, d) on S^{d-1}, any attention matrices."""

    name = "vectors"
    projects = True
    point_ndim = 2

    def __init__(self, count: int, dim: int, beta: float, block: int,
                 attention: AttentionMatrices, summation: str = "direct") -> None:
        super().__init__(count, dim, beta, block)
        if summation == "fourier":
            raise InputError("summation", "'fourier' needs the circle representation (dim = 2, "
                             "qkv = identity, angles)", summation)
        self.summation = "direct"
        self.attention = attention

    def check_state(self, x: ArrayLike, name: str) -> np.ndarray:
        """A copy of shape (batch, N, d); norms within 1e-6 of 1, renormalised exactly."""
        n, d = self.count, self.dim
        v = np.array(x, dtype=float, copy=True)
        if v.ndim == 2:
            v = v[None]
        if v.ndim != 3 or v.shape[1:] != (n, d) or not np.all(np.isfinite(v)):
            raise InputError(name, f"must be finite unit vectors of shape ({n}, {d}) or "
                             f"(batch, {n}, {d})", f"shape {np.shape(x)}")
        r = np.linalg.norm(v, axis=-1)
        if np.max(np.abs(r - 1.0)) > 1e-6:
            raise InputError(name, "rows must be unit vectors (|x_i| = 1 within 1e-6)",
                             f"max ||x_i| - 1| = {np.max(np.abs(r - 1.0)):.3g}")
        return v / r[..., None]

    def project(self, x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    # ---------------------------------------------------------------- sums and velocities
    def row_sums(self, x: np.ndarray, w: np.ndarray, *, causal: bool, need_num: bool,
                 need_den: bool, need_rad: bool = False) -> RowSums:
        """num: sums of V x_j (batch, N, d); den always computed; no ``rad`` needed."""
        return direct_vector_sums(x, w, self.attention, self.beta, self.block, causal=causal,
                                  need_num=need_num)

    def tangential(self, fac: np.ndarray, rows: RowSums, x: np.ndarray) -> np.ndarray:
        """v_i = P_{x_i} u_i = u_i - <x_i, u_i> x_i with u_i = fac_i num_i."""
        u = fac[..., None] * rows.num
        return u - np.einsum("bnd,bnd->bn", u, x)[..., None] * x

    def unprojected(self, fac: np.ndarray, rows: RowSums, x: np.ndarray) -> np.ndarray:
        """u_i = fac_i num_i, the attention average before the tangential projection."""
        return fac[..., None] * rows.num

    def unprojected_step(self, x: np.ndarray, h: float, u: np.ndarray) -> np.ndarray:
        """x <- (x + h u)/|x + h u|."""
        return self.project(x + h * u)

    def sq_speed(self, v: np.ndarray) -> np.ndarray:
        return np.einsum("bnd,bnd->bn", v, v)

    def speed(self, v: np.ndarray) -> np.ndarray:
        return np.linalg.norm(v, axis=-1)

    def mean(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """integral x dmu = N^{-1} sum_j m_j x_j, shape (batch, d)."""
        return np.einsum("bn,bnd->bd", np.broadcast_to(w, x.shape[:2]), x) / self.count

    # ---------------------------------------------------------------- diagnostics
    def fourier(self, x: np.ndarray, kmax: int, w: np.ndarray) -> np.ndarray:
        raise InputError("representation", "Fourier coefficients need angles; use "
                         "harmonic_power on S^{d-1}")

    def spectral_diagnostics(self, x: np.ndarray, w: np.ndarray, modes: int | None,
                             default_modes: int) -> dict[str, np.ndarray]:
        """spectrum ||P_k mu||, k = 0..modes, only when ``modes`` is given (O(N^2 modes))."""
        if modes is None:
            return {}
        return {"spectrum": spectrum(x, modes, w, block=self.block)}
