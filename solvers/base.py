"""Behaviour shared by the density schemes (circle, zonal, sphere)."""

from __future__ import annotations

import math

import numpy as np


class DensityScheme:
    """Mixin: schemes whose state is the deviation q = p - pbar from the uniform density.

    A subclass provides ``check_density``, ``split`` (sets pbar, returns q), ``diagnostics(q)``
    and ``background`` (and ``set_background`` when pbar fixes other quantities), plus
    ``growth_rates`` (per degree, of the discrete linearisation), ``gamma_max``, ``accuracy``.
    """

    @property
    def k_max(self) -> int:
        """Most unstable degree of the discrete linearisation (the theory's k_max)."""
        return int(np.argmax(self.growth_rates[1:]) + 1)

    @property
    def accuracy_dt(self) -> float:
        """dt <= accuracy / gamma_max, so the linear phase is resolved (DESIGN.md sec. 2)."""
        return self.accuracy / self.gamma_max if self.gamma_max > 0 else math.inf

    def diagnose(self, p, modes: int | None = None) -> dict:
        """Diagnostics of a density ``p`` given directly (a notebook convenience).

        Same quantities as ``diagnostics``, which takes the solver's internal deviation
        state; the solver's own background is left as it was.
        """
        saved = self.background
        try:
            return self.diagnostics(self.split(self.check_density(p)), modes)
        finally:
            if hasattr(self, "set_background"):
                self.set_background(saved)
            else:
                self.background = saved
