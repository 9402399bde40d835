"""Many runs of one grid scheme advanced together (ensembles): the members share the grid and
the scheme family but each has its own beta, model, time unit, initial data, atoms, time step
(adaptive or fixed), output times, step limit and stop rules.

``CircleEnsemble`` takes the circle schemes (``solvers.circle``: fv2, rusanov, lf; SSP-RK3 or
Euler) with any drift, and fv2 with the convolution drift inside ``solvers.atoms.AtomicCircle``;
``solvers.zonal_ensemble.ZonalEnsemble`` the zonal scheme; ``solvers.particles.ensemble.
ParticleEnsemble`` fixed-step particle systems. All follow the numbered contract ``Ensemble``
(``solvers.ensemble_contract``) and are registered in ``ENSEMBLES``, through which
``meanfield.ensemble`` drives them.

The contract is that every member's trajectory is the run of its scheme alone: the same steps
(dt_b = min(cfl * stable_dt_b, accuracy_dt_b), or the fixed step, shortened and split exactly
as ``solvers.stepping.advance`` does to land on the member's own target), the same stages
with the same Kahan-compensated update, the same positivity check, and for ``AtomicCircle``
members the same events (the member's own ``events`` method, called whenever it can act:
every ``CAPTURE_EVERY`` steps and when two atoms are within the merge window). What is shared
is the work: one pyfftw plan over the members' rows, compiled loops over the (members x
cells) block for the velocities and fluxes (faces for fv2; centres for rusanov and lf, with
a second inverse transform for SA's potential), and over (members x atom slots) for the
atoms' velocities, step bounds and merge trigger (``solvers.atom_kernels``).

Equality with single runs: while a member has no atoms its arithmetic is the single run's in
the same order, so it is bitwise equal wherever FFTW's batched plan applies the single-row
codelets to every row: measured for every M >= 256 tried (256 .. 8192, and 1000) and every
batch size 1 .. 64; at M <= 128 FFTW vectorises across rows and members agree to round-off
(measured at M = 128: states within 1.4e-13 over 3200 steps, the same steps). With atoms, the
density's and the atoms' potentials are summed before one inverse FFT and the atoms' sums
run in another order, so members agree with their single runs to round-off (1e-12 is tested
through captures and merges). Members that reach their target or step limit leave the step;
a member whose density turns negative fails alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from solvers.atom_kernels import atom_terms, significant_modes
from solvers.atoms import CAPTURE_EVERY, LINEAR_FRACTION, AtomicCircle
from solvers.ensemble_contract import Ensemble, Member, advance_members
from solvers.ensemble_kernels import (
    centres_flux,
    centres_flux_given,
    choose_dt,
    faces_flux,
    faces_flux_given,
    finish,
    finish_euler,
    load_stage,
    periodic_events,
    stage_three,
)
from solvers.particles.ensemble import ParticleEnsemble
from solvers.stepping import SolverError, StepStats
from solvers.zonal_ensemble import ZonalEnsemble

#: rows x cells stepped at once: a block's stage arrays (about ten of them) fit in a 2 MB
#: cache (benchmarks/bench_ensemble.py: at M = 512, 64 rows in one block are no faster than
#: 32, and at M = 4096 large blocks are slower than one row)
BLOCK_CELLS = 16384

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


#: work arrays by (rows, cells, atom slots), shared by every ensemble of the process
_WORK: dict[tuple[int, int, int], dict[str, np.ndarray]] = {}


def _work(rows: int, cells: int, slots: int) -> dict[str, np.ndarray]:
    """A block's stage arrays, allocated once per shape (a step writes every entry it
    reads)."""
    w = _WORK.get((rows, cells, slots))
    if w is None:
        w = {k: np.empty((rows, cells)) for k in ("k1", "k2", "k3")}
        w |= {k: np.zeros((rows, slots)) for k in ("xs", "kx1", "kx2", "kx3")}
        w |= {k: np.zeros(rows) for k in ("speed", "aspeed", "dt", "tn", "cour", "spare",
                                            "aspare")}
        w["low"] = np.zeros(rows, np.bool_)
        _WORK[(rows, cells, slots)] = w
    return w


def _base(scheme):
    """The flux scheme of a member (inside ``AtomicCircle`` or alone)."""
    return scheme.scheme if type(scheme) is AtomicCircle else scheme


def _flux(base) -> str | None:
    """The member's flux family: "faces" (fv2), "rusanov" or "lf" (centre velocities)."""
    from solvers.circle import FiniteVolume, LaxFriedrichs, Rusanov

    return {FiniteVolume: "faces", Rusanov: "rusanov", LaxFriedrichs: "lf"}.get(type(base))


