"""Behaviour shared by the density schemes (circle, zonal, sphere)."""

from __future__ import annotations

import math

import numpy as np


class DensityScheme:
    """Mixin: schemes whose state is the deviation q = p - pbar from the uniform density.

    A subclass provides ``check_density``, ``split`` (sets pbar, returns q), ``diagnostics(q)``
    and ``background`` (and ``set_background`` when pbar fixes other quantities), plus
    ``growth_rates`` (per degree, of the discrete linearisation; None when the velocity
    field has no linear theory) and ``accuracy``.
    """

    growth_rates: np.ndarray | None = None

    @property
    def gamma_max(self) -> float | None:
        """Largest linear growth rate (None without a linear theory)."""
        if self.growth_rates is None:
            return None
        return float(self.growth_rates[1:].max())

    @property
    def k_max(self) -> int | None:
        """Most unstable degree of the discrete linearisation (the theory's k_max)."""
        if self.growth_rates is None:
            return None
        return int(np.argmax(self.growth_rates[1:]) + 1)

    @property
    def accuracy_dt(self) -> float:
        """dt <= accuracy / gamma_max, so the linear phase is resolved (docs/conventions.md);
        no limit without a linear theory or an unstable mode."""
        g = self.gamma_max
        return self.accuracy / g if g is not None and g > 0 else math.inf

    def default_modes(self) -> int:
        """Degrees recorded by ``diagnostics``: max(16, 4 k_max) (beyond that a cluster's
        spectrum is flat and an arg max would pick noise), capped by the grid."""
        k = self.k_max or 4
        return int(min(self.max_degree, max(16, 4 * k)))

    def diagnose(self, p, modes: int | None = None) -> dict:
        """Diagnostics of a density ``p`` given directly (a notebook convenience).

        Same quantities as ``diagnostics``, which takes the solver's internal deviation
        state; the solver's own background is left as it was.
        """
        saved = self.background
        try:
            return self.diagnostics(self.split(self.check_density(p)), modes)
        finally:
            self.set_background(saved)


class InMemory:
    """A density scheme seen by ``solvers.stepping.march``: its diagnostics plus the last dt
    (what ``run`` methods collect in memory)."""

    def __init__(self, scheme, modes: int | None) -> None:
        self.scheme, self.modes = scheme, modes
        self.advance = scheme.advance
        self.step_size = scheme.step_size

    def diagnostics(self, q, stats) -> dict:
        d = self.scheme.diagnostics(q, self.modes)
        d["dt"] = stats.last_dt
        return d
