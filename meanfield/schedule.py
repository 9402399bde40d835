"""When a run records: the output schedule of ``[time]`` as targets for the stepping loop.

Linear or log-spaced snapshots (``n_outputs``, t = 0 included), each interval subdivided into
``diagnostics_per_output`` diagnostic records, or a snapshot every ``every_steps`` steps.
With ``t_end_units = "e_folds"`` times are in units of 1/gamma_max.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from meanfield.theory.errors import InputError
from solvers.stepping import Target, step_targets


def time_scale(cfg: dict, gamma_max: float | None) -> float:
    """Multiplier from config times to model time: 1, or 1/gamma_max for e_folds."""
    if cfg["time"]["t_end_units"] != "e_folds":
        return 1.0
    if gamma_max is None or not gamma_max > 0:
        raise InputError("time.t_end_units", "'e_folds' needs the linear growth rate "
                         "gamma_max, which this run's velocity field does not have: use "
                         "time.t_end_units = 'time'")
    return 1.0 / gamma_max


def output_schedule(cfg: dict, gamma_max: float | None = 1.0
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """(diagnostic times, snapshot mask) for linear/log schedules; None for 'steps'."""
    t = cfg["time"]
    if t["schedule"] == "steps":
        return None
    scale = time_scale(cfg, gamma_max)
    t_end, n = t["t_end"] * scale, t["n_outputs"]
    if t["schedule"] == "linear":
        snaps = np.linspace(0.0, t_end, n)
    else:
        first = t["t_first"] * scale or t_end / 1000.0
        snaps = np.concatenate([[0.0], np.geomspace(first, t_end, n - 1)])
    sub = t["diagnostics_per_output"]
    times = [snaps[0]]
    mask = [True]
    for a, b in itertools.pairwise(snaps):
        # log schedules subdivide geometrically (except the first interval from 0)
        if t["schedule"] == "log" and a > 0:
            inner = np.geomspace(a, b, sub + 1)[1:]
        else:
            inner = np.linspace(a, b, sub + 1)[1:]
        inner[-1] = b
        times.extend(inner)
        mask.extend([False] * (sub - 1) + [True])
    return np.asarray(times), np.asarray(mask)


@dataclass(frozen=True)
class Plan:
    """The run's outputs: t_end (model time), ``next(index, t)`` for
    ``solvers.stepping.march``, and how many records and snapshots a time schedule plans
    (None for step schedules, which end when t_end is reached)."""

    t_end: float
    next: Callable[[int, float], Target | None]
    records: int | None
    snapshots: int | None


def targets(cfg: dict, gamma_max: float | None, step_size: float | None = None) -> Plan:
    """The :class:`Plan` of ``[time]`` for a run with linear rate ``gamma_max``.

    With a fixed ``step_size`` the records are taken at the steps nearest to the scheduled
    times and only t_end may need a shorter last step (``solvers.stepping.step_targets``):
    the step is the one configured, however often the run records.
    """
    tcfg = cfg["time"]
    t_end = tcfg["t_end"] * time_scale(cfg, gamma_max)
    schedule = output_schedule(cfg, gamma_max)
    if schedule is not None:
        planned = step_targets(*schedule, step_size)

        def by_time(index: int, _t: float) -> Target | None:
            return planned[index] if index < len(planned) else None

        return Plan(t_end, by_time, len(planned), sum(p.snapshot for p in planned))
    every = tcfg["every_steps"]
    sub = max(1, every // tcfg["diagnostics_per_output"])
    per_snapshot = every // sub

    def by_steps(index: int, t: float) -> Target | None:
        if index > 0 and t >= t_end:
            return None
        # record 0 is the initial state; record i stops after i * sub steps (or at t_end)
        return Target(t_end if index else t, index * sub if index else None,
                      index % per_snapshot == 0)

    return Plan(t_end, by_steps, None, None)
