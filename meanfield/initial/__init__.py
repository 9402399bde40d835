"""Initial densities: ``meanfield.initial`` (the circle, cell averages) and
``meanfield.initial.sphere`` (S^2, point values on a latitude-longitude grid).

``from meanfield import initial; initial.white_noise(1024, 0.01)`` gives circle data; zonal
data come from ``solvers.zonal.Zonal`` (``mode``, ``cell_average``).
"""

from meanfield.initial import sphere
from meanfield.initial.circle import (
    TWO_PI,
    cell_centres,
    from_particles,
    mode,
    token_noise,
    uniform,
    von_mises_bumps,
    white_noise,
)

__all__ = ["TWO_PI", "cell_centres", "from_particles", "mode", "sphere", "token_noise",
           "uniform", "von_mises_bumps", "white_noise"]
