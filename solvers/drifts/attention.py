"""Self-attention with general query/key/value matrices on the circle (seed 004, eq. 2).

    SA:   v(x) = P_x(V N(x)) / Z(x),   N(x) = int e^{beta <x, B y>} y dmu(y),
                                       Z(x) = int e^{beta <x, B y>} dmu(y)
    USA:  v(x) = P_x(V N(x))           (raw time; ``scaled`` multiplies by e^{-beta})
    beta = inf (eq. 3):  v(x) = P_x(V B^T x / |B^T x|)   (B invertible; no interaction)

with B = Q^T K (any real 2 x 2, not necessarily symmetric), x = (cos theta, sin theta) and
P_x(w) = <tau, w> tau, tau = (-sin theta, cos theta): the angular velocity is <tau, V N>.
B = V = I gives the convolution drift (``solvers.drifts.convolution``) exactly.

The kernel is not a convolution, so the velocity is a quadrature against a kernel matrix
built once per run (O(M^2) memory and work per evaluation, BLAS):

* the density is the band-limited interpolant of the cell averages (as for the convolution
  drift), integrated by the trapezoidal rule on L = max(2M, 1024) points, which is spectrally
  exact while the kernel is resolved; the L-point rows are mapped back to the M cells by
  FFTs (the adjoint of the interpolation), so a row costs O(L log L) to build;
* every kernel value carries the analytic softmax shift e^{-beta s(x)}, s(x) = |B^T x| (the
  maximum of <x, B y> over the circle), so no entry exceeds 1 for any beta;
* SA face velocities are the average over the dual cell [theta_j, theta_{j+1}] (Gauss-
  Legendre, ``nodes`` points) of the shifted numerator <tau, V N> e^{-beta s}, divided by the
  mean of the shifted Z at the two centres: for B = V = I (s = 1) this is (c_{j+1} - c_j)/dx
  over Z at the face, the convolution drift's form, and for any B it is second order (the
  shifted fields vary on the kernel's scale, while e^{beta s} may change by e^{beta dx |s'|}
  across one cell); USA faces average the velocity itself;
* where Z is ringing or round-off rather than the tail (the quadrature cancels, ``Z_CANCEL``:
  no mass near the maximiser of a clustered density), the velocity is recomputed by
  log-sum-exp over the cells (midpoint rule), so |v| <= sigma_max(V) holds everywhere.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from meanfield.theory.checks import check_model, check_time_unit
from meanfield.theory.errors import InputError
from solvers.circle_grid import TWO_PI

#: exponents above this overflow float64 (e^709.78)
EXP_LIMIT = 700.0
#: Z counts as unresolved (the log-sum-exp fallback takes over) where the quadrature cancels:
#: Z_j <= Z_CANCEL sum_i |G_ji| p_i. The band-limited interpolant of a clustered density rings
#: (lobes of both signs), so where the softmax window sees only the tails, Z is the ringing or
#: round-off, not the tail (and |v| could exceed its bound sigma_max(V))
Z_CANCEL = 0.5
#: rows of the kernel matrices built per block (memory ~ rows x nodes x L x 8 bytes)
BLOCK_ROWS = 64


def check_matrix(value: ArrayLike, name: str, dim: int = 2) -> np.ndarray:
    """A finite real dim x dim matrix (InputError naming ``name`` otherwise)."""
    try:
        a = np.array(value, dtype=float)
    except (TypeError, ValueError):
        raise InputError(name, f"must be a real {dim} x {dim} matrix", value) from None
    if a.shape != (dim, dim) or not np.all(np.isfinite(a)):
        raise InputError(name, f"must be a finite real {dim} x {dim} matrix",
                         f"shape {a.shape}")
    return a


def check_beta_inf(beta: float | str) -> float:
    """beta >= 0, or inf (the zero-temperature model)."""
    try:
        b = float(beta)
    except (TypeError, ValueError):
        raise InputError("beta", "must be a number >= 0 or 'inf'", beta) from None
    if math.isnan(b) or b < 0:
        raise InputError("beta", "must be a number >= 0 or 'inf'", beta)
    return b


class GeneralAttention:
    """Self-attention with matrices B = Q^T K and V on the circle (SA or USA; beta = inf).

    Parameters
    ----------
    beta : float
        Inverse temperature >= 0, or ``math.inf`` (zero temperature, eq. 3; needs B
        invertible).
    model : {"sa", "usa"}
    B, V : 2 x 2 arrays
        B = Q^T K (the score <Q x, K y> = <x, B y>) and the value matrix.
    time_unit : {"raw", "scaled"}
        ``scaled`` (USA): velocities times e^{-beta} (the kernel e^{beta(t-1)}).
    nodes : int
        Gauss-Legendre nodes per dual cell for the face averages.
    """

    name = "attention"
    PARAMETERS: ClassVar[dict[str, tuple[Any, str]]] = {
        "beta": (5.0, "inverse temperature (inf: zero temperature)"),
        "model": ("sa", "sa (softmax, seed 004 eq. 2) | usa (unnormalised)"),
        "time_unit": ("raw", "raw | scaled (USA only: velocities times e^{-beta})"),
        "nodes": (10, "Gauss-Legendre nodes per dual cell (face averages)"),
    }
    #: B and V (2 x 2) are keyword parameters too, given by the caller's matrix source
    MATRICES = ("B", "V")

    def __init__(self, beta: float = 5.0, model: str = "sa", B: ArrayLike | None = None,
                 V: ArrayLike | None = None, time_unit: str = "raw", nodes: int = 10) -> None:
        self.beta = check_beta_inf(beta)
        self.model = check_model(model)
        self.time_unit = check_time_unit(time_unit, model)
        self.B = check_matrix(np.eye(2) if B is None else B, "B")
        self.V = check_matrix(np.eye(2) if V is None else V, "V")
        self.nodes = int(nodes)
        if self.nodes < 1:
            raise InputError("nodes", "must be an integer >= 1", nodes)
        sv = np.linalg.svd(self.B, compute_uv=False)
        self.sigma_max, self.sigma_min = float(sv[0]), float(sv[-1])
        self.zero_temperature = math.isinf(self.beta)
        if self.zero_temperature and self.sigma_min <= 1e-12 * max(self.sigma_max, 1.0):
            raise InputError("B", "must be invertible for beta = inf (the maximiser "
                             "B^T x/|B^T x| is undefined where B^T x = 0)",
                             f"sigma_min(B) = {self.sigma_min:.3g}")
        if not self.zero_temperature and self.model == "usa":
            top = self.beta * (self.sigma_max - (1.0 if self.time_unit == "scaled" else 0.0))
            if top > EXP_LIMIT:
                raise InputError("beta", "USA velocities ~ e^{beta sigma_max(B)} overflow "
                                 f"float64 (exponent {top:.4g} > {EXP_LIMIT:g}): use SA, "
                                 "time_unit = 'scaled' or a smaller beta", self.beta)
        self.isotropic = bool(np.array_equal(self.B, np.eye(2))
                              and np.array_equal(self.V, np.eye(2)))
        self.linear_rates: np.ndarray | None = None
        self.background = 1.0 / TWO_PI

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def _frame(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x = (cos, sin) and tau = (-sin, cos) as (n, 2) arrays."""
        c, s = np.cos(theta), np.sin(theta)
        return np.stack([c, s], axis=-1), np.stack([-s, c], axis=-1)

    def shift(self, theta: np.ndarray) -> np.ndarray:
        """s(theta) = |B^T x(theta)| = max_y <x, B y>: the analytic softmax shift."""
        x, _ = self._frame(np.asarray(theta, float))
        return np.linalg.norm(x @ self.B, axis=-1)

    def zero_temperature_velocity(self, theta: ArrayLike) -> np.ndarray:
        """v_inf(theta) = <tau, V B^T x/|B^T x|> (seed 004, eq. 3)."""
        x, tau = self._frame(np.asarray(theta, float))
        y = x @ self.B                       # rows: (B^T x)^T
        y /= np.linalg.norm(y, axis=-1, keepdims=True)
        return np.einsum("ni,ni->n", tau, y @ self.V.T)

    # ------------------------------------------------------------------ contract
    def bind(self, grid) -> None:
        """Kernel matrices (finite beta) or the fixed velocity field (beta = inf), once."""
        self.grid = grid
        self.cells = m = grid.cells
        self.dx = grid.dx
        theta = grid.theta
        faces = theta + 0.5 * self.dx
        if self.zero_temperature:
            self._v_face = self.zero_temperature_velocity(faces)
            self._v_centre = self.zero_temperature_velocity(theta)
            return
        self.quadrature_points = max(2 * m, 1024)
        s_c = self.shift(theta)
        g, w = np.polynomial.legendre.leggauss(self.nodes)
        nodes = theta[:, None] + 0.5 * self.dx * (g[None, :] + 1.0)   # (M, nodes)
        s_nodes = self.shift(nodes)
        s_f = np.maximum(np.maximum(s_c, np.roll(s_c, -1)), s_nodes.max(axis=1))
        self._s_c, self._s_f = s_c, s_f
        # numerator at the faces (dual-cell average), at the centres; Z at the centres. SA
        # averages the shifted numerator N e^{-beta s(theta)} node by node: e^{beta s} can
        # vary by e^{beta dx |s'|} across a cell, the shifted fields only on the kernel's
        # scale, so their ratio to the mean of the shifted Z at the two centres stays
        # second order (for B = I, s = 1: the convolution drift's form). USA, which does not
        # divide, averages N itself with the face's common shift.
        face_shift = s_nodes if self.model == "sa" else np.repeat(s_f[:, None], self.nodes, 1)
        self._num_f = self._matrix(nodes, 0.5 * w, face_shift, numerator=True)
        self._num_c = self._matrix(theta[:, None], np.ones(1), s_c[:, None], numerator=True)
        self._num_f1 = self._num_f.sum(axis=1)  # applied to the uniform part
        self._num_c1 = self._num_c.sum(axis=1)
        if self.model == "sa":
            self._z_c = self._matrix(theta[:, None], np.ones(1), s_c[:, None], numerator=False)
            self._z_c1 = self._z_c.sum(axis=1)
            self._z_abs = np.abs(self._z_c)
        else:
            unit = 1.0 if self.time_unit == "scaled" else 0.0
            self._usa_f = np.exp(self.beta * (s_f - unit))
            self._usa_c = np.exp(self.beta * (s_c - unit))
        if self.isotropic:  # the convolution drift's linear theory applies exactly
            from solvers.drifts.convolution import Convolution

            conv = Convolution(self.beta, self.model, self.time_unit)
            conv.bind(grid)
            self.linear_rates = conv.linear_rates

    def _matrix(self, at: np.ndarray, weights: np.ndarray, shift: np.ndarray, *,
                numerator: bool) -> np.ndarray:
        """G (M x M): (G p)_j = sum_g weights_g e^{-beta shift_jg} int k(at_jg, phi) p~(phi)
        d phi, p~ the band-limited interpolant of the cell averages p; k = e^{beta <x, B y>}
        <tau, V y> (numerator) or e^{beta <x, B y>} (Z)."""
        m, n_q = self.cells, self.quadrature_points
        phi = np.arange(n_q) * (TWO_PI / n_q)
        y = np.stack([np.cos(phi), np.sin(phi)])            # (2, L)
        by = self.B @ y                                      # B y_l
        vy = self.V @ y
        k = np.fft.fftfreq(m, 1.0 / m)
        d = np.exp(-0.5j * k * self.dx) / np.sinc(k * self.dx / TWO_PI)
        if m % 2 == 0:
            d[m // 2] = 0.0                                  # the Nyquist mode is dropped
        half = m // 2
        out = np.empty((m, m))
        for start in range(0, m, BLOCK_ROWS):
            rows = slice(start, min(start + BLOCK_ROWS, m))
            a = at[rows]                                     # (r, g)
            x, tau = self._frame(a)                          # (r, g, 2)
            e = np.exp(self.beta * (x @ by - shift[rows, :, None]))     # (r, g, L)
            if numerator:
                e *= tau @ vy
            r = np.tensordot(e, weights, axes=([1], [0])) * (TWO_PI / n_q)   # (r, L)
            f = np.fft.fft(r, axis=1)
            t = np.zeros((r.shape[0], m), complex)
            t[:, :half] = f[:, :half]
            t[:, half + 1:] = f[:, n_q - (m - half - 1):]
            if m % 2 == 1:
                t[:, half] = f[:, half]
            out[rows] = np.fft.ifft(np.conj(d) * t, axis=1).real
        return out

    def set_background(self, pbar: float) -> None:
        self.background = float(pbar)

    def face_velocity(self, q: np.ndarray) -> np.ndarray:
        if self.zero_temperature:
            return self._v_face.copy()
        pbar = self.background
        num = self._num_f @ q + pbar * self._num_f1
        if self.model == "usa":
            return num * self._usa_f
        z, bad_c = self._z(q)
        den = 0.5 * (z + np.roll(z, -1))
        return self._ratio(num, den, bad_c | np.roll(bad_c, -1), 0.5 * self.dx, q)

    def centre_velocity(self, q: np.ndarray) -> np.ndarray:
        if self.zero_temperature:
            return self._v_centre.copy()
        pbar = self.background
        num = self._num_c @ q + pbar * self._num_c1
        if self.model == "usa":
            return num * self._usa_c
        z, bad = self._z(q)
        return self._ratio(num, z, bad, 0.0, q)

    def _ratio(self, num: np.ndarray, den: np.ndarray, bad: np.ndarray, offset: float,
               q: np.ndarray) -> np.ndarray:
        """num/den, with log-sum-exp where Z is unresolved (points theta_j + offset)."""
        if not bad.any():
            return num / den
        v = num / np.where(bad, 1.0, den)
        v[bad] = self._log_sum_exp(self.grid.theta[bad] + offset, q)
        return v

    def _z(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Z at the centres (shifted) and where it is round-off rather than the tail."""
        z = self._z_c @ q + self.background * self._z_c1
        scale = self._z_abs @ np.abs(self.background + q)
        return z, ~(z > Z_CANCEL * scale)

    def _log_sum_exp(self, at: np.ndarray, q: np.ndarray, pbar: float | None = None,
                     atoms: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """SA velocity at ``at`` by softmax over the cells (midpoint rule, max-shifted) and
        any atoms (angles, masses)."""
        p = (self.background if pbar is None else pbar) + q
        ok = p > 0
        ang, logw = self.grid.theta[ok], np.log(p[ok] * self.dx)
        if atoms is not None:
            keep = atoms[1] > 0
            ang = np.concatenate([ang, atoms[0][keep]])
            logw = np.concatenate([logw, np.log(atoms[1][keep])])
        y = np.stack([np.cos(ang), np.sin(ang)])
        x, tau = self._frame(at)
        s = self.beta * (x @ (self.B @ y)) + logw[None, :]
        s -= s.max(axis=1, keepdims=True)
        w = np.exp(s)
        w /= w.sum(axis=1, keepdims=True)
        return np.einsum("nl,nl->n", w, tau @ (self.V @ y))

    # ------------------------------------------------------------------ many measures
    def atom_fields(self, angles: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Per-atom contributions (M, K) of unit atoms at ``angles``: the shifted numerator
        averaged over each dual cell (the face rows' nodes and weights) and the shifted Z at
        the centres, so that an atom of mass m adds m times its column to the fields the
        kernel matrices give for a density."""
        a = np.asarray(angles, float).ravel()
        y = np.stack([np.cos(a), np.sin(a)])                 # (2, K)
        g, w = np.polynomial.legendre.leggauss(self.nodes)
        theta = self.grid.theta
        nodes = theta[:, None] + 0.5 * self.dx * (g[None, :] + 1.0)
        x, tau = self._frame(nodes)                          # (M, g, 2)
        shift = self.shift(nodes) if self.model == "sa" else \
            np.repeat(self._s_f[:, None], self.nodes, 1)
        e = np.exp(self.beta * (x @ (self.B @ y) - shift[..., None])) * (tau @ (self.V @ y))
        num = np.tensordot(e, 0.5 * w, axes=([1], [0]))     # (M, K)
        xc, _ = self._frame(theta)
        z = np.exp(self.beta * (xc @ (self.B @ y) - self._s_c[:, None]))
        return num, z

    def face_velocity_rows(self, dev: np.ndarray, uniform: np.ndarray,
                           atoms: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
                           | None = None) -> np.ndarray:
        """Face velocities (S, M) for S measures at once, each a density uniform_l + dev_l
        (cell averages) plus atoms: ``atoms`` = (angles (K,), masses (S, K), num (M, K),
        z (M, K)) from :meth:`atom_fields`, row l of masses the atoms measure l sees. One BLAS
        product per field for all rows (the causal solver's prefix sums, ``solvers.causal``);
        row l equals ``face_velocity`` of that measure alone when it has no atoms."""
        if self.zero_temperature:
            return np.broadcast_to(self._v_face, dev.shape).copy()
        u = np.asarray(uniform, float)[:, None]
        num = dev @ self._num_f.T + u * self._num_f1[None, :]
        if atoms is not None:
            num += atoms[1] @ atoms[2].T
        if self.model == "usa":
            return num * self._usa_f[None, :]
        z = dev @ self._z_c.T + u * self._z_c1[None, :]
        scale = np.abs(u + dev) @ self._z_abs.T
        if atoms is not None:
            za = atoms[1] @ atoms[3].T
            z += za
            scale += za
        bad = ~(z > Z_CANCEL * scale)
        bad_f = bad | np.roll(bad, -1, axis=1)
        den = 0.5 * (z + np.roll(z, -1, axis=1))
        if not bad_f.any():
            return num / den
        v = num / np.where(bad_f, 1.0, den)
        for row in np.flatnonzero(bad_f.any(axis=1)):
            at = self.grid.theta[bad_f[row]] + 0.5 * self.dx
            extra = None if atoms is None else (atoms[0], atoms[1][row])
            v[row, bad_f[row]] = self._log_sum_exp(at, dev[row], u[row, 0], extra)
        return v

    def energy(self, q: np.ndarray) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        b = "inf" if self.zero_temperature else self.beta
        vel = ("v = P_x(V B^T x/|B^T x|) (zero temperature)" if self.zero_temperature else
               "SA v = P_x(V int e^{beta<x,By>} y dmu / int e^{beta<x,By>} dmu)"
               if self.model == "sa" else "USA v = P_x(V int e^{beta<x,By>} y dmu)")
        return {"drift": self.name, "model": self.model, "time_unit": self.time_unit,
                "beta": b, "B": self.B.ravel().tolist(), "V": self.V.ravel().tolist(),
                "velocity": vel}
