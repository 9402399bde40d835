"""Many runs of one grid scheme advanced together (ensembles): the members share the grid and
the scheme (fv2 on the circle, adaptive SSP-RK3, the convolution drift) but each has its own
beta, model, time unit, initial data, atoms, adaptive time step, output times and stop rules.

The contract is that every member's trajectory is the run of its scheme alone: the same steps
(dt_b = min(cfl * stable_dt_b, accuracy_dt_b), shortened and split exactly as
``solvers.stepping.advance`` does to land on the member's own target), the same SSP-RK3
stages with the same Kahan-compensated update, the same positivity check, and for
``solvers.atoms.AtomicCircle`` members the same events (the member's own ``events`` method,
called whenever it can act: every ``CAPTURE_EVERY`` steps and when two atoms are within the
merge window). What is shared is the work: one pyfftw plan over the members' rows, compiled
loops over the (members x cells) block for the face velocities and the fv2 flux, and over
(members x atom slots) for the atoms' velocities, step bounds and merge trigger
(``solvers.atom_kernels``).

Equality with single runs: while a member has no atoms its arithmetic is the single run's in
the same order, so it is bitwise equal (pyfftw's ESTIMATE plans apply the same codelets to
every row). With atoms, the density's and the atoms' potentials are summed before one inverse
FFT and the atoms' sums run in another order, so members agree with their single runs to
round-off (1e-12 is tested through captures and merges). Members that reach their target
leave the step; a member whose density turns negative fails alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from solvers.atom_kernels import atom_rate, atom_terms, min_gap
from solvers.stepping import SolverError, StepStats


@njit(cache=True, fastmath=False, nogil=True, inline="always")
def _slope(left, right, limiter):
    """minmod(th*left, (left+right)/2, th*right), ``FiniteVolume.rhs``'s operations."""
    b1 = min(abs(left), abs(right)) * limiter
    b2 = abs(left + right) * 0.5
    s = math.copysign(min(b1, b2), left)
    return s if left * right > 0.0 else s * 0.0


@njit(cache=True, fastmath=False, nogil=True)
def fv2_flux_batch(q, v, background, limiter, inv_dx, out, speed):
    """-(F_{j+1/2} - F_{j-1/2})/dx of ``FiniteVolume.rhs`` for every row of q (B, M), face
    velocities v (B, M), per-row backgrounds; ``speed`` receives each row's max |v|."""
    n_rows, m = q.shape
    slope = np.empty(m)
    flux = np.empty(m)
    for r in range(n_rows):
        for j in range(m):
            jm = j - 1 if j > 0 else m - 1
            jp = j + 1 if j < m - 1 else 0
            slope[j] = _slope(q[r, j] - q[r, jm], q[r, jp] - q[r, j], limiter)
        vmax = 0.0
        vmin = 0.0
        for j in range(m):
            jp = j + 1 if j < m - 1 else 0
            vf = v[r, j]
            vp = max(vf, 0.0)
            vm = min(vf, 0.0)
            if vp > vmax:
                vmax = vp
            if vm < vmin:
                vmin = vm
            # F_{j+1/2} = v+ (q_j + s_j/2) + v- (q_{j+1} - s_{j+1}/2) + pbar v
            flux[j] = (q[r, j] + slope[j] * 0.5) * vp + vm * (q[r, jp] - slope[jp] * 0.5) \
                + vf * background[r]
        speed[r] = max(vmax, -vmin)
        for j in range(m):
            jm = j - 1 if j > 0 else m - 1
            out[r, j] = (flux[j] - flux[jm]) * -inv_dx


@njit(cache=True, fastmath=False, nogil=True)
def convolution_faces(raw, inv_n, usa, scale, beta, shift, dx, v):
    """Face velocities of ``Convolution.face_velocity`` from unnormalised inverse FFTs raw
    (rows): c = raw / n; USA v = (c_{j+1} - c_j) scale; SA v = (c_{j+1} - c_j) /
    (dx (beta (0.5 (c_{j+1} + c_j) + shift))) (1 instead of beta (...) at beta = 0); the
    single drift's operations in its order."""
    n_rows, m = raw.shape
    for r in range(n_rows):
        for j in range(m):
            jp = j + 1 if j < m - 1 else 0
            c0 = raw[r, j] * inv_n
            c1 = raw[r, jp] * inv_n
            dc = c1 - c0
            if usa[r]:
                v[r, j] = dc * scale[r]
            else:
                cf = 0.5 * (c1 + c0) + shift[r]
                part = beta[r] * cf if beta[r] > 0 else 1.0
                v[r, j] = dc / (dx * part)


