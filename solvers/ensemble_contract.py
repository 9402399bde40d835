"""The contract of batched steppers (ensembles) and the one loop that drives members through
it. ``solvers.ensemble.CircleEnsemble``, ``solvers.zonal_ensemble.ZonalEnsemble`` and
``solvers.particles.ensemble.ParticleEnsemble`` implement ``Ensemble``;
``solvers.ensemble.ENSEMBLES`` registers them, and ``meanfield.ensemble`` drives them through
the contract alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from solvers.stepping import StepStats


@dataclass
class Member:
    """One member: its scheme (drift bound, background set), state, clock and statistics."""

    scheme: object
    q: np.ndarray
    t: float
    stats: StepStats


class Ensemble(Protocol):
    """The contract of a batched stepper; ``meanfield.ensemble`` drives any class in
    ``ENSEMBLES`` through it alone (``CircleEnsemble`` is the model):

    1. ``key(scheme)`` (classmethod): a hashable key if ``scheme`` can be a member, else None;
       members with equal keys share one ensemble.
    2. ``add(scheme) -> row``: the member's row, given once.
    3. ``load(row, state, t, stats, target, max_steps=None)``: its state, clock,
       ``StepStats``, target time and (optionally) the step count ``stats.steps`` at which
       to stop early, as the scheme's own ``advance(..., max_steps=)`` does.
    4. ``pending(rows) -> bool array``: which rows still step (t < target and steps below
       their limit).
    5. ``step(rows) -> {row: message}``: one step of each row (all pending): the step the
       member's scheme would take alone, landing exactly on the target; a row that fails
       reports the scheme's ``SolverError`` message.
    6. ``unload(row) -> (state, t)``: the member's state and clock, with its statistics (and
       any scheme-side state the ensemble kept) written back.
    """

    @classmethod
    def key(cls, scheme) -> tuple | None: ...
    def add(self, scheme) -> int: ...
    def load(self, row: int, state: np.ndarray, t: float, stats: StepStats, target: float,
             max_steps: int | None = None) -> None: ...
    def pending(self, rows: np.ndarray) -> np.ndarray: ...
    def step(self, rows: np.ndarray) -> dict[int, str]: ...
    def unload(self, row: int) -> tuple[np.ndarray, float]: ...


def advance_members(ens: Ensemble, rows: np.ndarray, members: list, targets,
                    max_steps=None) -> list[str | None]:
    """Step ``members`` (``Member``-like: scheme, q, t, stats), in rows ``rows`` of ``ens``,
    to their own targets through the contract (each stopping early at its own
    ``max_steps``: None, or one per member, None allowed); returns per member None or its
    SolverError message (that member stops, the others go on). The members' q, t and stats
    are updated."""
    rows = np.asarray(rows, np.int64)
    limits = [None] * len(members) if max_steps is None else list(max_steps)
    for r, mb, tg, lim in zip(rows.tolist(), members, targets, limits, strict=True):
        ens.load(r, mb.q, mb.t, mb.stats, float(tg), lim)
    errors: dict[int, str] = {}
    active = rows[ens.pending(rows)]
    while active.size:
        failed = ens.step(active)
        errors |= failed
        active = active[ens.pending(active) & ~np.isin(active, list(failed))]
    for r, mb in zip(rows.tolist(), members, strict=True):
        mb.q, mb.t = ens.unload(r)
    return [errors.get(r) for r in rows.tolist()]


__all__ = ["Ensemble", "Member", "advance_members"]
