"""meanfield: mean-field dynamics of self-attention on the circle and the sphere.

The package has three layers, one folder each (imports point down only):

1. ``meanfield.theory``  kernels, Funk-Hecke coefficients, growth rates, k_max, attention
   matrices, reference laws (no grids, no files);
2. ``solvers``           drifts, flux schemes, spectral and zonal schemes, particles, stepping;
3. the workflow          ``meanfield.domains``, ``meanfield.io``, ``meanfield.analysis``, the
   driver, sweeps, plots and the CLI.

This facade re-exports the theory; the workflow is imported lazily (``meanfield.open``).
Conventions: docs/conventions.md.
"""

from meanfield._version import __version__
from meanfield.theory import (
    AttentionMatrices,
    CallableKernel,
    ExponentialKernel,
    InputError,
    Kernel,
    attention_matrices,
    circle_coefficients,
    exit_time,
    exponential_kernel,
    funk_hecke,
    funk_hecke_quadrature,
    growth_rate,
    harmonic_multiplicity,
    kmax_asymptotic,
    kmax_transitions,
    log_growth_rate,
    mode_selection,
    most_unstable_mode,
    sphere_area,
    two_cluster_merge_time,
    two_cluster_rate,
    uniform_density,
)


def open(path):
    """Open a run file: ``with meanfield.open("data/run.h5") as run: ...`` (see io.reader.Run)."""
    from meanfield.io.reader import open_run

    return open_run(path)


__all__ = [
    "AttentionMatrices",
    "CallableKernel",
    "ExponentialKernel",
    "InputError",
    "Kernel",
    "__version__",
    "attention_matrices",
    "circle_coefficients",
    "exit_time",
    "exponential_kernel",
    "funk_hecke",
    "funk_hecke_quadrature",
    "growth_rate",
    "harmonic_multiplicity",
    "kmax_asymptotic",
    "kmax_transitions",
    "log_growth_rate",
    "mode_selection",
    "most_unstable_mode",
    "open",
    "sphere_area",
    "two_cluster_merge_time",
    "two_cluster_rate",
    "uniform_density",
]
