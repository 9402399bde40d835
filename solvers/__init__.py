"""Layer 2, numerics: drifts, flux schemes, spectral and zonal schemes, particles, stepping.

Schemes know nothing of files, configs or the CLI; they import only ``meanfield.theory``.
Contracts: :mod:`solvers.contracts`; time stepping: :mod:`solvers.stepping`.
"""

from solvers.stepping import INTEGRATORS, CFLWarning, SolverError

__all__ = ["INTEGRATORS", "CFLWarning", "SolverError"]
