"""Token (particle) dynamics of self-attention on S^{d-1}: N interacting particles.

Modules, one job each:

* :mod:`.system`          ``ParticleSystem`` (the dynamics, energy, diagnostics, ``run``) and
                          ``ParticleResult``; time stepping is ``solvers.stepping``;
* :mod:`.representation`  ``Angles`` (circle, identity QKV) and ``Vectors`` (S^{d-1}): what
                          depends on how the state is stored;
* :mod:`.summation`       the pairwise sums: Fourier-Bessel O(N K) on the circle, tiled O(N^2)
                          with online log-sum-exp otherwise;
* :mod:`.measures`        Fourier coefficients, harmonic power and spectrum, histogram total
                          variation, exact circle W_1;
* :mod:`.sampling`        uniform and density sampling, input checks.

Token clusters are in :mod:`solvers.clusters`; attention matrices in
:mod:`meanfield.theory.attention`.
"""

from meanfield.theory.attention import QKV_ENSEMBLES, AttentionMatrices, attention_matrices
from solvers.clusters import Clusters, detect_clusters
from solvers.particles.measures import (
    circle_w1,
    fourier_coefficients,
    harmonic_power,
    histogram_tv,
    spectrum,
)
from solvers.particles.representation import Angles, Representation, Vectors
from solvers.particles.sampling import (
    REPRESENTATIONS,
    quantile_circle_density,
    sample_circle_density,
    uniform_sample,
    vmf_mixture,
)
from solvers.particles.summation import FOURIER_CUTOFF, SUMMATIONS
from solvers.particles.system import (
    MASKS,
    NORMALIZATIONS,
    PARTICLE_INTEGRATORS,
    ParticleResult,
    ParticleSystem,
)

__all__ = [
    "FOURIER_CUTOFF", "MASKS", "NORMALIZATIONS", "PARTICLE_INTEGRATORS", "QKV_ENSEMBLES",
    "REPRESENTATIONS", "SUMMATIONS", "Angles", "AttentionMatrices", "Clusters",
    "ParticleResult", "ParticleSystem", "Representation", "Vectors", "attention_matrices",
    "circle_w1", "detect_clusters", "fourier_coefficients", "harmonic_power", "histogram_tv",
    "quantile_circle_density", "sample_circle_density", "spectrum", "uniform_sample", "vmf_mixture",
]
