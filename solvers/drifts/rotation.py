"""A rigid rotation v(theta) = omega: the transport test case with an exact solution.

p(t, theta) = p0(theta - omega t). It exercises a flux scheme with a velocity that is not a
convolution (no linear theory, no interaction energy) and is the smallest example of the
drift contract (:class:`solvers.contracts.Drift`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from meanfield.theory.errors import InputError


class RigidRotation:
    """Rigid rotation v = omega, the same at every point for every measure (transport test)"""

    name = "rotation"
    PARAMETERS: ClassVar[dict[str, tuple[Any, str]]] = {
        "omega": (1.0, "angular velocity of the rigid rotation (rad per time)")}
    linear_rates = None

    def __init__(self, omega: float = 1.0) -> None:
        if not math.isfinite(float(omega)):
            raise InputError("omega", "must be a finite number", omega)
        self.omega = float(omega)

    def bind(self, grid) -> None:
        self._v = np.full(grid.cells, self.omega)

    def set_background(self, pbar: float) -> None:
        self.background = float(pbar)

    def face_velocity(self, q: np.ndarray) -> np.ndarray:
        return self._v.copy()

    def centre_velocity(self, q: np.ndarray) -> np.ndarray:
        return self._v.copy()

    def set_atoms(self, positions: np.ndarray, masses: np.ndarray) -> None:
        self._n_atoms = np.asarray(masses).size

    def atom_velocity(self, q: np.ndarray) -> np.ndarray:
        return np.full(self._n_atoms, self.omega)

    def energy(self, q: np.ndarray) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"drift": self.name, "drift.omega": self.omega,
                "velocity": f"v(theta) = omega = {self.omega:g} (rigid rotation)"}
