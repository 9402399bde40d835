"""meanfield: mean-field dynamics of self-attention on the circle and the sphere.

Layer 1 (model and theory) lives in this package: kernels, Funk-Hecke coefficients,
growth rates and k_max. The workflow layer (runs, files, analysis, CLI) is imported lazily
so that ``solvers`` can depend on layer 1 without a cycle.
"""

from meanfield._version import __version__
from meanfield.coefficients import circle_multipliers, funk_hecke, funk_hecke_quadrature
from meanfield.errors import InputError
from meanfield.geometry import harmonic_multiplicity, sphere_area, uniform_density
from meanfield.growth import (
    exit_time,
    growth_rate,
    kmax_asymptotic,
    kmax_transitions,
    log_growth_rate,
    mode_selection,
    most_unstable_mode,
)
from meanfield.kernels import CallableKernel, ExponentialKernel, Kernel, exponential_kernel


def open(path):
    """Open a run file: ``with meanfield.open("data/run.h5") as run: ...`` (see reader.Run)."""
    from meanfield.reader import open_run

    return open_run(path)


__all__ = [
    "CallableKernel",
    "ExponentialKernel",
    "InputError",
    "Kernel",
    "__version__",
    "circle_multipliers",
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
    "uniform_density",
]
