"""The interaction energy E and its normalisation Ebar, in one place for every solver.

    E[mu] = (1/(2 beta)) iint e^{beta <x,y>} dmu dmu,      Ebar = 2 beta e^{-beta} E in (0, 1]

(Ebar = 1 for a single cluster). Solvers evaluate the overflow-free scaled energy
E_s = (1/(2 beta)) iint e^{beta(<x,y> - 1)} dmu dmu (the kernel of the ``scaled`` time unit),
or its logarithm, and this module turns it into E in the run's time unit and Ebar:

* ``raw`` USA and SA:   E = e^{beta} E_s (inf where that exceeds float64, beta > ~709);
* ``scaled`` USA:       E = E_s (time and energy both rescaled by e^{-beta});
* Ebar = 2 beta E_s in every unit;
* beta = 0 (W(t) = t, constant dropped): E = (1/2) |integral x dmu|^2 is passed as E_s and
  Ebar := 2 E;
* beta = NaN (a user kernel, no exponential normalisation): E = E_s, Ebar = NaN.
"""

from __future__ import annotations

import math

import numpy as np


def energy_from_log(log_e_scaled, beta: float, model: str = "usa", time_unit: str = "raw"):
    """(E, Ebar) from log E_s (float or array); see the module docstring."""
    log_e = np.asarray(log_e_scaled, dtype=float)
    with np.errstate(over="ignore"):
        if math.isnan(beta):
            out = np.exp(log_e), np.full_like(log_e, np.nan)
        elif beta == 0:
            e = np.exp(log_e)
            out = e, 2.0 * e
        else:
            raw = model == "sa" or time_unit == "raw"
            energy = np.exp(log_e + beta) if raw else np.exp(log_e)
            out = energy, np.exp(log_e + math.log(2.0 * beta))
    if np.ndim(log_e_scaled) == 0:
        return float(out[0]), float(out[1])
    return out


def energy_from_scaled(e_scaled, beta: float, model: str = "usa", time_unit: str = "raw"):
    """(E, Ebar) from E_s (float or array); see the module docstring."""
    e = np.asarray(e_scaled, dtype=float)
    if math.isnan(beta):  # a user kernel: E_s may be any sign, there is no Ebar
        out = e, np.full_like(e, np.nan)
    elif beta == 0:
        out = e, 2.0 * e
    else:
        raw = model == "sa" or time_unit == "raw"
        if raw:
            with np.errstate(over="ignore", divide="ignore"):
                energy = np.exp(np.log(e) + beta)
        else:
            energy = e
        out = energy, 2.0 * beta * e
    if np.ndim(e_scaled) == 0:
        return float(out[0]), float(out[1])
    return out
