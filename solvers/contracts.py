"""Written contracts of the numerics layer (in the style of ``scipy.integrate.OdeSolver``).

A *drift* computes the velocity of a measure; a *scheme* transports a density with any drift.
They meet only through the methods below, so a new velocity field is one module in
``solvers/drifts/`` plus one line in its registry, and a new flux scheme one class plus one
line in ``solvers.circle.SCHEMES``. Neither knows anything of files, configs or the CLI.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Drift(Protocol):
    """A velocity field v[mu] on a grid (the circle's M uniform cells; see ``CircleGrid``).

    1. ``name`` (class attribute) is the registry key; ``PARAMETERS`` (class attribute) maps
       each constructor keyword to ``(default, one-line doc)``, so callers can list them.
    2. ``bind(grid)`` is called once by the scheme before anything else: precompute plans,
       kernel multipliers and matrices there, never per step.
    3. ``set_background(pbar)`` gives the uniform part of the state: schemes store the
       deviation q = p - pbar (full precision for tiny perturbations), and every method
       below receives q and means the measure with density pbar + q.
    4. ``face_velocity(q)`` returns v at the M faces j + 1/2 (length M, periodic: face j is
       between cells j and j + 1); ``centre_velocity(q)`` v at the cell centres. Both are in
       the run's time unit.
    5. ``linear_rates`` is the array of growth rates of Fourier mode k = 0..M/2 of the
       linearisation about the uniform state, or None when the drift has no such theory.
       Schemes then limit the step by accuracy / max rate (the linear phase is resolved).
    6. ``energy(q)`` returns (E, Ebar) of the measure in the run's time unit
       (``meanfield.theory.energy``), or None when the drift is not a gradient flow of an
       interaction energy (diagnostics then record NaN).
    7. ``describe()`` returns a flat dict (str -> str/float/int) of what defines the drift,
       recorded by the workflow in every output file.
    """

    name: str
    PARAMETERS: dict[str, tuple[Any, str]]
    linear_rates: np.ndarray | None

    def bind(self, grid) -> None: ...

    def set_background(self, pbar: float) -> None: ...

    def face_velocity(self, q: np.ndarray) -> np.ndarray: ...

    def centre_velocity(self, q: np.ndarray) -> np.ndarray: ...

    def energy(self, q: np.ndarray) -> tuple[float, float] | None: ...

    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class Scheme(Protocol):
    """A grid scheme that transports a density (circle fv2/rusanov/lf, zonal fv, sphere
    spectral). ``solvers.stepping.advance`` drives it.

    1. Construction takes the grid size, the drift (or the parameters of the default
       convolution drift) and the numerical parameters: ``cfl``, ``dt`` (fixed, or None for
       adaptive), ``accuracy``, ``integrator`` (a ``grid`` entry of
       ``solvers.stepping.INTEGRATORS``).
    2. ``check_density(p)`` validates a user density (InputError), ``split(p)`` sets the
       background and returns the internal state q, ``join(q)`` returns the density.
    3. ``rhs(q)`` is dq/dt and records the largest speed; ``stable_dt()`` is the
       positivity/CFL bound of the last ``rhs`` state; ``accuracy_dt`` the accuracy limit;
       ``euler_update(q, dt, k)`` one forward-Euler stage; ``min_density(q)`` and
       ``reference_density`` the positivity check.
    4. ``advance(q, t, t_target, stats, deadline, max_steps)`` steps to exactly t_target
       (earlier only for the deadline or max_steps) and raises ``SolverError`` on a negative
       or non-finite density naming t and the step.
    5. ``diagnostics(q, modes)`` returns a dict with at least ``mass``, ``min_density``,
       ``max_density``, ``energy``, ``ebar``, ``max_speed``, ``spectrum`` (the L2 amplitude
       of each degree, docs/conventions.md) and ``dominant_mode``.
    6. ``run(p0, t_end, times)`` integrates in memory through ``solvers.stepping.march``.
    """

    cfl: float
    reference_density: float

    def check_density(self, p0) -> np.ndarray: ...

    def split(self, p: np.ndarray) -> np.ndarray: ...

    def join(self, q: np.ndarray) -> np.ndarray: ...

    def rhs(self, q: np.ndarray) -> np.ndarray: ...

    def stable_dt(self) -> float: ...

    def advance(self, q, t: float, t_target: float, stats=None, deadline=None,
                max_steps=None): ...

    def diagnostics(self, q: np.ndarray, modes: int | None = None) -> dict: ...
