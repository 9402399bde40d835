"""Many runs of one grid scheme advanced together (ensembles): the members share the grid and
the scheme (fv2 on the circle) but each has its own drift (beta, model, time unit), initial
data, adaptive time step, output times and stop rules.

The contract is that every member's trajectory equals the run of its scheme alone: the same
steps (dt_b = min(cfl * stable_dt_b, accuracy_dt_b), shortened and split exactly as
``solvers.stepping.advance`` does to land on the member's own target), the same SSP-RK3
stages with the same Kahan-compensated update, the same positivity check. What is shared is
the work: the face velocities come from each member's own drift (its planned FFTs), and the
fv2 flux of all members is one compiled loop over the (B, M) block
(:func:`fv2_flux_batch`, the single scheme's arithmetic in the same order, so it is
bitwise equal to ``FiniteVolume.rhs``). Members that reach their target leave the step; a
member whose density turns negative fails alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

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


class BatchedConvolution:
    """The face velocities of ``solvers.drifts.Convolution`` (no atoms, exponential kernel,
    pyfftw, FFT length with small prime factors) for many members at once: one pyfftw plan
    over the rows (ESTIMATE, the single runs' planner: the same codelets per row, so the
    potentials are bitwise the single runs'), then the drift's face formula elementwise."""

    def __init__(self, schemes: list) -> None:
        d = [s.drift for s in schemes]
        self.n = schemes[0].cells
        self.dx = schemes[0].dx
        self.mult = np.stack([x._conv for x in d])                   # (B, M/2 + 1)
        self.usa = np.array([x.model == "usa" for x in d])
        self.scale = np.array([x.rate / x.dx for x in d])              # USA: rate/dx
        self.beta = np.array([float(x.beta) for x in d])
        self.conv0 = np.array([x._conv[0].real for x in d])
        self.drifts = d

    @classmethod
    def of(cls, schemes: list) -> BatchedConvolution | None:
        from solvers.drifts.convolution import Convolution

        ok = all(type(s.drift) is Convolution and s.drift.user_kernel is None
                 and s.grid.fft.backend == "pyfftw" and not s.drift._conv_op.padded
                 for s in schemes)
        return cls(schemes) if ok else None

    def _plan(self, rows: int):
        """pyfftw plans over ``rows`` rows of length n, made once per process (planning
        costs milliseconds; ensembles change size as members come and go)."""
        plan = _PLANS.get((self.n, rows))
        if plan is None:
            import pyfftw

            m = self.n // 2 + 1
            rin = pyfftw.empty_aligned((rows, self.n), dtype="float64")
            cout = pyfftw.empty_aligned((rows, m), dtype="complex128")
            cin = pyfftw.empty_aligned((rows, m), dtype="complex128")
            rout = pyfftw.empty_aligned((rows, self.n), dtype="float64")
            fwd = pyfftw.FFTW(rin, cout, axes=(-1,), direction="FFTW_FORWARD",
                              flags=("FFTW_ESTIMATE",), threads=1)
            bwd = pyfftw.FFTW(cin, rout, axes=(-1,), direction="FFTW_BACKWARD",
                              flags=("FFTW_ESTIMATE", "FFTW_DESTROY_INPUT"), threads=1)
            plan = _PLANS[(self.n, rows)] = (rin, cout, cin, rout, fwd, bwd)
        return plan

    def __call__(self, rows: list[int], q: np.ndarray) -> np.ndarray:
        rin, cout, cin, rout, fwd, bwd = self._plan(len(rows))
        mult, usa, scale, beta, shift = self._rows(rows)
        rin[:] = q
        fwd.execute()
        np.multiply(cout, mult, out=cin)
        bwd.execute()
        v = np.empty((len(rows), self.n))
        convolution_faces(rout, 1.0 / self.n, usa, scale, beta, shift, self.dx, v)
        return v

    def _rows(self, rows: list[int]) -> tuple:
        """The members' multipliers and constants, gathered once per set of rows (the set
        changes only when a member leaves; three RHS per step reuse it)."""
        key = tuple(rows)
        if getattr(self, "_key", None) != key:
            idx = np.asarray(rows)
            bg = np.array([self.drifts[i].background for i in rows])
            self._key = key
            self._gathered = (self.mult[idx], self.usa[idx], self.scale[idx],
                              self.beta[idx], self.conv0[idx] * bg)
        return self._gathered


@dataclass
class Member:
    """One member: its scheme (drift bound, background set), state, clock and statistics."""

    scheme: object
    q: np.ndarray
    t: float
    stats: StepStats


class CircleEnsemble:
    """fv2 schemes (``solvers.circle.FiniteVolume``, same M, SSP-RK3, adaptive steps, no
    atoms) advanced together; see the module docstring."""

    def __init__(self, schemes: list) -> None:
        if not schemes:
            raise ValueError("an ensemble needs at least one member")
        s0 = schemes[0]
        for s in schemes:
            if (s.name != "fv2" or s.cells != s0.cells or s.integrator != "ssprk3"
                    or s.fixed_dt is not None or s.limiter_theta != s0.limiter_theta):
                raise ValueError("ensemble members must be adaptive SSP-RK3 fv2 schemes on "
                                 "the same grid")
        self.schemes = schemes
        self.cells = s0.cells
        self.dx = s0.dx
        self.limiter = s0.limiter_theta
        self._batch = BatchedConvolution.of(schemes)

    def face_velocities(self, rows: list[int], q: np.ndarray) -> np.ndarray:
        """Face velocities of members ``rows``: one batched FFT pair for the convolution
        drifts (bitwise the single drift's arithmetic), each member's own drift otherwise."""
        if self._batch is None:
            v = np.empty_like(q)
            for i, r in enumerate(rows):
                v[i] = self.schemes[r].face_velocity(q[i])
            return v
        return self._batch(rows, q)

    def rhs(self, rows: list[int], q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The fv2 right-hand sides of members ``rows`` at states q (len(rows), M), and their
        max face speeds."""
        v = self.face_velocities(rows, q)
        if getattr(self, "_bg_key", None) != tuple(rows):   # gathered once per set of rows
            self._bg_key = tuple(rows)
            self._bg = np.array([self.schemes[r].background for r in rows])
        bg = self._bg
        out = np.empty_like(q)
        speed = np.empty(len(rows))
        fv2_flux_batch(q, v, bg, self.limiter, 1.0 / self.dx, out, speed)
        return out, speed

    def advance(self, members: list[Member], targets: np.ndarray, *,
                until_any: bool = False) -> list[str | None]:
        """Step every member to its own target time (``solvers.stepping.advance`` for each,
        in lockstep; the step-size rule, stages and compensated update are elementwise the
        single run's, so each member is bitwise its single run); returns per member None, or
        the SolverError message if it failed (that member stops, the others go on).
        ``until_any``: return after the first step at which some member reached its target
        or failed (the others keep their intermediate state and clock)."""
        n = len(members)
        errors: list[str | None] = [None] * n
        if n == 0:
            return errors
        sch = self.schemes
        q = np.stack([m.q for m in members])
        comp = np.stack([np.zeros(self.cells) if m.stats.compensation is None or
                         m.stats.compensation.shape != (self.cells,) else
                         m.stats.compensation for m in members])
        t = np.array([m.t for m in members])
        target = np.asarray(targets, float)
        cfl = np.array([s.cfl for s in sch])
        acc = np.array([s.accuracy_dt for s in sch])
        pf = np.array([s.positivity_factor for s in sch])
        floor = np.array([-1e-12 * s.reference_density for s in sch])
        bg = np.array([s.background for s in sch])
        steps = np.array([m.stats.steps for m in members])
        last_dt = np.array([m.stats.last_dt for m in members])
        courant = np.array([m.stats.max_courant for m in members])
        active = np.flatnonzero(t < target)
        while active.size:
            rows = active.tolist()
            qa = q[active]
            k1, speed = self.rhs(rows, qa)
            with np.errstate(divide="ignore"):
                bound = np.where(speed > 0, pf[active] * self.dx / speed, np.inf)
            dt = np.minimum(cfl[active] * bound, acc[active])
            remaining = target[active] - t[active]
            land = dt >= remaining * (1 - 1e-12)
            dt = np.where(land, remaining, np.where(dt > 0.5 * remaining, 0.5 * remaining,
                                                    dt))
            tn = np.where(land, target[active], t[active] + dt)
            ok = (bound > 0) & np.isfinite(bound)
            with np.errstate(divide="ignore", invalid="ignore"):
                cour = np.where(ok, dt / np.where(ok, bound, 1.0), 0.0)
            d = dt[:, None]
            k2, _ = self.rhs(rows, qa + d * k1)
            k12 = k1 + k2
            k3, _ = self.rhs(rows, qa + (0.25 * d) * k12)
            k12 += 4.0 * k3
            incr = (dt / 6.0)[:, None] * k12
            y = incr - comp[active]
            out = qa + y
            comp[active] = (out - qa) - y
            q[active] = out
            t[active] = tn
            steps[active] += 1
            last_dt[active] = dt
            courant[active] = np.maximum(courant[active], cour)
            for i, r in enumerate(rows):
                sch[r].max_speed = float(speed[i])
            low = bg[active] + out.min(axis=1) < floor[active]
            for i in np.flatnonzero(low):
                r = int(active[i])
                row = out[i]
                what = "non-finite values" if not np.all(np.isfinite(row)) else \
                    f"negative values (min {bg[r] + row.min():.3e})"
                errors[r] = (f"density has {what} at t = {t[r]:.6g}, step {steps[r]} "
                             f"(dt = {dt[i]:.3e}, Courant number {cour[i]:.3g} of the "
                             "scheme's positivity bound): use an adaptive step or a smaller "
                             "dt / CFL number")
            keep = (t[active] < target[active]) & ~low
            if until_any and not keep.all():
                break
            active = active[keep]
        for i, m in enumerate(members):
            m.q, m.t = q[i], float(t[i])
            m.stats.steps, m.stats.last_dt = int(steps[i]), float(last_dt[i])
            m.stats.max_courant = float(courant[i])
            m.stats.compensation = comp[i].copy()
        return errors


__all__ = ["CircleEnsemble", "Member", "SolverError", "fv2_flux_batch"]
