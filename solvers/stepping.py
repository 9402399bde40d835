"""Time stepping shared by every solver: the integrators, one registry, one output loop.

* ``INTEGRATORS`` is the one registry of time integrators. Grid schemes (circle, zonal,
  sphere) take the ``grid`` ones, particle systems the ``ode`` ones.
* :func:`advance` steps a grid scheme (adaptive CFL/accuracy step or a fixed one) to a
  target time; :func:`advance_ode` steps a particle system (fixed step, or Dormand-Prince
  5(4) with error control) on the sphere.
* :func:`march` is the one loop through output times: ``Scheme.run`` and
  ``ParticleSystem.run`` collect results in memory with it, and the workflow's driver writes
  files with it (Dedalus style: the loop knows nothing of files, its handler does output).

Grid scheme contract (see :class:`solvers.contracts.Scheme`): ``rhs(q)`` (records the
largest speed it saw), ``stable_dt()`` (positivity/CFL bound of the last ``rhs`` state),
``accuracy_dt``, ``cfl``, ``reference_density``, ``min_density(q)`` and
``euler_update(q, dt, k)`` (``q + dt k`` except for Lax-Friedrichs, whose averaging is not a
right-hand side).

ODE system contract (particles): ``velocity(x)`` (batched), ``project(x)`` (back onto the
sphere; identity for angles), ``projects`` (whether ``project`` changes anything),
``unprojected_velocity(x)`` (the attention average before the tangential projection, for
``euler-unprojected``; a system may instead give the whole step ``unprojected_step(x, h)``,
e.g. angles, whose renormalisation is an arctangent), ``rtol``, ``atol``, ``max_steps`` and
``nonfinite_hint``.
"""

from __future__ import annotations

import math
import time as _time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class SolverError(RuntimeError):
    """The discrete solution became unphysical (negative or non-finite density or positions)."""


class CFLWarning(UserWarning):
    """A fixed time step exceeds the scheme's stability/positivity bound."""


@dataclass(frozen=True)
class Integrator:
    name: str
    order: int
    grid: bool      # usable by grid schemes (circle, zonal, sphere)
    ode: bool       # usable by particle systems
    doc: str


#: The one registry of time integrators.
INTEGRATORS: dict[str, Integrator] = {
    "ssprk3": Integrator("ssprk3", 3, True, False,
                         "strong-stability-preserving Runge-Kutta 3 (Shu-Osher)"),
    "euler": Integrator("euler", 1, True, True,
                        "forward Euler; particles: projected, x <- (x + dt P_x f)/|...|"),
    "euler-unprojected": Integrator(
        "euler-unprojected", 1, False, True,
        "the papers' particle step: explicit Euler on the unprojected attention average, "
        "then renormalise, x <- (x + dt f)/|x + dt f|"),
    "rk4": Integrator("rk4", 4, False, True, "classical Runge-Kutta 4, renormalised"),
    "adaptive": Integrator("adaptive", 5, False, True,
                           "Dormand-Prince 5(4) with error control, renormalised"),
}


def integrators(kind: str) -> tuple[str, ...]:
    """Names usable by ``kind`` = "grid" or "ode"."""
    return tuple(n for n, i in INTEGRATORS.items() if getattr(i, kind))


@dataclass
class StepStats:
    """Mutable stepping state carried between calls (and saved in checkpoints)."""

    steps: int = 0
    last_dt: float = 0.0
    max_courant: float = 0.0
    cfl_violations: int = 0
    #: low-order bits lost when adding increments to the state (Kahan summation)
    compensation: np.ndarray | None = None
    #: adaptive ODE steps: the proposed next step and the velocity at the state (FSAL)
    dt: float | None = None
    f: np.ndarray | None = None
    rejected: int = 0


def expired(deadline) -> bool:
    """Whether to stop stepping: ``deadline`` is None (never), a time.monotonic() value, or a
    callable returning True once the caller wants to stop (a wall-clock budget, a signal)."""
    if deadline is None:
        return False
    if callable(deadline):
        return bool(deadline())
    return _time.monotonic() > deadline