def _spectral(base) -> bool:
    """Whether the member's velocities come from the batched transforms: the
    exponential-kernel convolution drift on pyfftw (a fast length); any other drift computes
    its velocities itself, row by row, and the ensemble batches the rest of the step."""
    from solvers.drifts.convolution import Convolution

    d = base.drift
    return (type(d) is Convolution and d.user_kernel is None
            and base.grid.fft.backend == "pyfftw" and not d._conv_op.padded)


def batchable(scheme) -> bool:
    """Whether ``scheme`` can be a member: a circle scheme of ``solvers.circle.SCHEMES``
    (fv2, rusanov, lf; SSP-RK3 or Euler, adaptive or fixed steps) with any drift, or fv2 with
    adaptive SSP-RK3 and the spectral convolution drift inside ``AtomicCircle``."""
    base = _base(scheme)
    if _flux(base) is None:
        return False
    if type(scheme) is AtomicCircle:
        return (_flux(base) == "faces" and base.integrator == "ssprk3"
                and base.step_size is None and _spectral(base))
    return type(scheme) is type(base)


class CircleEnsemble:
    """Rows of batchable circle schemes (``batchable``) of one flux family and integrator on
    one grid, advanced together.

    ``add(scheme)`` gives a member its row (once); ``load(row, state, t, stats, target)`` sets
    its state and target; ``step(rows)`` takes one step of those rows; ``unload(row)`` returns
    (state, t) and writes the statistics back. ``advance`` does all of it for a list of
    ``Member`` (see the module docstring)."""

    @classmethod
    def key(cls, scheme) -> tuple | None:
        """Members with equal keys share an ensemble: (M, flux family, integrator, limiter,
        spectral drift) of a batchable scheme."""
        if not batchable(scheme):
            return None
        base = _base(scheme)
        return (base.cells, _flux(base), base.integrator, getattr(base, "limiter_theta", 2.0),
                _spectral(base))

    def __init__(self, schemes: list | tuple = ()) -> None:
        self.schemes: list = []
        self._const: dict[str, Any] = {}
        self._stats: dict[int, StepStats] = {}
        self.cells = 0
        for s in schemes:
            self.add(s)

    # ------------------------------------------------------------------ rows
    def add(self, scheme) -> int:
        """Give ``scheme`` a row (all rows share the grid and the limiter)."""
        if not batchable(scheme):
            raise ValueError("ensemble members must be adaptive SSP-RK3 fv2 schemes with the "
                             "convolution drift (pyfftw)")
        key = self.key(scheme)
        if not self.schemes:
            base = _base(scheme)
            self.cells, self.dx, self.theta = base.cells, base.dx, base.theta
            self.flux, self.integrator, self.limiter, self.spectral = key[1:]
            self._key = key
        elif key != self._key:
            raise ValueError("ensemble members must share the grid, the flux family, the "
                             "integrator and the limiter")
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
            new["config_x"] = np.zeros((cap, 1))
            for k in ("t", "target", "last_dt", "courant", "dmass", "bg", "config_t"):
                new[k] = np.zeros(cap)
            for k in ("steps", "na", "since", "config_n", "limit", "viol"):
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
            for k in ("x", "xcomp", "mass", "config_x"):
                old = self._arrays[k]
                new = np.zeros((old.shape[0], max(a, 2 * old.shape[1])))
                new[:, : old.shape[1]] = old
                self._arrays[k] = new
                setattr(self, k, new)

    def _constants(self) -> dict[str, Any]:
        """Per-row constants of the schemes (rebuilt when a row is added)."""
        if not self._const:
            bases = [_base(s) for s in self.schemes]
            d = [b.drift for b in bases]
            c: dict[str, Any] = {
                "atomic": np.array([type(s) is AtomicCircle for s in self.schemes]),
                "cfl": np.array([b.cfl for b in bases]),
                "fixed": np.array([b.step_size or 0.0 for b in bases]),
                "acc": np.array([b.accuracy_dt for b in bases]),
                "accuracy": np.array([b.accuracy for b in bases]),
                "pf": np.array([b.positivity_factor for b in bases]),
                "floor": np.array([-1e-12 * b.reference_density for b in bases]),
                "window": np.array([getattr(s, "merge_window", 0.0) for s in self.schemes]),
                "level": np.array([getattr(s, "capture_level", 2.0) for s in self.schemes]),
                "min_mass": np.array([getattr(s, "capture_min_mass", 0.0)
                                      for s in self.schemes]),
                "width": np.array([getattr(s, "capture_width", 0.0) * self.dx
                                   for s in self.schemes]),
                "residual": np.array([getattr(s, "residual_mass", 0.0)
                                      for s in self.schemes]),
            }
            if self.spectral:
                c |= {
                    "mult": np.stack([x._conv for x in d]),
                    "grad": np.stack([x._grad for x in d]),
                    "usa": np.array([x.model == "usa" for x in d]),
                    "scale": np.array([x.rate / x.dx for x in d]),
                    "rate": np.array([x.rate for x in d]),
                    "beta": np.array([float(x.beta) for x in d]),
                    "conv0": np.array([x._conv[0].real for x in d]),
                    "amult": np.stack([x._atom_mult for x in d]),
                    "pgrad": np.stack([x._half_shift * x._point_weights * x._grad
                                       for x in d]),
                    "pconv": np.stack([x._half_shift * x._point_weights * x._conv
                                       for x in d]),
                    "modes": np.array([significant_modes(x._atom_mult, x._grad, x._conv)
                                       for x in d], np.int64),
                }
            else:       # the drifts give their velocities; the atoms' inputs stay unused
                n = len(d)
                c |= {"usa": np.zeros(n, np.bool_), "rate": np.zeros(n),
                      "beta": np.zeros(n), "conv0": np.zeros(n)}
            self._const = c
            self._bases = bases
        return self._const

    def load(self, row: int, state: np.ndarray, t: float, stats: StepStats, target: float,
             max_steps: int | None = None) -> None:
        """Set a member's state, clock, statistics, target and step limit (its atoms from its
        scheme)."""
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
            self.x[row] = 0.0
            self.x[row, :na] = state[m:]
            self.xcomp[row] = 0.0
            self.xcomp[row, :na] = comp[m:] if ok else 0.0
            self._from_scheme(row)
        else:
            self.bg[row] = s.background
        self.na[row] = na
        self.t[row], self.target[row] = t, target
        self.steps[row], self.last_dt[row] = stats.steps, stats.last_dt
        self.courant[row], self.viol[row] = stats.max_courant, stats.cfl_violations
        self.limit[row] = np.iinfo(np.int64).max if max_steps is None else max_steps
        self._stats[row] = stats

    def pending(self, rows: np.ndarray) -> np.ndarray:
        """Which rows still step: below their target and their step limit."""
        return (self.t[rows] < self.target[rows]) & (self.steps[rows] < self.limit[rows])

    def unload(self, row: int) -> tuple[np.ndarray, float]:
        """The member's (state, t); its statistics and event counter written back."""
        s, stats = self.schemes[row], self._stats[row]
        na = int(self.na[row])
        q = self.q[row].copy()
        state = np.concatenate([q, self.x[row, :na]]) if na else q
        stats.steps, stats.last_dt = int(self.steps[row]), float(self.last_dt[row])
        stats.max_courant = float(self.courant[row])
        stats.cfl_violations = int(self.viol[row])
        stats.compensation = np.concatenate([self.comp[row], self.xcomp[row, :na]]) if na \
            else self.comp[row].copy()
        if self.integrator == "euler":    # an Euler step carries no compensation
            stats.compensation = None
        if type(s) is AtomicCircle:
            self._to_scheme(row)
        return state, float(self.t[row])

    def _from_scheme(self, row: int) -> None:
        """Take an atomic member's atoms, density mass, background and configuration."""
        s = self.schemes[row]
        na = s.atoms.masses.size
        cfg_t, cfg_x = s._config
        self._slots(max(na, cfg_x.size))
        self.mass[row] = 0.0
        self.mass[row, :na] = s.atoms.masses
        self.na[row] = na
        self.dmass[row] = s.density_mass
        self.bg[row] = s.scheme.background
        self.since[row] = s.since_capture
        self.config_t[row] = cfg_t
        self.config_x[row, : cfg_x.size] = cfg_x
        self.config_n[row] = cfg_x.size

    def _to_scheme(self, row: int) -> None:
        """Give an atomic member back its atoms' bookkeeping (the batch kept it while the
        member was loaded)."""
        s = self.schemes[row]
        na = int(self.na[row])
        s.atoms.masses = self.mass[row, :na].copy()
        s.density_mass = float(self.dmass[row])
        s.scheme.set_background(float(self.bg[row]))
        s._config = (float(self.config_t[row]),
                     self.config_x[row, : int(self.config_n[row])].copy())
        s._since_capture = int(self.since[row])
        x = self.x[row, :na].copy()
        s._last_positions = x
        s.scheme.drift.set_atoms(x, s.atoms.masses)

    # ------------------------------------------------------------------ right-hand side
    def _gather(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The rows' constants, kept for the last few sets of rows (blocks alternate, and a
        set changes only when a member arrives or leaves)."""
        c = self._constants()
        cache = getattr(self, "_gathered", None)
        if cache is None or cache[0] is not c:
            cache = self._gathered = (c, {})
        key = rows.tobytes()
        g = cache[1].get(key)
        if g is None:
            if len(cache[1]) >= 32:
                cache[1].clear()
            g = {k: v[rows] for k, v in c.items()}
            n = rows.size
            # flags and the atom-free rows' inputs, so that a step without atomic members
            # does no per-step work for atoms
            g["atomic_any"], g["fixed_any"] = bool(g["atomic"].any()), bool(g["fixed"].any())
            g["bases_"] = [self._bases[r] for r in rows.tolist()]
            g["no_atoms"] = (np.zeros(n, np.int64), np.zeros((n, 0)), np.zeros(n),
                             np.zeros(n, np.bool_))
            cache[1][key] = g
        return dict(g)

    def _stage(self, plan: tuple, g: dict, xs: np.ndarray, atoms: bool, k: np.ndarray,
               kx: np.ndarray, speed: np.ndarray, aspeed: np.ndarray) -> None:
        """One right-hand side at the stage state in the plan's input rows (densities) and
        xs (atoms): k (dq/dt), kx (the atoms' velocities), the max face and atom speeds."""
        rin, cout, cin, rout, fwd, bwd = plan
        n = self.cells
        if not self.spectral:
            self._given(rin, g, k, speed)
            return
        if self.flux != "faces":
            self._centres(plan, g, k, speed)
            return
        fwd.execute()
        np.multiply(cout, g["mult"], out=cin)
        if atoms:
            kx[:] = 0.0
            atom_terms(cout, xs, g["mass_"], g["na_"], g["amult"], g["pgrad"], g["pconv"],
                       g["modes"], g["usa"], g["rate"], g["beta"], g["shift_"], 1.0 / n, cin,
                       kx, aspeed)
        bwd.execute()
        faces_flux(rout, 1.0 / n, rin, g["usa"], g["scale"], g["beta"], g["shift_"], self.dx,
                   g["bg_"], self.limiter, 1.0 / self.dx, g["still_"], k, speed)

    def _given(self, rin: np.ndarray, g: dict, k: np.ndarray, speed: np.ndarray) -> None:
        """The right-hand side with velocities from each member's own drift (called on a
        copy of its stage state, as its scheme's ``rhs`` would), the flux batched."""
        n_rows, m = rin.shape
        vel = np.empty((n_rows, m))
        faces = self.flux == "faces"
        for i, b in enumerate(g["bases_"]):
            d = b.drift
            vel[i] = d.face_velocity(rin[i].copy()) if faces else \
                d.centre_velocity(rin[i].copy())
        if faces:
            faces_flux_given(vel, rin, g["bg_"], self.limiter, 1.0 / self.dx, k, speed)
        else:
            lf = self.flux == "lf"
            centres_flux_given(vel, rin, g["bg_"], lf, 0.5 / self.dx if lf else -1.0 / self.dx,
                               k, speed)

    def _centres(self, plan: tuple, g: dict, k: np.ndarray, speed: np.ndarray) -> None:
        """Rusanov's or Lax-Friedrichs' right-hand side: the centre velocities by the spectral
        derivative (and, for SA rows, the potential: a second inverse transform per row)."""
        rin, cout, cin, rout, fwd, bwd = plan
        n_rows, n = rin.shape
        fwd.execute()
        if g["usa"].all():
            np.multiply(cout, g["grad"], out=cin)
            bwd.execute()
            rawg = rawc = rout
        else:
            _, _, cin2, rout2, _, bwd2 = _plan(n, 2 * n_rows)
            np.multiply(cout, g["grad"], out=cin2[:n_rows])
            np.multiply(cout, g["mult"], out=cin2[n_rows:])
            bwd2.execute()
            rawg, rawc = rout2[:n_rows], rout2[n_rows:]
        lf = self.flux == "lf"
        scale = 0.5 / self.dx if lf else -1.0 / self.dx
        centres_flux(rawg, rawc, 1.0 / n, rin, g["usa"], g["rate"], g["beta"], g["shift_"],
                     g["bg_"], lf, scale, k, speed)

    def step(self, rows: np.ndarray) -> dict[int, str]:
        """One step of every row in ``rows`` (all with t < target); returns {row: message}
        for rows that failed. Rows are stepped in blocks of about ``BLOCK_CELLS`` cells,
        so that a block's stage arrays stay in cache (rows are independent)."""
        rows = np.ascontiguousarray(rows, np.int64)
        size = max(1, BLOCK_CELLS // self.cells)
        if rows.size <= size:
            return self._step(rows)
        errors: dict[int, str] = {}
        for lo in range(0, rows.size, size):
            errors |= self._step(rows[lo: lo + size])
        return errors

    def _step(self, rows: np.ndarray) -> dict[int, str]:
        """One step of a block of rows (``solvers.ensemble_kernels`` has the sequence)."""
        n_rows, m = rows.size, self.cells
        g = self._gather(rows)
        g["bg_"] = self.bg[rows]
        g["shift_"] = g["conv0"] * g["bg_"]
        if g["atomic_any"]:
            na = self.na[rows]
            atoms = bool(na.any())
            width = self.x.shape[1] if atoms else 0
            g["na_"], g["mass_"] = na, self.mass[rows, :width]
            dmass = self.dmass[rows]
            g["still_"] = (na > 0) & (dmass <= 0)
        else:
            atoms, width = False, 0
            na, g["mass_"], dmass, g["still_"] = g["no_atoms"]
            g["na_"] = na
        plan = _plan(m, n_rows)
        rin = plan[0]
        w = _work(n_rows, m, width)
        xs, k1, k2, k3, kx1, kx2, kx3 = (w[k] for k in ("xs", "k1", "k2", "k3", "kx1", "kx2",
                                                         "kx3"))
        speed, aspeed, dt, tn, cour = (w[k] for k in ("speed", "aspeed", "dt", "tn", "cour"))
        x = self.x if atoms else self.x[:, :0]
        load_stage(rows, self.q, x, rin, xs)
        x_before = xs.copy() if atoms else xs
        aspeed[:] = 0.0
        self._stage(plan, g, xs, atoms, k1, kx1, speed, aspeed)
        rk3 = self.integrator == "ssprk3"
        viol_before = self.viol[rows] if g["fixed_any"] else None
        choose_dt(rows, speed, aspeed, g["pf"], self.dx, g["cfl"], g["acc"], g["accuracy"],
                  g["rate"], g["beta"], g["usa"], dmass, na, g["mass_"], xs,
                  LINEAR_FRACTION, self.t, self.target, self.q, k1, kx1, g["fixed"],
                  self.viol, rk3, dt, tn, cour, rin, xs)
        t_before = self.t[rows]
        low = w["low"]
        if rk3:
            self._stage(plan, g, xs, atoms, k2, kx2, w["spare"], w["aspare"])
            stage_three(rows, self.q, x, dt, k1, k2, kx1, kx2, rin, xs)
            self._stage(plan, g, xs, atoms, k3, kx3, w["spare"], w["aspare"])
            failed = finish(rows, self.q, self.comp, x, self.xcomp, dt, k1, k3, kx1, kx3,
                            self.bg, g["floor"], tn, cour, self.t, self.steps, self.last_dt,
                            self.courant, low)
        else:
            failed = finish_euler(rows, self.q, self.comp, dt, k1, self.flux == "lf", self.bg,
                                  g["floor"], tn, cour, self.t, self.steps, self.last_dt,
                                  self.courant, low)
        if g["fixed_any"] and (viol_before == 0).any():
            self._warn(rows, viol_before, g["fixed"], dt, cour, t_before)
        errors: dict[int, str] = {}
        for i in np.flatnonzero(low).tolist() if failed else ():
            r = int(rows[i])
            row = self.q[r]
            what = "non-finite values" if not np.all(np.isfinite(row)) else \
                f"negative values (min {self.bg[r] + row.min():.3e})"
            errors[r] = (f"density has {what} at t = {self.t[r]:.6g}, step {self.steps[r]} "
                         f"(dt = {dt[i]:.3e}, Courant number {cour[i]:.3g} of the "
                         "scheme's positivity bound): use an adaptive step or a smaller "
                         "dt / CFL number")
        if g["atomic_any"]:
            self._events(rows, g, x_before, t_before, errors)
        return errors

    def _warn(self, rows: np.ndarray, before: np.ndarray, fixed: np.ndarray, dt: np.ndarray,
              cour: np.ndarray, t_before: np.ndarray) -> None:
        """A fixed step's first violation of the bound warns, as ``stepping.advance`` does."""
        import warnings

        from solvers.stepping import CFLWarning

        for i in np.flatnonzero((before == 0) & (self.viol[rows] > 0)).tolist():
            bound = dt[i] / cour[i]       # dt: the fixed step, shortened on a landing
            warnings.warn(
                f"fixed dt = {fixed[i]:.3e} exceeds the positivity/CFL bound {bound:.3e} at "
                f"t = {t_before[i]:.6g} (Courant number {fixed[i] / bound:.3g}); the solution "
                "may turn negative or blow up", CFLWarning, stacklevel=2)

    def _events(self, rows: np.ndarray, g: dict, x_before: np.ndarray, t_before: np.ndarray,
                errors: dict) -> None:
        """Atomic members after a step: ``periodic_events`` counts the step and applies the
        common case (absorb only) in place; where a capture, a merge or the residual is due
        the member's own ``events`` runs on its state and the batch takes its result."""
        python = np.zeros(rows.size, np.bool_)
        periodic_events(rows, g["atomic"], self.since, CAPTURE_EVERY, g["window"], self.q,
                        self.comp, self.x, self.xcomp, self.mass, self.na, self.dmass,
                        self.bg, self.t, self.config_t, self.config_x, self.config_n,
                        g["level"], g["min_mass"], g["width"], g["residual"], self.dx, python)
        m = self.cells
        for i in np.flatnonzero(python).tolist():
            r = int(rows[i])
            if r in errors:
                continue
            s = self.schemes[r]
            na = int(self.na[r])
            self._to_scheme(r)
            state = np.concatenate([self.q[r], self.x[r, :na]])
            before = np.concatenate([self.q[r], x_before[i, :na]]) if na else None
            new = s.events(state, float(self.t[r]), before, float(t_before[i]))
            if new is state:
                self.since[r] = s.since_capture
                continue
            na = new.size - m
            self._slots(na)
            self.q[r] = new[:m]
            self.comp[r] = 0.0            # the round-off carried belongs to the old state
            self.x[r] = 0.0
            self.x[r, :na] = new[m:]
            self.xcomp[r] = 0.0
            self._from_scheme(r)

    def advance(self, members: list[Member], targets: np.ndarray) -> list[str | None]:
        """Step every member to its own target time (``solvers.stepping.advance`` for each,
        in lockstep; see the module docstring); returns per member None, or the SolverError
        message if it failed (that member stops, the others go on). Members must be this
        ensemble's rows in order."""
        return advance_members(self, np.arange(len(members)), members, targets)


#: the batched steppers, tried in order (one line per new kind of member)
ENSEMBLES: tuple[type, ...] = (CircleEnsemble, ZonalEnsemble, ParticleEnsemble)


def ensemble_key(scheme) -> tuple | None:
    """(class, key) of the first ensemble in ``ENSEMBLES`` that takes ``scheme``, or None."""
    for cls in ENSEMBLES:
        k = cls.key(scheme)
        if k is not None:
            return (cls, k)
    return None


__all__ = ["ENSEMBLES", "CircleEnsemble", "Ensemble", "Member", "SolverError", "batchable",
           "ensemble_key"]
