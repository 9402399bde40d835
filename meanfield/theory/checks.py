"""Validation of scalar parameters shared by the theory, the solvers and the workflow."""

from __future__ import annotations

import math

import numpy as np

from meanfield.theory.errors import InputError

MODELS = ("usa", "sa")
TIME_UNITS = ("raw", "scaled")


def check_beta(beta, name: str = "beta") -> np.ndarray | float:
    """Return beta as float (or float array) after checking finite and >= 0."""
    arr = np.asarray(beta, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise InputError(name, "must be a finite number >= 0", _show(beta))
    return float(arr) if arr.ndim == 0 else arr


def check_dim(dim, name: str = "dim") -> int:
    if isinstance(dim, bool) or not float(dim).is_integer() or int(dim) < 2:
        raise InputError(name, "must be an integer >= 2 (S^{d-1} with d >= 2)", _show(dim))
    return int(dim)


def check_model(model: str, name: str = "model") -> str:
    if model not in MODELS:
        raise InputError(name, f"must be one of {', '.join(MODELS)}", model)
    return model


def check_time_unit(time_unit: str, model: str = "usa", name: str = "time_unit") -> str:
    if time_unit not in TIME_UNITS:
        raise InputError(name, f"must be one of {', '.join(TIME_UNITS)}", time_unit)
    if time_unit == "scaled" and model != "usa":
        raise InputError(
            name, "'scaled' applies to model 'usa' only (the SA velocity is already scale-free)"
        )
    return time_unit


def check_positive(value, name: str, *, integer: bool = False, minimum: float = 0.0,
                   inclusive: bool = False):
    """Finite number > minimum (>= with inclusive); integer-valued when asked."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(name, "must be a number", _show(value)) from None
    ok = math.isfinite(v) and (v >= minimum if inclusive else v > minimum)
    if integer and ok:
        ok = v.is_integer() and not isinstance(value, bool)
    if not ok:
        kind = "an integer" if integer else "a finite number"
        rel = ">=" if inclusive else ">"
        raise InputError(name, f"must be {kind} {rel} {minimum:g}", _show(value))
    return int(v) if integer else v


def _show(value):
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 5 else f"array of shape {value.shape}"
    return value
