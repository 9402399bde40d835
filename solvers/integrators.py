"""Explicit time integrators shared by every scheme, with adaptive or fixed steps.

A scheme provides ``min_density(p)``, ``rhs(p)`` (which also records the largest speed it
saw), ``stable_dt()`` (the positivity/CFL bound for the state of the last ``rhs`` call),
``accuracy_dt`` (a limit from the linear growth rate, dt <= c / gamma_max), ``cfl``,
``reference_density`` and ``euler_update(p, dt, k)`` (``p + dt k`` except for
Lax-Friedrichs, whose averaging is not a right-hand side).
"""

from __future__ import annotations

import math
import time as _time
import warnings
from dataclasses import dataclass

import numpy as np

INTEGRATORS = ("ssprk3", "euler")


class SolverError(RuntimeError):
    """The discrete solution became unphysical (negative or non-finite density)."""


class CFLWarning(UserWarning):
    """A fixed time step exceeds the scheme's stability/positivity bound."""


@dataclass
class StepStats:
    steps: int = 0
    last_dt: float = 0.0
    max_courant: float = 0.0
    cfl_violations: int = 0
    #: low-order bits lost when adding increments to the state (Kahan summation)
    compensation: np.ndarray | None = None


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
    """Integrate from (t, p) to exactly t = ``t_target``.

    The adaptive step is min(cfl * stable_dt, accuracy_dt); a fixed step is used as given
    (a CFL violation warns once per ``stats`` and is counted). Steps are shortened so that
    ``t_target`` is hit exactly, and split evenly instead of leaving a sliver. Raises
    :class:`SolverError` if the density turns negative or non-finite, naming t and the step.
    ``deadline`` (time.monotonic) or ``max_steps`` stop early: the returned t is then < target.
    """
    stats = stats if stats is not None else StepStats()
    floor = -1e-12 * scheme.reference_density
    while t < t_target:
        if deadline is not None and _time.monotonic() > deadline:
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


def output_times(times, t_end: float) -> tuple[float, np.ndarray]:
    """Validated (t_end, sorted unique output times in [0, t_end]; default 0 and t_end)."""
    from meanfield.checks import check_positive
    from meanfield.errors import InputError

    t_end = check_positive(t_end, "t_end", inclusive=True)
    out = np.unique(np.asarray([0.0, t_end] if times is None else times, float))
    if out.size == 0 or not np.all(np.isfinite(out)) or out[0] < 0 \
            or out[-1] > t_end * (1 + 1e-12):
        raise InputError("times", f"must be a non-empty list in [0, t_end = {t_end:g}]")
    return t_end, out


def run_outputs(scheme, q: np.ndarray, t_end: float, out_times: np.ndarray, *,
                observer=None, modes: int | None = None, collect=None) -> dict:
    """Drive a grid scheme (split/advance/diagnostics/join) through ``out_times``.

    Returns densities, stacked diagnostics (plus ``dt``), the extra per-output values of
    ``collect(q)``, the step statistics and the wall time; ``observer(t, p, diag)`` is
    called at each output. Shared by the circle, zonal and sphere ``run`` methods.
    """
    stats = StepStats()
    t = 0.0
    dens, diags, extra = [], [], []
    start = _time.perf_counter()
    for target in out_times:
        q, t = scheme.advance(q, t, float(target), stats)
        d = scheme.diagnostics(q, modes)
        d["dt"] = stats.last_dt
        p = scheme.join(q)
        dens.append(p.copy())
        diags.append(d)
        if collect is not None:
            extra.append(collect(q))
        if observer is not None:
            observer(t, p, d)
    if t < t_end:
        q, t = scheme.advance(q, t, t_end, stats)
    return {"density": np.array(dens),
            "diagnostics": {k: np.array([d[k] for d in diags]) for k in diags[0]},
            "extra": extra, "stats": stats, "wall_seconds": _time.perf_counter() - start}