#: pyfftw plans by (n, rows), shared by every ensemble of the process
_PLANS: dict[tuple[int, int], tuple] = {}


def _plan(n: int, rows: int) -> tuple:
    """pyfftw plans over ``rows`` rows of length n, made once per process (ESTIMATE, the
    single runs' planner; planning costs milliseconds and ensembles change size as members
    come and go)."""
    plan = _PLANS.get((n, rows))
    if plan is None:
        import pyfftw

        k = n // 2 + 1
        rin = pyfftw.empty_aligned((rows, n), dtype="float64")
        cout = pyfftw.empty_aligned((rows, k), dtype="complex128")
        cin = pyfftw.empty_aligned((rows, k), dtype="complex128")
        rout = pyfftw.empty_aligned((rows, n), dtype="float64")
        fwd = pyfftw.FFTW(rin, cout, axes=(-1,), direction="FFTW_FORWARD",
                          flags=("FFTW_ESTIMATE",), threads=1)
        bwd = pyfftw.FFTW(cin, rout, axes=(-1,), direction="FFTW_BACKWARD",
                          flags=("FFTW_ESTIMATE", "FFTW_DESTROY_INPUT"), threads=1)
        plan = _PLANS[(n, rows)] = (rin, cout, cin, rout, fwd, bwd)
    return plan


def batchable(scheme) -> bool:
    """Whether ``scheme`` can be a member: fv2 (alone or inside ``AtomicCircle``) with
    adaptive SSP-RK3 steps and the exponential-kernel convolution drift on pyfftw."""
    from solvers.atoms import AtomicCircle
    from solvers.circle import FiniteVolume
    from solvers.drifts.convolution import Convolution

    base = scheme.scheme if type(scheme) is AtomicCircle else scheme
    return (type(base) is FiniteVolume and base.integrator == "ssprk3"
            and base.fixed_dt is None and type(base.drift) is Convolution
            and base.drift.user_kernel is None and base.grid.fft.backend == "pyfftw"
            and not base.drift._conv_op.padded)


@dataclass
class Member:
    """One member: its scheme (drift bound, background set), state, clock and statistics."""

    scheme: object
    q: np.ndarray
    t: float
    stats: StepStats