# ----------------------------------------------------------------------------- grid schemes
def _compensated_add(p: np.ndarray, incr: np.ndarray, stats: StepStats) -> np.ndarray:
    """p + incr with Kahan compensation carried between steps.

    Each cell's rounding error is fed into its next increment instead of accumulating over
    10^5 steps, so the total mass (exact for the flux form in exact arithmetic) stays at
    round-off level over a whole run.
    """
    comp = stats.compensation
    y = incr if comp is None or comp.shape != p.shape else incr - comp
    out = p + y
    stats.compensation = (out - p) - y
    return out


def _check(scheme, q: np.ndarray, t: float, step: int, dt: float, courant: float,
           floor: float) -> None:
    mn = scheme.min_density(q)
    if mn >= floor:
        return
    if not np.all(np.isfinite(q)):
        what = "non-finite values"
    else:
        what = f"negative values (min {mn:.3e})"
    raise SolverError(
        f"density has {what} at t = {t:.6g}, step {step} (dt = {dt:.3e}, Courant number "
        f"{courant:.3g} of the scheme's positivity bound): use an adaptive step or a smaller "
        "dt / CFL number"
    )


def advance(scheme, p: np.ndarray, t: float, t_target: float, *, integrator: str = "ssprk3",
            fixed_dt: float | None = None, stats: StepStats | None = None,
            deadline: float | None = None,
            max_steps: int | None = None) -> tuple[np.ndarray, float]:
    """Integrate a grid scheme from (t, p) to exactly t = ``t_target``.

    The adaptive step is min(cfl * stable_dt, accuracy_dt); a fixed step is used as given
    (a CFL violation warns once per ``stats`` and is counted). Steps are shortened so that
    ``t_target`` is hit exactly, and split evenly instead of leaving a sliver. Raises
    :class:`SolverError` if the density turns negative or non-finite, naming t and the step.
    ``deadline`` (see :func:`expired`) or ``max_steps`` stop early: the returned t is then
    < target.
    """
    stats = stats if stats is not None else StepStats()
    floor = -1e-12 * scheme.reference_density
    while t < t_target:
        if expired(deadline):
            break
        if max_steps is not None and stats.steps >= max_steps:
            break
        k1 = scheme.rhs(p)
        bound = scheme.stable_dt()
        if fixed_dt is not None:
            dt = fixed_dt
            if dt > bound * (1 + 1e-12):
                if stats.cfl_violations == 0:
                    warnings.warn(
                        f"fixed dt = {dt:.3e} exceeds the positivity/CFL bound {bound:.3e} at "
                        f"t = {t:.6g} (Courant number {dt / bound:.3g}); the solution may turn "
                        "negative or blow up", CFLWarning, stacklevel=2)
                stats.cfl_violations += 1
        else:
            dt = min(scheme.cfl * bound, scheme.accuracy_dt)
        remaining = t_target - t
        if dt >= remaining * (1 - 1e-12):
            dt, t_new = remaining, t_target
        else:
            if fixed_dt is None and dt > 0.5 * remaining:
                dt = 0.5 * remaining
            t_new = t + dt
        courant = dt / bound if bound > 0 and math.isfinite(bound) else 0.0
        if integrator == "euler":
            p = scheme.euler_update(p, dt, k1)
            stats.compensation = None
        else:
            # SSP-RK3 (Shu-Osher): u1 = p + dt k1, u2 = 3/4 p + 1/4 (u1 + dt k2),
            # p+ = 1/3 p + 2/3 (u2 + dt k3), i.e. u2 = p + dt (k1 + k2)/4 and
            # p+ = p + dt (k1 + k2 + 4 k3)/6. The second form adds one flux difference to p
            # per step, so round-off in the mass does not pile up stage by stage.
            k2 = scheme.rhs(p + dt * k1)
            k12 = k1 + k2
            k3 = scheme.rhs(p + (0.25 * dt) * k12)
            k12 += 4.0 * k3
            p = _compensated_add(p, (dt / 6.0) * k12, stats)
        t = t_new
        stats.steps += 1
        stats.last_dt = dt
        stats.max_courant = max(stats.max_courant, courant)
        _check(scheme, p, t, stats.steps, dt, courant, floor)
    return p, t


