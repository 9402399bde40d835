"""Numerical schemes (layer 2). Schemes know nothing of files, configs or the CLI."""

from solvers import circle, particles, sphere, zonal
from solvers.integrators import CFLWarning, SolverError

__all__ = ["CFLWarning", "SolverError", "circle", "particles", "sphere", "zonal"]