class CircleEnsemble:
    """Rows of batchable circle schemes (``batchable``) on one grid, advanced together.

    ``add(scheme)`` gives a member its row (once); ``load(row, state, t, stats, target)`` sets
    its state and target; ``step(rows)`` takes one step of those rows; ``unload(row)`` returns
    (state, t) and writes the statistics back. ``advance`` does all of it for a list of
    ``Member`` (see the module docstring)."""

    def __init__(self, schemes: list | tuple = ()) -> None:
        self.schemes: list = []
        self._const: dict[str, Any] = {}
        self.cells = 0
        for s in schemes:
            self.add(s)

    # ------------------------------------------------------------------ rows
    def add(self, scheme) -> int:
        """Give ``scheme`` a row (all rows share the grid and the limiter)."""
        from solvers.atoms import AtomicCircle

        if not batchable(scheme):
            raise ValueError("ensemble members must be adaptive SSP-RK3 fv2 schemes with the "
                             "convolution drift (pyfftw)")
        base = scheme.scheme if type(scheme) is AtomicCircle else scheme
        if not self.schemes:
            self.cells, self.dx, self.limiter = base.cells, base.dx, base.limiter_theta
            self.theta = base.theta
        elif base.cells != self.cells or base.limiter_theta != self.limiter:
            raise ValueError("ensemble members must share the grid and the limiter")
        self.schemes.append(scheme)
        self._const = {}
        n = len(self.schemes)
        m = self.cells
        if n > getattr(self, "_capacity", 0):
            cap = max(8, 2 * n)
            old = getattr(self, "_arrays", None)
            new = {"q": np.zeros((cap, m)), "comp": np.zeros((cap, m)),
                   "x": np.zeros((cap, 1)), "xcomp": np.zeros((cap, 1)),
                   "mass": np.zeros((cap, 1))}
            for k in ("t", "target", "last_dt", "courant", "dmass", "bg"):
                new[k] = np.zeros(cap)
            for k in ("steps", "na", "since"):
                new[k] = np.zeros(cap, np.int64)
            if old is not None:
                for k, v in old.items():
                    if v.ndim == 2:
                        new[k] = np.zeros((cap, v.shape[1]))
                    new[k][: v.shape[0]] = v
            self._arrays, self._capacity = new, cap
            for k, v in new.items():
                setattr(self, k, v)
        return n - 1

    def _slots(self, a: int) -> None:
        """Room for ``a`` atoms per row."""
        if a > self.x.shape[1]:
            for k in ("x", "xcomp", "mass"):
                old = self._arrays[k]
                new = np.zeros((old.shape[0], max(a, 2 * old.shape[1])))
                new[:, : old.shape[1]] = old
                self._arrays[k] = new
                setattr(self, k, new)

    def _constants(self) -> dict[str, Any]:
        """Per-row constants of the schemes (rebuilt when a row is added)."""
        if not self._const:
            from solvers.atoms import AtomicCircle

            bases = [s.scheme if type(s) is AtomicCircle else s for s in self.schemes]
            d = [b.drift for b in bases]
            c: dict[str, Any] = {
                "atomic": np.array([type(s) is AtomicCircle for s in self.schemes]),
                "mult": np.stack([x._conv for x in d]),
                "usa": np.array([x.model == "usa" for x in d]),
                "scale": np.array([x.rate / x.dx for x in d]),
                "rate": np.array([x.rate for x in d]),
                "beta": np.array([float(x.beta) for x in d]),
                "conv0": np.array([x._conv[0].real for x in d]),
                "cfl": np.array([b.cfl for b in bases]),
                "acc": np.array([b.accuracy_dt for b in bases]),
                "accuracy": np.array([b.accuracy for b in bases]),
                "pf": np.array([b.positivity_factor for b in bases]),
                "floor": np.array([-1e-12 * b.reference_density for b in bases]),
                "amult": np.stack([x._atom_mult for x in d]),
                "pgrad": np.stack([x._half_shift * x._point_weights * x._grad for x in d]),
                "pconv": np.stack([x._half_shift * x._point_weights * x._conv for x in d]),
                "window": np.array([getattr(s, "merge_window", 0.0) for s in self.schemes]),
            }
            self._const = c
            self._bases = bases
        return self._const

    def load(self, row: int, state: np.ndarray, t: float, stats: StepStats,
             target: float) -> None:
        """Set a member's state, clock, statistics and target (its atoms from its scheme)."""
        from solvers.atoms import AtomicCircle

        m = self.cells
        s = self.schemes[row]
        state = np.asarray(state, float)
        self.q[row] = state[:m]
        comp = stats.compensation
        ok = comp is not None and comp.shape == state.shape
        self.comp[row] = comp[:m] if ok else 0.0
        na = state.size - m
        if type(s) is AtomicCircle:
            self._slots(na)
            self.x[row, :na] = state[m:]
            self.xcomp[row] = 0.0
            self.xcomp[row, :na] = comp[m:] if ok else 0.0
            self.mass[row] = 0.0
            self.mass[row, :na] = s.atoms.masses
            self.dmass[row] = s.density_mass
            self.since[row] = s.since_capture
            self.bg[row] = s.scheme.background
        else:
            self.bg[row] = s.background
        self.na[row] = na
        self.t[row], self.target[row] = t, target
        self.steps[row], self.last_dt[row] = stats.steps, stats.last_dt
        self.courant[row] = stats.max_courant
        self._stats = getattr(self, "_stats", {})
        self._stats[row] = stats

    def unload(self, row: int) -> tuple[np.ndarray, float]:
        """The member's (state, t); its statistics and event counter written back."""
        from solvers.atoms import AtomicCircle

        s, stats = self.schemes[row], self._stats[row]
        na = int(self.na[row])
        q = self.q[row].copy()
        state = np.concatenate([q, self.x[row, :na]]) if na else q
        stats.steps, stats.last_dt = int(self.steps[row]), float(self.last_dt[row])
        stats.max_courant = float(self.courant[row])
        stats.compensation = np.concatenate([self.comp[row], self.xcomp[row, :na]]) if na \
            else self.comp[row].copy()
        if type(s) is AtomicCircle:
            s._since_capture = int(self.since[row])
        return state, float(self.t[row])

    # ------------------------------------------------------------------ right-hand side
    def _gather(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        key = rows.tobytes()
        if getattr(self, "_gkey", None) != key:
            c = self._constants()
            self._gkey = key
            self._g = {k: v[rows] for k, v in c.items()}
        return self._g

    def rhs(self, rows: np.ndarray, q: np.ndarray, x: np.ndarray | None, g: dict,
            atoms: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        """fv2 right-hand sides of rows at densities q (R, M) and atom positions x (R, A):
        (dq, dx/dt of the atoms, max face speed, max atom speed)."""
        n = self.cells
        rin, cout, cin, rout, fwd, bwd = _plan(n, len(rows))
        rin[:] = q
        fwd.execute()
        np.multiply(cout, g["mult"], out=cin)
        vx = np.zeros_like(x) if atoms else None
        aspeed = np.zeros(len(rows))
        bg = self.bg[rows]
        shift = g["conv0"] * bg
        if atoms:
            atom_terms(cout, x, self.mass[rows], self.na[rows], g["amult"], g["pgrad"],
                       g["pconv"], g["usa"], g["rate"], g["beta"], shift, 1.0 / n, cin, vx,
                       aspeed)
        bwd.execute()
        v = np.empty((len(rows), n))
        convolution_faces(rout, 1.0 / n, g["usa"], g["scale"], g["beta"], shift, self.dx, v)
        out = np.empty_like(q)
        speed = np.empty(len(rows))
        fv2_flux_batch(q, v, bg, self.limiter, 1.0 / self.dx, out, speed)
        if atoms:
            out[(self.na[rows] > 0) & (self.dmass[rows] <= 0)] = 0.0   # atoms alone
        return out, vx, speed, aspeed

    # ------------------------------------------------------------------ stepping
    def step(self, rows: np.ndarray) -> dict[int, str]:
        """One step of every row in ``rows`` (all with t < target); returns {row: message}
        for rows that failed."""
        from solvers.atoms import LINEAR_FRACTION

        g = self._gather(rows)
        na = self.na[rows]
        atoms = bool(na.any())
        qa = self.q[rows]
        xa = self.x[rows] if atoms else None
        k1, kx1, speed, aspeed = self.rhs(rows, qa, xa, g, atoms)
        with np.errstate(divide="ignore"):
            bound = np.where(speed > 0, g["pf"] * self.dx / speed, np.inf)
        acc = g["acc"]
        if atoms:
            has = na > 0
            dens = self.dmass[rows]
            bound = np.where(has & (dens <= 0), np.inf, bound)
            with np.errstate(divide="ignore"):
                bound = np.where(has & (aspeed > 0),
                                 np.minimum(bound, self.dx / np.where(aspeed > 0, aspeed, 1)),
                                 bound)
            total = dens + self.mass[rows].sum(axis=1)
            late = has & (dens < LINEAR_FRACTION * total)
            if late.any():
                ar = np.empty(len(rows))
                atom_rate(xa, self.mass[rows], na, g["usa"], g["rate"], g["beta"], ar)
                rate = ar + g["rate"] * (g["beta"] + 1.0) * dens
                with np.errstate(divide="ignore"):
                    acc = np.where(late, np.where(rate > 0, g["accuracy"] / np.where(
                        rate > 0, rate, 1.0), np.inf), acc)
        dt = np.minimum(g["cfl"] * bound, acc)
        t, target = self.t[rows], self.target[rows]
        remaining = target - t
        land = dt >= remaining * (1 - 1e-12)
        dt = np.where(land, remaining, np.where(dt > 0.5 * remaining, 0.5 * remaining, dt))
        tn = np.where(land, target, t + dt)
        ok = (bound > 0) & np.isfinite(bound)
        with np.errstate(divide="ignore", invalid="ignore"):
            cour = np.where(ok, dt / np.where(ok, bound, 1.0), 0.0)
        d = dt[:, None]
        k2, kx2, _, _ = self.rhs(rows, qa + d * k1, xa + d * kx1 if atoms else None, g,
                                 atoms)
        k12 = k1 + k2
        k3, kx3, _, _ = self.rhs(rows, qa + (0.25 * d) * k12,
                                 xa + (0.25 * d) * (kx1 + kx2) if atoms else None, g, atoms)
        k12 += 4.0 * k3
        out = self._compensated(qa, (dt / 6.0)[:, None] * k12, self.comp, rows)
        self.q[rows] = out
        if atoms:
            kx = kx1 + kx2
            kx += 4.0 * kx3
            self.x[rows] = self._compensated(xa, (dt / 6.0)[:, None] * kx, self.xcomp, rows)
        self.t[rows] = tn
        self.steps[rows] += 1
        self.last_dt[rows] = dt
        self.courant[rows] = np.maximum(self.courant[rows], cour)
        for s, sp in zip(self._bases_of(rows), speed.tolist(), strict=True):
            s.max_speed = sp
        errors: dict[int, str] = {}
        low = self.bg[rows] + out.min(axis=1) < g["floor"]
        for i in np.flatnonzero(low):
            r = int(rows[i])
            row = out[i]
            what = "non-finite values" if not np.all(np.isfinite(row)) else \
                f"negative values (min {self.bg[r] + row.min():.3e})"
            errors[r] = (f"density has {what} at t = {self.t[r]:.6g}, step {self.steps[r]} "
                         f"(dt = {dt[i]:.3e}, Courant number {cour[i]:.3g} of the "
                         "scheme's positivity bound): use an adaptive step or a smaller "
                         "dt / CFL number")
        if g["atomic"].any():
            self._events(rows, g, xa, t, errors)
        return errors

    def _bases_of(self, rows: np.ndarray) -> list:
        self._constants()
        return [self._bases[r] for r in rows.tolist()]

    @staticmethod
    def _compensated(p: np.ndarray, incr: np.ndarray, comp: np.ndarray,
                     rows: np.ndarray) -> np.ndarray:
        """p + incr with the rows' Kahan compensation (``stepping._compensated_add``)."""
        y = incr - comp[rows]
        out = p + y
        comp[rows] = (out - p) - y
        return out

    def _events(self, rows: np.ndarray, g: dict, x_before: np.ndarray, t_before: np.ndarray,
                errors: dict) -> None:
        """Atomic members: count the step; call the member's own ``events`` where it can act
        (the capture period is due, or two atoms are within the merge window: the trigger
        is loose by 1e-9 so that ``events`` itself decides), and take its result back."""
        from solvers.atoms import CAPTURE_EVERY

        atomic = g["atomic"]
        self.since[rows[atomic]] += 1
        due = atomic & (self.since[rows] >= CAPTURE_EVERY)
        pairs = atomic & (self.na[rows] >= 2)
        if pairs.any():
            gap = np.empty(len(rows))
            min_gap(self.x[rows], self.na[rows], gap)
            due |= pairs & (gap < g["window"] * (1 + 1e-9))
        m = self.cells
        for i in np.flatnonzero(due).tolist():
            r = int(rows[i])
            if r in errors:
                continue
            s = self.schemes[r]
            na = int(self.na[r])
            state = np.concatenate([self.q[r], self.x[r, :na]])
            before = np.concatenate([self.q[r], x_before[i, :na]]) if na else None
            s._since_capture = int(self.since[r]) - 1     # events counts this step
            new = s.events(state, float(self.t[r]), before, float(t_before[i]))
            self.since[r] = s.since_capture
            if new is state:
                continue
            na = new.size - m
            self._slots(na)
            self.q[r] = new[:m]
            self.comp[r] = 0.0            # the round-off carried belongs to the old state
            self.x[r] = 0.0
            self.x[r, :na] = new[m:]
            self.xcomp[r] = 0.0
            self.mass[r] = 0.0
            self.mass[r, :na] = s.atoms.masses
            self.na[r] = na
            self.dmass[r] = s.density_mass
            self.bg[r] = s.scheme.background

    def advance(self, members: list[Member], targets: np.ndarray, *,
                until_any: bool = False) -> list[str | None]:
        """Step every member to its own target time (``solvers.stepping.advance`` for each,
        in lockstep; see the module docstring); returns per member None, or the SolverError
        message if it failed (that member stops, the others go on). ``until_any``: return
        after the first step at which some member reached its target or failed (the others
        keep their intermediate state and clock). Members must be this ensemble's rows in
        order."""
        n = len(members)
        errors: list[str | None] = [None] * n
        for i, mb in enumerate(members):
            self.load(i, mb.q, mb.t, mb.stats, float(targets[i]))
        active = np.flatnonzero(self.t[:n] < self.target[:n])
        while active.size:
            failed = self.step(active)
            for r, msg in failed.items():
                errors[r] = msg
            keep = (self.t[active] < self.target[active]) & \
                ~np.isin(active, list(failed))
            if until_any and not keep.all():
                break
            active = active[keep]
        for i, mb in enumerate(members):
            mb.q, mb.t = self.unload(i)
        return errors


__all__ = ["CircleEnsemble", "Member", "SolverError", "batchable", "fv2_flux_batch"]