# ----------------------------------------------------------------------------- particles
# Dormand-Prince 5(4) tableau (Hairer, Norsett, Wanner, vol. I, table 5.2)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


def ode_step(system, x: np.ndarray, h: float, rule: str) -> np.ndarray:
    """One fixed step of size h with ``euler``, ``euler-unprojected`` or ``rk4``."""
    f = system.velocity
    if rule == "euler-unprojected":
        own = getattr(system, "unprojected_step", None)  # the system's exact step (angles)
        if own is not None:
            return own(x, h)
        return system.project(x + h * system.unprojected_velocity(x))
    k1 = f(x)
    if rule == "euler":
        return system.project(x + h * k1)
    k2 = f(x + (0.5 * h) * k1)
    k3 = f(x + (0.5 * h) * k2)
    k4 = f(x + h * k3)
    return system.project(x + (h / 6.0) * (k1 + 2.0 * (k2 + k3) + k4))


def _error_norm(system, err: np.ndarray) -> float:
    """RMS of err/(atol + rtol) per system of the batch, the largest over the batch."""
    axes = tuple(range(1, err.ndim))
    return float(np.sqrt(np.mean((err / (system.atol + system.rtol)) ** 2, axis=axes)).max())


def _initial_dt(system, x: np.ndarray, f0: np.ndarray, span: float) -> float:
    """Starting step of Hairer, Norsett & Wanner (II.4) for a 5th-order method."""
    d0 = _error_norm(system, np.ones_like(x))  # positions are O(1)
    d1 = _error_norm(system, f0)
    h0 = 1e-6 if d1 <= 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, span)
    f1 = system.velocity(system.project(x + h0 * f0))
    d2 = _error_norm(system, f1 - f0) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** 0.2
    return min(100 * h0, h1, span)


def _dopri5_step(system, x: np.ndarray, t: float, t_target: float, st: StepStats,
                 first_dt: float | None) -> tuple[np.ndarray, float]:
    """One accepted Dormand-Prince 5(4) step, at most up to t_target."""
    if st.f is None:
        st.f = system.velocity(x)
    if st.dt is None:
        st.dt = _initial_dt(system, x, st.f, t_target - t) if first_dt is None else first_dt
    while True:
        remaining = t_target - t
        h = min(st.dt, remaining)
        last = h >= remaining * (1 - 1e-12)
        k = [st.f]
        for i in range(1, 7):
            y = x + h * sum(a * kj for a, kj in zip(_DP_A[i], k, strict=False) if a != 0.0)
            k.append(system.velocity(y))
        x_new = y  # stage 7 is evaluated at the 5th-order solution (FSAL)
        err = h * sum(e * kj for e, kj in zip(_DP_E, k, strict=True) if e != 0.0)
        en = _error_norm(system, err)
        if not np.isfinite(en):
            en = np.inf
        if en <= 1.0:
            fac = 5.0 if en == 0 else min(5.0, max(0.2, 0.9 * en ** -0.2))
            # a step shortened to land on t_target says little about the proposed one
            st.dt = max(st.dt, h * fac) if (last and h < st.dt) else h * fac
            if system.projects:
                x_new = system.project(x_new)
                st.f = system.velocity(x_new)
            else:
                st.f = k[6]
            st.last_dt = h
            return x_new, (t_target if last else t + h)
        st.rejected += 1
        st.dt = h * max(0.2, 0.9 * en ** -0.2)
        if st.dt < 1e-14 * max(1.0, abs(t)):
            raise SolverError(f"adaptive step underflow at t = {t:.6g} (dt = {st.dt:.3e}): "
                              "non-finite or too stiff velocities")


