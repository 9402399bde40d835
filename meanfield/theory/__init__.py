"""Layer 1, theory: kernels and their Funk-Hecke coefficients, growth rates, k_max and time
scales, attention matrices, geometry of S^{d-1} and the papers' reference laws.

No grids, no files: this layer imports nothing from ``solvers`` or the workflow.
"""

from meanfield.theory.attention import QKV_ENSEMBLES, AttentionMatrices, attention_matrices
from meanfield.theory.energy import energy_from_log, energy_from_scaled
from meanfield.theory.errors import InputError
from meanfield.theory.funk_hecke import circle_coefficients, funk_hecke, funk_hecke_quadrature
from meanfield.theory.geometry import (
    gegenbauer_index,
    harmonic_multiplicity,
    log_sphere_area,
    sphere_area,
    uniform_density,
    zonal_harmonics,
)
from meanfield.theory.growth import (
    ModeSelection,
    exit_time,
    growth_rate,
    kmax_asymptotic,
    kmax_transitions,
    log_growth_rate,
    mode_selection,
    most_unstable_mode,
)
from meanfield.theory.kernels import CallableKernel, ExponentialKernel, Kernel, exponential_kernel
from meanfield.theory.reference import (
    causal_first_token,
    orthogonal_curve,
    orthogonal_curve_rate,
    two_cluster_gap,
    two_cluster_merge_time,
    two_cluster_rate,
)

__all__ = [
    "QKV_ENSEMBLES", "AttentionMatrices", "CallableKernel", "ExponentialKernel", "InputError",
    "Kernel", "ModeSelection", "attention_matrices", "causal_first_token", "circle_coefficients",
    "energy_from_log", "energy_from_scaled", "exit_time", "exponential_kernel", "funk_hecke",
    "funk_hecke_quadrature", "gegenbauer_index", "growth_rate", "harmonic_multiplicity",
    "kmax_asymptotic", "kmax_transitions", "log_growth_rate", "log_sphere_area",
    "mode_selection", "most_unstable_mode", "orthogonal_curve", "orthogonal_curve_rate",
    "sphere_area", "two_cluster_gap", "two_cluster_merge_time", "two_cluster_rate",
    "uniform_density", "zonal_harmonics",
]
