"""Many runs of the zonal finite-volume scheme (``solvers.zonal.Zonal``) advanced together: the
members share the grid (M cells of [0, pi] on S^{d-1}) and the limiter, but each has its own
beta, model, time unit, degree K, CFL number, accuracy, integrator (SSP-RK3 or Euler), fixed or
adaptive step, background pbar, initial data, target time and step limit.

The potential of a block of rows Q (n x M), with A (M x (K*+1)) the cell averages of the zonal
harmonics up to the members' largest degree K*, D = diag(W_j) and G_K = A_K^T D A_K the Gram
matrix of a member's least-squares fit (A_K: the first K+1 columns):

    Z = Q (D A),   y_i = lambda_i (G_K^{-1} Z_i[:K+1]) (0 above K),   C = Y A^T,

i.e. ``Zonal``'s c = A Lambda (A^T D A)^{-1} A^T D q with its factors grouped so that every row,
whatever its degree, is in the same two matrix products (a compiled loop does the (K+1)^2
solve). Then, for every row in one compiled loop (``Zonal.rhs``): v_{j+1/2} =
(c_{j+1} - c_j) rate/h (USA) or (c_{j+1} - c_j) / (h beta ((c_j + c_{j+1})/2 + c_uniform))
(SA, beta > 0), generalised-minmod slopes s_j (zero in the pole cells), F_{j+1/2} =
w_{j+1/2} (v+ (q_j + s_j/2) + v- (q_{j+1} - s_{j+1}/2) + pbar v), F = 0 at the poles,
dq_j/dt = -(F_{j+1/2} - F_{j-1/2})/W_j, and at stage 1 the outflow rates r_j and
stable_dt = min_{r_j > 0} W_j / (2 r_j).

The step is ``solvers.stepping.advance``'s for each member alone: dt = min(cfl stable_dt,
accuracy_dt) or the fixed dt (a step above the bound counted, the member's first one warned),
shortened to land on the target or halved to avoid a sliver; SSP-RK3
q + (dt/6)(k1 + k2 + 4 k3) with Kahan compensation, or Euler q + dt k1; the largest Courant
number; the positivity check (a member that fails stops alone, with the single run's message).

Equality with single runs: given the same potential, the compiled loops are bitwise the single
run (same operations in the same order; tested over whole runs). The potential's products are
grouped differently from the single run's two gemv, so members agree with their single runs to
round-off: the same steps, states and times to 1e-12 relative through the linear phase and
clustering (measured <= 6e-14, tests/test_zonal_ensemble.py).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numba import njit

from solvers.ensemble_contract import advance_members
from solvers.ensemble_kernels import kahan, stage_three
from solvers.stepping import CFLWarning, StepStats
from solvers.zonal import Zonal

#: rows x cells stepped at once, so that a block's stage arrays stay in cache (as
#: ``solvers.ensemble.BLOCK_CELLS``; 32 rows at M = 512)
BLOCK_CELLS = 16384

#: the atom arrays of ``solvers.ensemble_kernels.stage_three`` (zonal members have none)
_NO_ATOMS = np.zeros((0, 0))

#: the step limit of a member loaded without ``max_steps``
NO_LIMIT = np.iinfo(np.int64).max


# ----------------------------------------------------------------------------- kernels
@njit(cache=True, nogil=True, error_model="numpy")
def _maximum(a, b):
    """np.maximum(a, b) (NaN propagates)."""
    return a if (a >= b) | (a != a) else b


@njit(cache=True, nogil=True, error_model="numpy")
def _minimum(a, b):
    """np.minimum(a, b) (NaN propagates)."""
    return a if (a <= b) | (a != a) else b


@njit(cache=True, nogil=True, error_model="numpy")
def _slope(left, right, limiter):
    """``Zonal.rhs``'s generalised minmod: min(min(|l|, |r|) th, |l + r|/2) with the sign of
    l, times (l r > 0)."""
    s = math.copysign(_minimum(_minimum(abs(left), abs(right)) * limiter,
                               0.5 * abs(left + right)), left)
    return s if left * right > 0.0 else s * 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def coefficients(rows, z, group, degree, inv_t, lam, y):
    """y[i, k] = lambda_k a_k, a = G_K^{-1} z[i, :K+1] for k <= K (the row's degree), 0 above:
    the fitted coefficients times the row's Funk-Hecke eigenvalues (inv_t[g] = G_K^{-T} of
    the row's degree group g, padded)."""
    n, width = y.shape
    for i in range(n):
        r = rows[i]
        g, k1 = group[r], degree[r] + 1
        for k in range(width):
            y[i, k] = 0.0
        for col in range(k1):
            zl = z[i, col]
            for k in range(k1):
                y[i, k] += zl * inv_t[g, col, k]
        for k in range(k1):
            y[i, k] *= lam[r, k]


@njit(cache=True, nogil=True, error_model="numpy")
def faces_flux(rows, c, s, sa, scale, beta, cu, h, bg, limiter, wf, weight, out, bound,
               want_bound):
    """For every row i (member rows[i]): ``Zonal.rhs`` at the stage state s[i] with the
    potential c[i] (W * (p - pbar), scaled unit), in its operations and order: out[i] =
    dq/dt; with ``want_bound`` also ``Zonal.stable_dt`` (bound[i]). Simple loops without
    branches (they vectorise; the numpy error model: x/0 is inf or NaN, as in numpy)."""
    n_rows, m = s.shape
    v = np.empty(m - 1)
    d = np.empty(m + 1)
    half = np.empty(m)
    flux = np.empty(m + 1)
    rate = np.empty(m)
    ratio = np.empty(m)
    d[0] = 0.0                 # left difference of the first cell, right one of the last
    d[m] = 0.0
    flux[0] = 0.0              # no flux through the poles
    flux[m] = 0.0
    for i in range(n_rows):
        r = rows[i]
        ci, si, oi = c[i], s[i], out[i]
        if sa[r]:
            b, u = beta[r], cu[r]
            for f in range(m - 1):
                v[f] = (ci[f + 1] - ci[f]) / (h * (b * (0.5 * (ci[f + 1] + ci[f]) + u)))
        else:
            sc = scale[r]
            for f in range(m - 1):
                v[f] = (ci[f + 1] - ci[f]) * sc
        for j in range(1, m):
            d[j] = si[j] - si[j - 1]
        for j in range(m):
            half[j] = 0.5 * _slope(d[j], d[j + 1], limiter)
        p = bg[r]
        for f in range(m - 1):
            vf = v[f]
            flux[f + 1] = wf[f + 1] * (_maximum(vf, 0.0) * (si[f] + half[f])
                                       + _minimum(vf, 0.0) * (si[f + 1] - half[f + 1])
                                       + p * vf)
        for j in range(m):
            oi[j] = -(flux[j + 1] - flux[j]) / weight[j]
        if not want_bound:
            continue
        # outflow rate of cell j through its right (v+) and left (v-) faces (>= +0 or NaN)
        rate[m - 1] = 0.0
        for f in range(m - 1):
            rate[f] = _maximum(0.0, wf[f + 1] * _maximum(v[f], 0.0))
        for f in range(m - 1):
            rate[f + 1] = _maximum(rate[f + 1], -wf[f + 1] * _minimum(v[f], 0.0))
        # 0.5 min over rate_j > 0 of W_j / rate_j: W/0 = inf and NaN never win, and the
        # minimum of positive numbers does not depend on the order (four partial minima)
        for j in range(m):
            ratio[j] = weight[j] / rate[j]
        b0 = b1 = b2 = b3 = np.inf
        j = 0
        while j + 4 <= m:
            b0 = ratio[j] if ratio[j] < b0 else b0
            b1 = ratio[j + 1] if ratio[j + 1] < b1 else b1
            b2 = ratio[j + 2] if ratio[j + 2] < b2 else b2
            b3 = ratio[j + 3] if ratio[j + 3] < b3 else b3
            j += 4
        while j < m:
            b0 = ratio[j] if ratio[j] < b0 else b0
            j += 1
        bound[i] = 0.5 * min(min(b0, b1), min(b2, b3))


@njit(cache=True, nogil=True, error_model="numpy")
def choose_dt(rows, bound, fixed, fixed_dt, cfl, acc, t, target, dt, tn, cour, viol):
    """``solvers.stepping.advance``'s step for every row: the fixed dt (viol[i]: above the
    bound) or min(cfl bound, accuracy_dt), landing exactly on the target (adaptive steps
    halved rather than leaving a sliver); the new time and the Courant number. Returns the
    number of violations."""
    count = 0
    for i in range(rows.size):
        r = rows[i]
        b = bound[i]
        if fixed[r]:
            d = fixed_dt[r]
            viol[i] = d > b * (1 + 1e-12)
            if viol[i]:
                count += 1
        else:
            d = min(cfl[r] * b, acc[r])
            viol[i] = False
        remaining = target[r] - t[r]
        if d >= remaining * (1 - 1e-12):
            d = remaining
            tn[i] = target[r]
        else:
            if not fixed[r] and d > 0.5 * remaining:
                d = 0.5 * remaining
            tn[i] = t[r] + d
        dt[i] = d
        cour[i] = d / b if (b > 0 and math.isfinite(b)) else 0.0
    return count


@njit(cache=True, nogil=True, error_model="numpy")
def stage_input(rows, q, dt, k, s):
    """Stage 2 input s = q + dt k1."""
    n_rows, m = s.shape
    for i in range(n_rows):
        r = rows[i]
        d = dt[i]
        for j in range(m):
            s[i, j] = q[r, j] + d * k[i, j]


@njit(cache=True, nogil=True, error_model="numpy")
def finish(rows, rk3, q, comp, dt, k12, k3, bg, floor, tn, cour, t, steps, last_dt, courant,
           low):
    """SSP-RK3: q += (dt/6)(k12 + 4 k3) with the Kahan compensation comp carried between steps
    (``stepping._compensated_add``); Euler: q += dt k12 (= k1). Then the clock, step count,
    last dt, largest Courant number and low[i]: pbar + min q below floor (or NaN). Returns
    the number of such rows."""
    n_rows, m = k12.shape
    count = 0
    for i in range(n_rows):
        r = rows[i]
        d = dt[i]
        mn = np.inf
        nan = False
        if rk3:
            h = d / 6.0
            for j in range(m):
                x, comp[r, j] = kahan(q[r, j], h * (k12[i, j] + 4.0 * k3[i, j]), comp[r, j])
                q[r, j] = x
                if x < mn:
                    mn = x
                if x != x:
                    nan = True
        else:
            for j in range(m):
                x = q[r, j] + d * k12[i, j]
                q[r, j] = x
                if x < mn:
                    mn = x
                if x != x:
                    nan = True
        low[i] = nan or not (bg[r] + mn >= floor[r])
        if low[i]:
            count += 1
        t[r] = tn[i]
        steps[r] += 1
        last_dt[r] = d
        courant[r] = max(courant[r], cour[i])
    return count


# ----------------------------------------------------------------------------- ensemble
_FLOATS = ("t", "target", "last_dt", "courant", "bg", "cu", "scale", "beta", "cfl", "acc",
           "fixed_dt", "floor")
_INTS = ("steps", "limit", "cfl_violations", "group", "degree")
_BOOLS = ("sa", "fixed", "euler", "failed", "stepped")


class ZonalEnsemble:
    """Rows of ``Zonal`` schemes on one grid (cells, dim, limiter), advanced together.

    ``add(scheme)`` gives a member its row (once); ``load(row, q, t, stats, target,
    max_steps=None)`` sets its deviation q, clock, statistics, target and step limit (its
    background, step parameters and accuracy_dt are read from the scheme then);
    ``pending(rows)``: t < target, steps below the limit, not failed; ``step(rows)`` takes one
    step of those rows and returns {row: SolverError message} for the rows that failed;
    ``unload(row)`` returns (q, t) and writes the statistics back. ``t`` and ``target`` are
    arrays by row. ``advance`` does all of it for a list of members (see the module doc).
    """

    @classmethod
    def key(cls, scheme) -> tuple | None:
        """("zonal", cells, dim, limiter_theta) of a ``Zonal`` (exactly) with a grid
        integrator, else None."""
        if type(scheme) is not Zonal or scheme.integrator not in ("ssprk3", "euler"):
            return None
        return ("zonal", scheme.cells, scheme.dim, scheme.limiter_theta)

    def __init__(self, schemes: list | tuple = ()) -> None:
        self.schemes: list = []
        self.cells = 0
        self._capacity = 0
        self._arrays: dict[str, np.ndarray] = {}
        self._stats: dict[int, StepStats] = {}
        self._rows: dict[int, int] = {}
        self._degrees: dict[int, int] = {}      # degree K -> its index in _inv_t
        self._basis = self._weighted = self._inv_t = np.zeros((0, 0))
        self._plans: dict[bytes, list] = {}
        self._work: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        for s in schemes:
            self.add(s)

    # ------------------------------------------------------------------ rows
    def add(self, scheme) -> int:
        """Give ``scheme`` a row (its degree group and lambda_k); returns the row."""
        key = self.key(scheme)
        if key is None:
            raise ValueError("ensemble members must be solvers.zonal.Zonal schemes")
        if not self.schemes:
            self._key = key
            self.cells, self.h, self.limiter = scheme.cells, scheme.h, scheme.limiter_theta
            self.face_weight = scheme.face_weight.copy()
            self.cell_weight = scheme.cell_weight.copy()
        elif key != self._key:
            raise ValueError(f"ensemble members must share the grid and the limiter: {key} is "
                             f"not {self._key}")
        row = len(self.schemes)
        self.schemes.append(scheme)
        self._rows[id(scheme)] = row
        width = scheme.degree + 1
        self._grow(row + 1, width)
        self.degree[row] = scheme.degree
        self.group[row] = self._group_of(scheme)
        self.lam[row] = 0.0
        self.lam[row, :width] = scheme.lam
        self.euler[row] = scheme.integrator == "euler"
        self._plans.clear()
        return row

    def _group_of(self, scheme) -> int:
        """Index of the scheme's degree K in ``_inv_t`` (G_K^{-T}, the inverse Gram matrix
        of its least-squares fit, as ``Zonal`` factors it); the basis A (and D A) grows to
        the largest degree."""
        k = scheme.degree
        if k in self._degrees:
            return self._degrees[k]
        amat, w = scheme._amat, self.cell_weight
        chol = np.linalg.cholesky((amat.T * w[None, :]) @ amat)
        inv = np.linalg.solve(chol.T, np.linalg.solve(chol, np.eye(k + 1)))
        width = max(k + 1, self._basis.shape[1] if self._degrees else 0)
        if not self._degrees or k + 1 > self._basis.shape[1]:
            self._basis = np.ascontiguousarray(amat)
            self._weighted = np.ascontiguousarray(amat * w[:, None])
        g = len(self._degrees)
        inv_t = np.zeros((g + 1, width, width))
        if g:
            old = self._inv_t
            inv_t[:g, : old.shape[1], : old.shape[2]] = old
        inv_t[g, : k + 1, : k + 1] = inv.T
        self._inv_t = inv_t
        self._degrees[k] = g
        return g

    def _grow(self, n: int, width: int) -> None:
        """Room for n rows and lambda_k up to k = width - 1 (arrays by row; 2 n on growth)."""
        old = self._arrays
        cap = self._capacity if n <= self._capacity else max(8, 2 * n)
        wide = max(width, old["lam"].shape[1] if old else 0)
        if cap == self._capacity and old and old["lam"].shape[1] >= width:
            return
        m = self.cells
        new = {"q": np.zeros((cap, m)), "comp": np.zeros((cap, m)), "lam": np.zeros((cap, wide))}
        new |= {k: np.zeros(cap) for k in _FLOATS}
        new |= {k: np.zeros(cap, np.int64) for k in _INTS}
        new |= {k: np.zeros(cap, np.bool_) for k in _BOOLS}
        for k, v in old.items():
            if v.ndim == 2:
                new[k][: v.shape[0], : v.shape[1]] = v
            else:
                new[k][: v.shape[0]] = v
        self._arrays, self._capacity = new, cap
        for k, v in new.items():
            setattr(self, k, v)

    def row(self, scheme) -> int:
        """The row given to ``scheme`` by ``add``."""
        return self._rows[id(scheme)]

    def load(self, row: int, state: np.ndarray, t: float, stats: StepStats, target: float,
             max_steps: int | None = None) -> None:
        """Set a member's deviation q, clock, statistics, target and step limit; its
        background pbar, c_uniform, step parameters and accuracy_dt are read from its scheme
        (fixed while loaded)."""
        s = self.schemes[row]
        q = np.asarray(state, float)
        if q.shape != (self.cells,):
            raise ValueError(f"state must have shape ({self.cells},), not {q.shape}")
        self.q[row] = q
        comp = stats.compensation
        self.comp[row] = comp if comp is not None and comp.shape == q.shape else 0.0
        self.t[row], self.target[row] = float(t), float(target)
        self.limit[row] = NO_LIMIT if max_steps is None else int(max_steps)
        self.steps[row], self.last_dt[row] = stats.steps, stats.last_dt
        self.courant[row], self.cfl_violations[row] = stats.max_courant, stats.cfl_violations
        self.failed[row] = self.stepped[row] = False
        self.bg[row], self.cu[row] = s.background, s.c_uniform
        self.sa[row] = s._sa
        self.scale[row] = s.rate / s.h
        self.beta[row] = s.beta
        self.cfl[row] = s.cfl
        self.acc[row] = s.accuracy_dt
        self.fixed[row] = s.fixed_dt is not None
        self.fixed_dt[row] = s.fixed_dt if s.fixed_dt is not None else 0.0
        self.floor[row] = -1e-12 * s.reference_density
        self._stats[row] = stats

    def pending(self, rows: np.ndarray) -> np.ndarray:
        """Which rows still step: t < target, steps below the limit and not failed."""
        rows = np.asarray(rows, np.int64)
        return (self.t[rows] < self.target[rows]) & (self.steps[rows] < self.limit[rows]) \
            & ~self.failed[rows]

    def unload(self, row: int) -> tuple[np.ndarray, float]:
        """The member's (q, t); steps, last dt, largest Courant number, CFL violations and
        compensation (None after an Euler step) written back into its ``StepStats``."""
        stats = self._stats[row]
        stats.steps, stats.last_dt = int(self.steps[row]), float(self.last_dt[row])
        stats.max_courant = float(self.courant[row])
        stats.cfl_violations = int(self.cfl_violations[row])
        if self.stepped[row]:
            stats.compensation = None if self.euler[row] else self.comp[row].copy()
        return self.q[row].copy(), float(self.t[row])

    # ------------------------------------------------------------------ stepping
    def _blocks(self, rows: np.ndarray) -> list:
        """The rows of each integrator in blocks of about ``BLOCK_CELLS`` cells (kept for
        the last few row sets)."""
        key = rows.tobytes()
        got = self._plans.get(key)
        if got is None:
            if len(self._plans) >= 32:
                self._plans.clear()
            size = max(1, BLOCK_CELLS // self.cells)
            got = []
            for euler in (False, True):
                sub = rows[self.euler[rows] == euler]
                got += [(np.ascontiguousarray(sub[lo: lo + size]), not euler)
                        for lo in range(0, sub.size, size)]
            self._plans[key] = got
        return got

    def _buffers(self, n: int) -> dict[str, np.ndarray]:
        """A block's work arrays, allocated once per (rows, basis width)."""
        width = self._basis.shape[1]
        w = self._work.get((n, width))
        if w is None:
            m = self.cells
            w = {k: np.empty((n, m)) for k in ("s", "c", "k1", "k2", "k3")}
            w["z"] = np.empty((n, width))
            w["y"] = np.empty((n, width))
            w |= {k: np.empty(n) for k in ("bound", "dt", "tn", "cour", "spare")}
            w |= {k: np.zeros(n, np.bool_) for k in ("viol", "low")}
            self._work[(n, width)] = w
        return w

    def step(self, rows: np.ndarray) -> dict[int, str]:
        """One step of every row in ``rows`` (all pending); returns {row: message} for the rows
        that failed (they stop; ``pending`` is False for them until loaded again)."""
        rows = np.ascontiguousarray(rows, np.int64)
        errors: dict[int, str] = {}
        for block, rk3 in self._blocks(rows):
            errors |= self._step(block, rk3)
        return errors

    def _potential(self, rows: np.ndarray, w: dict) -> None:
        """w["c"] = the potentials W * (p - pbar) of the stage states w["s"]: two matrix
        products for all rows (whatever their degrees) and the rows' coefficients between."""
        np.matmul(w["s"], self._weighted, out=w["z"])
        coefficients(rows, w["z"], self.group, self.degree, self._inv_t, self.lam, w["y"])
        np.matmul(w["y"], self._basis.T, out=w["c"])

    def _rhs(self, rows: np.ndarray, w: dict, k: np.ndarray, bound: np.ndarray,
             want_bound: bool) -> None:
        """k = dq/dt at the stage states w["s"] (and the positivity bound at stage 1)."""
        self._potential(rows, w)
        faces_flux(rows, w["c"], w["s"], self.sa, self.scale, self.beta, self.cu, self.h,
                   self.bg, self.limiter, self.face_weight, self.cell_weight, k, bound,
                   want_bound)

    def _step(self, rows: np.ndarray, rk3: bool) -> dict[int, str]:
        """One step of a block of rows of one integrator."""
        w = self._buffers(rows.size)
        s, k1, k2, k3 = w["s"], w["k1"], w["k2"], w["k3"]
        bound, dt, tn, cour, viol, low = (w[k] for k in ("bound", "dt", "tn", "cour", "viol",
                                                         "low"))
        np.take(self.q, rows, axis=0, out=s)
        self._rhs(rows, w, k1, bound, True)
        if choose_dt(rows, bound, self.fixed, self.fixed_dt, self.cfl, self.acc, self.t,
                     self.target, dt, tn, cour, viol):
            self._violations(rows, viol, bound)
        if rk3:
            stage_input(rows, self.q, dt, k1, s)
            self._rhs(rows, w, k2, w["spare"], False)
            stage_three(rows, self.q, _NO_ATOMS, dt, k1, k2, _NO_ATOMS, _NO_ATOMS, s,
                        _NO_ATOMS)
            self._rhs(rows, w, k3, w["spare"], False)
        failed = finish(rows, rk3, self.q, self.comp, dt, k1, k3, self.bg, self.floor, tn, cour,
                        self.t, self.steps, self.last_dt, self.courant, low)
        self.stepped[rows] = True
        if not failed:
            return {}
        errors: dict[int, str] = {}
        for i in np.flatnonzero(low).tolist():
            r = int(rows[i])
            q = self.q[r]
            what = "non-finite values" if not np.all(np.isfinite(q)) else \
                f"negative values (min {float(self.bg[r]) + float(q.min()):.3e})"
            errors[r] = (f"density has {what} at t = {float(self.t[r]):.6g}, step "
                         f"{int(self.steps[r])} (dt = {float(dt[i]):.3e}, Courant number "
                         f"{float(cour[i]):.3g} of the scheme's positivity bound): use an "
                         "adaptive step or a smaller dt / CFL number")
            self.failed[r] = True
        return errors

    def _violations(self, rows: np.ndarray, viol: np.ndarray, bound: np.ndarray) -> None:
        """Count fixed steps above the bound; a member's first one warns (``advance``'s
        CFLWarning)."""
        for i in np.flatnonzero(viol).tolist():
            r = int(rows[i])
            if self.cfl_violations[r] == 0:
                dt, b, t = float(self.fixed_dt[r]), float(bound[i]), float(self.t[r])
                warnings.warn(
                    f"fixed dt = {dt:.3e} exceeds the positivity/CFL bound {b:.3e} at "
                    f"t = {t:.6g} (Courant number {dt / b:.3g}); the solution may turn "
                    "negative or blow up", CFLWarning, stacklevel=4)
            self.cfl_violations[r] += 1

    def advance(self, members: list, targets, *, max_steps=None) -> list[str | None]:
        """Step members (``solvers.ensemble_contract.Member``; schemes added here) to their
        targets, each stopping early at its own ``max_steps`` (``advance_members``)."""
        rows = np.array([self.row(mb.scheme) for mb in members], np.int64)
        return advance_members(self, rows, members, targets, max_steps)


__all__ = ["ZonalEnsemble"]