def advance_ode(system, x: np.ndarray, t: float, t_target: float, stats: StepStats, *,
                integrator: str, dt: float, first_dt: float | None = None,
                deadline: float | None = None,
                max_steps: int | None = None) -> tuple[np.ndarray, float]:
    """Integrate a particle system from (t, x) to exactly ``t_target``.

    Fixed steps of ``dt`` (the last one shortened to land on the target, no sliver below
    1e-9 dt) or, for ``adaptive``, Dormand-Prince 5(4) steps starting from ``first_dt`` (or
    the Hairer-Norsett-Wanner rule). ``system.max_steps`` is a safety limit (SolverError);
    ``deadline`` or ``max_steps`` stop early (returned t < target). Raises SolverError on
    non-finite positions.
    """
    while t < t_target:
        if expired(deadline):
            break
        if max_steps is not None and stats.steps >= max_steps:
            break
        if system.max_steps is not None and stats.steps >= system.max_steps:
            raise SolverError(f"max_steps = {system.max_steps} reached at t = {t:.6g}")
        if integrator == "adaptive":
            x, t = _dopri5_step(system, x, t, t_target, stats, first_dt)
        else:
            remaining = t_target - t
            h = dt
            if h >= remaining * (1 - 1e-9):  # land exactly, no sliver step
                h, t_new = remaining, t_target
            else:
                t_new = t + h
            x = ode_step(system, x, h, integrator)
            stats.last_dt = h
            t = t_new
        stats.steps += 1
        if not np.all(np.isfinite(x)):
            raise SolverError(f"non-finite positions at t = {t:.6g}, step {stats.steps} "
                              f"(dt = {stats.last_dt:.3e}){system.nonfinite_hint}")
    return x, t


# ----------------------------------------------------------------------------- output loop
def output_times(times, t_end: float) -> tuple[float, np.ndarray]:
    """Validated (t_end, sorted unique output times in [0, t_end]; default 0 and t_end)."""
    from meanfield.theory.checks import check_positive
    from meanfield.theory.errors import InputError

    t_end = check_positive(t_end, "t_end", inclusive=True)
    out = np.unique(np.asarray([0.0, t_end] if times is None else times, float))
    if out.size == 0 or not np.all(np.isfinite(out)) or out[0] < 0 \
            or out[-1] > t_end * (1 + 1e-12):
        raise InputError("times", f"must be a non-empty list in [0, t_end = {t_end:g}]")
    return t_end, out


@dataclass(frozen=True)
class Target:
    """One output: advance to ``time`` (or until ``steps`` steps were taken in total)."""

    time: float
    steps: int | None = None
    snapshot: bool = True


@dataclass
class March:
    """How :func:`march` ended: ``complete``, ``stopped`` (a handler asked) or
    ``interrupted`` (the wall-clock deadline passed before a target was reached)."""

    state: object
    t: float
    index: int
    status: str
    message: str = ""


def march(system, state, t: float, stats: StepStats,
          targets: Callable[[int, float], Target | None], handler: Callable, *,
          index: int = 0, deadline: float | None = None) -> March:
    """The one output loop.

    ``targets(index, t)`` gives the next :class:`Target` (None: done). For each, the system
    advances (``system.advance(state, t, time, stats, deadline, steps)``), its diagnostics
    are computed (``system.diagnostics(state, stats)``) and ``handler(index, t, state,
    diagnostics, target)`` is called; a handler that returns a string stops the loop with
    that message (e.g. a stop rule). A deadline that passes before a target is reached
    interrupts (the state is then consistent at the last output or mid-interval).
    """
    while True:
        target = targets(index, t)
        if target is None:
            return March(state, t, index, "complete")
        if index > 0 and expired(deadline):
            return March(state, t, index, "interrupted")
        state, t = system.advance(state, t, target.time, stats, deadline, target.steps)
        reached = t >= target.time or (target.steps is not None
                                        and stats.steps >= target.steps)
        if not reached:
            return March(state, t, index, "interrupted")
        diag = system.diagnostics(state, stats)
        message = handler(index, t, state, diag, target)
        index += 1
        if message is not None:
            return March(state, t, index, "stopped", message)


