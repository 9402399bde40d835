"""Many particle runs advanced together (``Ensemble`` contract of ``solvers.ensemble``): each
member is a ``ParticleSystem`` with its own beta, model, normalisation, time unit, attention
matrices, fixed step, integrator (``euler`` or ``euler-unprojected``), state (one or several
systems), clock, target and step limit; members share N, d and the representation.

One step of a set of rows is one compiled call over all their systems
(``solvers.particles.fused.march`` on unit vectors, ``march_angles`` on angles; parallel over
systems), the same step function the phase diagrams use (``fused.run_batch``): one
implementation of the batched particle step. Per row the kernel takes

* vectors, B = A = Q^T K, V: identity (e^{beta (<x_i, x_j> - 1)} once per pair, BLAS above
  d = ``BLAS_DIM``) or general (s_ij = <x_i, B x_j>, row-max shift); USA prefactor
  a_N e^{log_rate} (identity) or a_N e^{log_rate - beta} (general, times e^{beta max_j s_ij});
  SA 1/Z_i; then x <- (x + h u)/|x + h u| (``euler``: u projected on the tangent space first);
* angles (d = 2, identity): the direct circle sums and theta += atan2(h f_t, 1 + h f_r)
  (``euler``: theta += h f_t), as ``ParticleSystem`` does on angles.

Steps are the member's single run's (``solvers.stepping.advance_ode``): h = dt, or the
remaining time when dt >= remaining (1 - 1e-9), which lands on the target; ``max_steps`` of
``load`` stops early, the system's own ``max_steps`` fails with its message, non-finite
positions fail the member alone. Statistics as ``ParticleSystem.advance``: steps, last_dt,
max_courant = dt / stable_dt and cfl_violations (counted per load), the ``CFLWarning`` on a
first violation.

Equality with single runs: the same formulas in another summation order (numba loops against
numpy/BLAS and its log-sum-exp shift; the single run's Fourier-Bessel circle sums for
N >= 4 K against direct sums), so members agree to round-off: max |x - x_single| <= 1.1e-13
to t = 50 through clustering (N = 32-128, beta 1-5, SA/USA, identity and general QKV, angles
and vectors), clocks and statistics exactly (tests/test_particle_ensemble.py).

The phase diagrams' ``run_batch`` is bitwise unchanged by this sharing (it passes its own
prefactors), and SA members are bitwise its systems (the test). Per-row arrays (``t``,
``target``, ``steps``, the parameters, ``h`` of shape (capacity >= 8, 1)) are indexed by
row; the members' systems are slices of one store.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing

import numba
import numpy as np

from solvers.particles.fused import march, march_angles
from solvers.particles.system import ParticleSystem
from solvers.stepping import StepStats

RULES = ("euler", "euler-unprojected")
_NEVER = np.iinfo(np.int64).max
_ONE = np.ones(1, np.int64)           # one step, no statistics (``fused.march``'s counts)
#: systems x N^2 (x d) of one step from which it runs on all of numba's threads (parallel
#: over systems), unless in a pool worker (the sweeps run one ensemble per core: threads on
#: shared cores wait for each other at every step, 5-10x slower measured); below, on one
#: (on a free 2-core machine 2 threads gain 1.0x, 1.2x, 1.3x, 1.5x, 1.9x at 1, 2, 4, 8, 64
#: members of N = 32, d = 3)
PARALLEL_WORK = 1 << 13


def batchable(system) -> bool:
    """Whether ``system`` can be a member: a plain ``ParticleSystem`` with a fixed step
    (``euler`` or ``euler-unprojected``), no mask, no frozen tokens and unit masses."""
    return (type(system) is ParticleSystem and system.integrator in RULES
            and system.step_size is not None and system.mask == "none"
            and not system.frozen and system._unit_masses)


class ParticleEnsemble:
    """Rows of batchable particle systems (``batchable``) with one N, d and representation.

    ``add(system)`` gives a member its row; ``load(row, state, t, stats, target,
    max_steps=None)`` its state (batch, N) of angles or (batch, N, d) of unit vectors;
    ``pending(rows)``; ``step(rows)`` one step of those rows; ``unload(row)`` returns
    (state, t) and writes the statistics back (see the module docstring)."""

    @classmethod
    def key(cls, system) -> tuple | None:
        """Members with equal keys share an ensemble: ("particles", representation, N, d)."""
        if not batchable(system):
            return None
        return ("particles", system.representation, system.count, system.dim)

    def __init__(self, systems: list | tuple = ()) -> None:
        self.systems: list[ParticleSystem] = []
        self._stats: dict[int, StepStats] = {}
        self._mats: list[tuple[np.ndarray, np.ndarray]] = []
        self._stacks: tuple[np.ndarray, np.ndarray] | None = None
        self._index: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        self._capacity = 0
        self._worker = multiprocessing.parent_process() is not None
        self._used = 0                    # systems' slots handed out in the store
        for s in systems:
            self.add(s)

    # ------------------------------------------------------------------ rows
    def add(self, system) -> int:
        """Give ``system`` a row (all rows share N, d and the representation)."""
        k = self.key(system)
        if k is None:
            raise ValueError("ensemble members must be ParticleSystems with a fixed euler or "
                             "euler-unprojected step, no mask, no frozen tokens, unit masses")
        if self.systems and k != self._key:
            raise ValueError(f"ensemble members must share {self._key[1:]}, got {k[1:]}")
        if not self.systems:
            self._key = k
            self.angles = system.representation == "angles"
            self.count, self.dim = system.count, system.dim
            point = (self.count,) if self.angles else (self.count, self.dim)
            self._store = np.zeros((0, *point))
        row = len(self.systems)
        self.systems.append(system)
        if row >= self._capacity:
            self._grow(max(8, 2 * (row + 1)))
        at = system.attention
        general = not at.identity
        usa = system.model == "usa"
        self.beta[row] = system.beta
        self.usa[row], self.general[row] = usa, general
        self.project[row] = system.integrator == "euler"
        # USA: a_N e^{L_i - beta + log_rate}; identity (angles: L_i = beta) folds e^{L_i - beta}
        # into the kernel's e^{beta (g - 1)}, general applies e^{beta max_j s_ij} in the kernel
        self.factor[row] = system.prefactor * math.exp(
            system.log_rate - (system.beta if general else 0.0)) if usa else 1.0
        self.dt[row] = system.dt
        self.ratio[row] = system.dt / system.stable_dt()
        self.safety[row] = _NEVER if system.max_steps is None else system.max_steps
        self.which[row] = 0
        if general:
            self.which[row] = len(self._mats)
            self._mats.append((np.ascontiguousarray(at.A.T), np.ascontiguousarray(at.V.T)))
            self._stacks = None
        self.first[row], self.size[row] = 0, 0
        return row

    def _grow(self, cap: int) -> None:
        """Room for ``cap`` rows (per-row arrays, the kernels index them by row)."""
        spec = {"beta": float, "factor": float, "dt": float, "ratio": float, "t": float,
                "target": float, "last_dt": float, "usa": np.bool_, "general": np.bool_,
                "project": np.bool_, "moving": np.bool_, "failed": np.bool_, "which": np.int64,
                "first": np.int64, "size": np.int64, "steps": np.int64, "limit": np.int64,
                "safety": np.int64, "before": np.int64}
        for name, dtype in spec.items():
            new = np.zeros(cap, dtype)
            if self._capacity:
                new[: self._capacity] = getattr(self, name)
            setattr(self, name, new)
        old = getattr(self, "h", None)
        self.h = np.zeros((cap, 1))
        if old is not None:
            self.h[: old.shape[0]] = old
        self._capacity = cap

    def _slots(self, row: int, batch: int) -> None:
        """The row's ``batch`` systems in the store (new slots when the batch changes)."""
        if self.size[row] == batch:
            return
        need = self._used + batch
        if need > self._store.shape[0]:
            new = np.zeros((max(8, 2 * need), *self._store.shape[1:]))
            new[: self._used] = self._store[: self._used]
            self._store = new
        self.first[row], self.size[row] = self._used, batch
        self._used = need
        self._index.clear()

    def load(self, row: int, state: np.ndarray, t: float, stats: StepStats, target: float,
             max_steps: int | None = None) -> None:
        """Set a member's state (batch, N[, d]), clock, statistics, target and step limit
        (``stats.steps`` at which to stop, as ``advance(..., max_steps=)``); a first CFL
        violation warns here, as ``ParticleSystem.advance`` does on entry."""
        s = self.systems[row]
        x = np.asarray(state, float)
        point = (self.count,) if self.angles else (self.count, self.dim)
        if x.ndim != len(point) + 1 or x.shape[1:] != point:
            raise ValueError(f"state must have shape (batch, {', '.join(map(str, point))}), "
                             f"got {x.shape}")
        self._slots(row, x.shape[0])
        f = self.first[row]
        self._store[f: f + x.shape[0]] = x
        self.t[row], self.target[row] = t, target
        self.steps[row], self.last_dt[row] = stats.steps, stats.last_dt
        self.limit[row] = _NEVER if max_steps is None else max_steps
        self.before[row] = stats.steps
        self.moving[row] = t < target
        self.failed[row] = False
        if t < target and self.ratio[row] > 1.0 + 1e-12 and stats.cfl_violations == 0:
            # the single run's warning from the system itself: an advance that takes no step
            probe = dataclasses.replace(stats)
            # the class's method: a workflow member's instance ``advance`` is routed to the
            # ensemble itself (``meanfield.ensemble``)
            ParticleSystem.advance(s, x, t, target, probe, max_steps=probe.steps)
        self._stats[row] = stats

    def pending(self, rows: np.ndarray) -> np.ndarray:
        """Which rows still step: t < target, steps below the load's ``max_steps`` and no
        failure since the load."""
        rows = np.asarray(rows, np.int64)
        return (self.t[rows] < self.target[rows]) & (self.steps[rows] < self.limit[rows]) \
            & ~self.failed[rows]

    def unload(self, row: int) -> tuple[np.ndarray, float]:
        """The member's (state, t); steps, last_dt, max_courant and cfl_violations written
        back (``ParticleSystem.advance``'s accounting, once per load; none after a failure,
        where the single run raises)."""
        stats = self._stats[row]
        f, b = self.first[row], self.size[row]
        stats.steps, stats.last_dt = int(self.steps[row]), float(self.last_dt[row])
        if self.moving[row]:
            ratio = float(self.ratio[row])
            stats.max_courant = max(stats.max_courant, ratio)
            if ratio > 1.0 + 1e-12:
                stats.cfl_violations += max(1, int(self.steps[row] - self.before[row]))
            self.moving[row] = False
        return self._store[f: f + b].copy(), float(self.t[row])

    # ------------------------------------------------------------------ stepping
    def _systems(self, rows: np.ndarray) -> tuple:
        """(store slot, row) of every system of ``rows``, the kernel's outputs (ok, empty
        statistics) and whether the step runs on one thread (``PARALLEL_WORK``), kept per
        set of rows."""
        key = rows.tobytes()
        got = self._index.get(key)
        if got is None:
            size = self.size[rows]
            owner = np.repeat(rows, size)
            start = np.cumsum(size) - size
            slots = np.arange(owner.size, dtype=np.int64) + np.repeat(self.first[rows] - start,
                                                                      size)
            work = slots.size * self.count * self.count * (1 if self.angles else self.dim)
            none = np.empty((slots.size, 0))
            if len(self._index) >= 32:
                self._index.clear()
            got = self._index[key] = (slots, owner, np.empty(slots.size, np.bool_), none,
                                      none.astype(np.int64),
                                      work < PARALLEL_WORK or self._worker)
        return got

    def _matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """B^T and V^T of the general members, stacked (one zero pair if none)."""
        if self._stacks is None:
            d = self.dim
            mats = self._mats or [(np.zeros((d, d)), np.zeros((d, d)))]
            self._stacks = (np.stack([m[0] for m in mats]), np.stack([m[1] for m in mats]))
        return self._stacks

    def step(self, rows: np.ndarray) -> dict[int, str]:
        """One step of every row in ``rows`` (all pending); returns {row: message} for the
        rows that failed (the single run's ``SolverError`` messages)."""
        rows = np.ascontiguousarray(rows, np.int64)
        errors: dict[int, str] = {}
        over = self.steps[rows] >= self.safety[rows]
        if over.any():
            for r in rows[over].tolist():
                errors[r] = (f"max_steps = {self.systems[r].max_steps} reached at "
                             f"t = {self.t[r]:.6g}")
                self.moving[r], self.failed[r] = False, True
            rows = rows[~over]
            if not rows.size:
                return errors
        t, target = self.t[rows], self.target[rows]
        remaining = target - t
        dt = self.dt[rows]
        land = dt >= remaining * (1 - 1e-9)     # advance_ode: land exactly, no sliver step
        h = np.where(land, remaining, dt)
        self.h[rows, 0] = h
        slots, owner, ok, none, inone, one = self._systems(rows)
        threads = numba.get_num_threads()
        if one and threads > 1:
            numba.set_num_threads(1)          # this thread's setting, restored below
        try:
            if self.angles:
                march_angles(self._store, slots, owner, self.h, self.beta, self.usa,
                             self.factor, self.project, ok)
            else:
                bt, vt = self._matrices()
                march(self._store, slots, owner, self.h, _ONE, self.beta, self.usa,
                      self.factor, self.project, self.general, bt, vt, self.which, False,
                      0.0, 0.0, none, inone, none, ok)
        finally:
            if one and threads > 1:
                numba.set_num_threads(threads)
        self.t[rows] = np.where(land, target, t + h)
        self.steps[rows] += 1
        self.last_dt[rows] = h
        if not ok.all():
            for r in np.unique(owner[~ok]).tolist():
                s = self.systems[r]
                errors[r] = (f"non-finite positions at t = {self.t[r]:.6g}, step "
                             f"{self.steps[r]} (dt = {self.last_dt[r]:.3e}){s.nonfinite_hint}")
                self.moving[r], self.failed[r] = False, True
        return errors


__all__ = ["RULES", "ParticleEnsemble", "batchable"]
