"""Velocity fields (drifts) on the circle grid: the registry and its contract.

A drift computes the velocity of the measure pbar + q on a ``CircleGrid``; any flux scheme of
``solvers.circle`` transports with it (contract: :class:`solvers.contracts.Drift`). A new
drift is one module here plus one line in ``DRIFTS``.
"""

from __future__ import annotations

from typing import Any

from meanfield.theory.errors import InputError
from solvers.drifts.attention import GeneralAttention
from solvers.drifts.convolution import Convolution
from solvers.drifts.rotation import RigidRotation

#: The registry of drifts on the circle (name -> class).
DRIFTS: dict[str, type] = {
    "convolution": Convolution,
    "rotation": RigidRotation,
    "attention": GeneralAttention,
}


def make_drift(name: str, **params: Any):
    """Build a registered drift by name with its keyword parameters."""
    if name not in DRIFTS:
        raise InputError("drift", f"must be one of {', '.join(DRIFTS)}", name)
    return DRIFTS[name](**params)


__all__ = ["DRIFTS", "Convolution", "GeneralAttention", "RigidRotation", "make_drift"]
