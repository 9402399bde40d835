"""Behaviour shared by the density schemes (circle, zonal, sphere)."""

from __future__ import annotations


class DensityScheme:
    """Mixin: schemes whose state is the deviation q = p - pbar from the uniform density.

    A subclass provides ``check_density``, ``split`` (sets pbar, returns q), ``diagnostics(q)``
    and ``background`` (and ``set_background`` when pbar fixes other quantities).
    """

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