def step_targets(times, snapshots=None, step_size: float | None = None) -> list[Target]:
    """Targets for sorted output ``times`` (the last one is t_end).

    Adaptive stepping lands on every time exactly. With a fixed ``step_size`` dt the step is
    honoured: a record is taken at the step t = n dt nearest to each scheduled time (records
    falling on the same step are merged, a snapshot wins), and only t_end is landed on by a
    shorter last step, when it is not a multiple of dt. So the steps, and the solution, do not
    depend on how often one records.
    """
    t = np.asarray(times, dtype=float)
    snap = np.ones(t.size, bool) if snapshots is None else np.asarray(snapshots, bool)
    if step_size is None:
        return [Target(float(ti), None, bool(si)) for ti, si in zip(t, snap, strict=True)]
    t_end = float(t[-1])
    n = np.rint(t / step_size).astype(np.int64)
    out: list[Target] = []
    for ti, ni, si in zip(t[:-1], n[:-1], snap[:-1], strict=True):
        if ni * step_size >= t_end * (1 - 1e-12) and t_end > 0:
            continue  # at or beyond t_end: the final record takes it
        if out and out[-1].steps == ni:
            if si and not out[-1].snapshot:
                out[-1] = Target(out[-1].time, int(ni), True)
            continue
        out.append(Target(t_end if ni > 0 else float(ti), int(ni), bool(si)))
    out.append(Target(t_end, None, True))
    return out


def time_targets(out_times, step_size: float | None = None
                 ) -> Callable[[int, float], Target | None]:
    """``march`` targets for a list of output times (every one a snapshot); see
    :func:`step_targets` for a fixed step."""
    targets = step_targets(out_times, None, step_size)

    def next_target(index: int, _t: float) -> Target | None:
        return targets[index] if index < len(targets) else None

    return next_target


def run_outputs(system, state, out_times: np.ndarray, *, observer=None, collect=None,
                snapshot=None, progress: bool = False) -> dict:
    """In-memory run through ``out_times`` with :func:`march` (used by every ``run``).

    With a fixed step (``system.step_size``) records are taken at the steps nearest to the
    output times (:func:`step_targets`); ``times`` in the result are the times reached.
    Returns the snapshots (``snapshot(state)``, default a copy), stacked diagnostics, the
    extra per-output values of ``collect(state)``, the step statistics and the wall time;
    ``observer(t, snapshot, diag)`` is called at each output; ``progress`` shows a tqdm bar
    over model time on stderr (for long runs in scripts and notebooks).
    """
    stats = StepStats()
    snaps, diags, extra, reached = [], [], [], []
    start = _time.perf_counter()
    take = snapshot if snapshot is not None else (lambda s: np.array(s, copy=True))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=float(out_times[-1]), unit="t", leave=True,
                   bar_format="{l_bar}{bar}| t={n:.4g}/{total:.4g} [{elapsed}<{remaining}]")

    def handler(_i, t, s, diag, _target):
        reached.append(t)
        if bar is not None:
            bar.update(t - bar.n)
        snap = take(s)
        snaps.append(snap)
        diags.append(diag)
        if collect is not None:
            extra.append(collect(s))
        if observer is not None:
            observer(t, snap, diag)

    try:
        march(system, state, 0.0, stats,
              time_targets(out_times, getattr(system, "step_size", None)), handler)
    finally:
        if bar is not None:
            bar.close()
    return {"snapshots": np.array(snaps), "times": np.array(reached),
            "diagnostics": {k: np.array([d[k] for d in diags]) for k in diags[0]},
            "extra": extra, "stats": stats, "wall_seconds": _time.perf_counter() - start}
